"""Pruning settings take typed overrides like the run config: text from ``--set`` and
keywords of ``prune()`` become each field's type, and a wrong type is one clear error."""
import pytest

from sparsecircuits.circuits.prune import make_settings
from sparsecircuits.config import PruneSettings
from sparsecircuits.errors import UserError


def test_text_values_become_each_fields_type():
    s = PruneSettings().with_overrides({"lr": "3e-3", "steps": "7", "batch_pairs": "1_000", "lr_decay": "constant",
                                        "size_targets": "0.1, 1/5", "min_accuracy": 1}, source="--set")
    assert s.lr == 3e-3 and isinstance(s.lr, float)
    assert s.steps == 7 and isinstance(s.steps, int) and s.batch_pairs == 1000
    assert s.lr_decay == "constant"
    assert s.size_targets == [0.1, 0.2] and all(isinstance(v, float) for v in s.size_targets)
    assert s.min_accuracy == 1.0 and isinstance(s.min_accuracy, float)


@pytest.mark.parametrize("key, value, message", [
    ("lr", "fast", "--set: 'lr': expected a number, got 'fast'"),
    ("batch_pairs", "8.5", "--set: 'batch_pairs': expected an integer, got '8.5'"),
    ("batch_pairs", True, "--set: 'batch_pairs': expected an integer, got True"),
    ("size_targets", "0.1,big", "--set: 'size_targets': expected a number, got 'big'"),
    ("size_targets", 0.1, "--set: 'size_targets': expected a list of numbers, got 0.1"),
    ("ablation", 3, "--set: 'ablation': expected a string, got 3"),
    ("nope", "1", "--set: unknown key 'nope'"),
])
def test_a_wrong_type_or_key_is_one_clear_error(key, value, message):
    with pytest.raises(UserError) as err:
        PruneSettings().with_overrides({key: value}, source="--set")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_prune_keywords_are_converted_and_checked():
    s = make_settings(lr="1e-2", batch_pairs=8.0, size_targets=(0.3,))
    assert s.lr == 1e-2 and isinstance(s.lr, float)
    assert s.batch_pairs == 8 and isinstance(s.batch_pairs, int)
    assert s.size_targets == [0.15, 0.3]  # the target itself is always among them
    with pytest.raises(UserError, match="prune\\(\\): 'temperature': expected a number"):
        make_settings(temperature="hot")
    with pytest.raises(TypeError, match="unexpected keyword argument 'validate'"):
        make_settings(validate=1)  # a method of the settings is no setting
    with pytest.raises(UserError, match="beta2 must be in"):
        make_settings(beta2="1.5")  # converted, then validated
