"""The interchange check and the random-weights control, on hand-built models whose circuits are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from analysis_models import QUOTE_PATH, WORDS, means_for, save_learned_run
from test_faithfulness import CHEAT, HONEST, TASK, _circuit

from sparsecircuits.analysis.faithfulness import circuit_from_keep, run_checks
from sparsecircuits.analysis.faithfulness.checks.random_weights import random_weights, shuffled_weights
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.rundir import RunDir
from sparsecircuits.run import load_run
from sparsecircuits.tasks.python_tasks import get_task


def test_interchange_flips_the_honest_model(honest_run):
    means = means_for(honest_run)
    res = run_checks(honest_run, _circuit(honest_run, HONEST, means), checks=["interchange"], task=TASK, means=means,
                     progress=False)["interchange"]
    assert res["verdict"] == "pass" and res["value"] == 1.0
    assert res["data"]["n"] == 128  # 64 test pairs, both prompts, all answered right by the model
    assert res["data"]["circuit_flip_rate"] == 1.0
    # random node sets of the same composition miss the path: the model keeps its answer
    assert res["data"]["random_median"] == 0.0


def test_interchange_does_not_flip_the_cheating_model(cheat_run):
    """The cheating circuit reaches a low loss (test_faithfulness) through a path the model does
    not use: its nodes taken from the other prompt leave the model's answer as it was."""
    means = means_for(cheat_run)
    res = run_checks(cheat_run, _circuit(cheat_run, CHEAT, means), checks=["interchange"], task=TASK, means=means,
                     progress=False)["interchange"]
    assert res["verdict"] == "flag" and res["value"] == 0.0
    # the model's own path (reading channel 5) does flip it
    honest_nodes = ["blocks.0.hook_mlp_in:5", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.hook_post:1",
                    "blocks.0.hook_mlp_out:2"]
    res = run_checks(cheat_run, _circuit(cheat_run, honest_nodes, means), checks=["interchange"], task=TASK,
                     means=means, progress=False)["interchange"]
    assert res["verdict"] == "pass" and res["value"] == 1.0


def test_control_models_keep_the_shape_and_lose_the_structure(honest_run):
    model = honest_run.model
    before = torch.random.get_rng_state()
    a, b = random_weights(model, 3), random_weights(model, 3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    shuffled = shuffled_weights(model, 0)
    for (name, t), s in zip(model.state_dict().items(), shuffled.state_dict().values()):
        assert s.shape == t.shape
        assert torch.equal(s.flatten().sort().values, t.flatten().sort().values), name  # the same entries
        if t.dim() < 2:
            assert torch.equal(s, t), name  # gains and biases untouched
    assert not torch.equal(shuffled.lm_head.weight, model.lm_head.weight)


@pytest.fixture(scope="module")
def quote_run(tmp_path_factory, tiny_data_dir):
    return load_run(save_learned_run(tmp_path_factory.mktemp("quotes") / "run", tiny_data_dir))


def test_random_weights_cannot_do_a_task_that_needs_the_prompt(quote_run):
    """The quote type sits at the start of the prompt: weights that know nothing carry none of
    it to the answer, however the mask is chosen."""
    task = get_task("single_double_quote")
    keep = NodeSet.from_model(quote_run.model).keep_from_names(QUOTE_PATH)
    circuit = circuit_from_keep(quote_run, keep, task.generate(64, split="train"), task=task.name)
    circuit.settings.update(steps=20, k_coefs=[0.01], n_train=64, n_test=64)
    res = run_checks(quote_run, circuit, checks=["random_weights"], progress=False)["random_weights"]
    assert res["verdict"] == "pass", res["detail"]
    for kind in ("random", "shuffled"):
        assert not res["data"][kind]["target_met"] and res["data"][kind]["circuit_loss"] > 1.0
        path = RunDir(quote_run.path).control(f"{kind}_weights-single_double_quote-seed0")
        assert path.is_file()  # cached beside the nonsense control, out of circuits/
    assert not (quote_run.path / "circuits").exists()
    again = run_checks(quote_run, circuit, checks=["random_weights"], progress=False)["random_weights"]
    assert again == res  # the cached controls give the same verdict


def test_random_weights_flag_a_task_the_last_token_answers(honest_run, tmp_path):
    """The last word alone gives the answer, and the embedding-to-logits path is never pruned:
    any weights reach the target with an empty circuit, so the low loss proves nothing."""
    data = tmp_path / "data"
    data.mkdir()
    words = np.random.default_rng(0).choice([WORDS.index(w) for w in "ABxyz"], 4096).astype(np.uint16)
    for split in ("train", "val"):
        words.tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(f'{{"vocab_size": {len(WORDS)}, "eot_id": 0, "train_tokens": 4096, '
                                    '"val_tokens": 4096}')
    honest_run.config.data.data_dir = str(data)  # the controls' node means come from its val split
    means = means_for(honest_run)
    circuit = _circuit(honest_run, HONEST, means)
    circuit.settings.update(k_coefs=[0.01], steps=20)
    res = run_checks(honest_run, circuit, checks=["random_weights"], task=TASK, means=means,
                     progress=False)["random_weights"]
    assert res["verdict"] == "flag"
    assert res["data"]["random"]["target_met"] and res["data"]["random"]["n_nodes"] == 0
