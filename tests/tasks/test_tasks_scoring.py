"""The one task score (answer logit difference, loss/accuracy record) and the one user-task split."""
from __future__ import annotations

import math

import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.tasks import (
    ExamplesTask,
    TaskBatch,
    TaskExample,
    TaskItem,
    answer_diff,
    diff_loss,
    example_units,
    flat_examples,
    score_diffs,
)


def _batch(correct, incorrect) -> TaskBatch:
    n = len(correct)
    return TaskBatch(tokens=torch.zeros(n, 1, dtype=torch.long), last_pos=torch.zeros(n, dtype=torch.long),
                     correct_id=torch.tensor(correct), incorrect_id=torch.tensor(incorrect))


def test_answer_diff_takes_correct_minus_incorrect_per_row():
    last = torch.tensor([[0.0, 1.0, 5.0], [2.0, -1.0, 0.5]])  # (N=2, V=3)
    batch = _batch([2, 1], [0, 0])
    assert answer_diff(last, batch).tolist() == [5.0, -3.0]


def test_answer_diff_broadcasts_leading_dims_over_the_batch():
    torch.manual_seed(0)
    last = torch.randn(3, 4, 7)  # (R, N, V): three variants of a model on the same 4 prompts
    batch = _batch([1, 6, 0, 3], [2, 2, 5, 0])
    got = answer_diff(last, batch)
    assert got.shape == (3, 4)
    for r in range(3):
        assert torch.equal(got[r], answer_diff(last[r], batch))


def test_score_is_per_pair_loss_accuracy_with_ties_wrong_and_count():
    diff = torch.tensor([3.0, -1.0, 0.0, 2.0])
    r = score_diffs(diff)
    expected = 2 * sum(math.log1p(math.exp(-d)) for d in diff.tolist()) / 4
    assert r == {"loss": pytest.approx(expected, rel=1e-6), "accuracy": 0.5, "n": 4}
    assert diff_loss(torch.tensor([-math.inf, 1.0])) == math.inf  # not a nan


def _items(n):
    return [TaskItem(TaskExample(f"a{i}", "x", "y"), TaskExample(f"b{i}", "y", "x")) for i in range(n)]


def test_units_keep_pairs_whole_and_refuse_a_mix_or_nothing():
    units, group = example_units(_items(2))
    assert group == 2 and [[e.prompt for e in u] for u in units] == [["a0", "b0"], ["a1", "b1"]]
    flat, group = flat_examples([TaskExample("p", "x", "y"), TaskExample("q", "y", "x")])
    assert group == 1 and [e.prompt for e in flat] == ["p", "q"]
    with pytest.raises(UserError, match="TaskExample or of TaskItem"):
        example_units(_items(1) + [TaskExample("p", "x", "y")], "mixed")
    with pytest.raises(UserError, match="mine: no examples"):
        example_units([], "mine")


def test_user_split_holds_out_a_seeded_quarter_of_whole_pairs():
    items = _items(10)
    task = ExamplesTask("mine", items)
    test, train = task.generate(0, seed=0, split="test"), task.generate(0, seed=0, split="train")
    assert len(test) == 2 and len(train) == 8  # a quarter, rounded down
    assert sorted(it.a.prompt for it in test + train) == sorted(it.a.prompt for it in items)
    assert task.generate(0, seed=0, split="test") == test  # deterministic in the seed
    assert any(ExamplesTask("mine", items).generate(0, seed=s, split="test") != test for s in range(1, 5))
    assert len(ExamplesTask("few", _items(4)).generate(0, split="test")) == 1
    with pytest.raises(UserError, match="at least 4"):
        ExamplesTask("few", _items(3))
