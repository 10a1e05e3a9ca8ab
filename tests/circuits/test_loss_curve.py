"""Faithfulness against size: the loss as nodes are added in the learned and attribution order."""
import math

import pytest

from circuit_fixtures import TOY_CIRCUIT, toy_examples
from sparsecircuits.circuits import prune
from sparsecircuits.circuits.loss_curve import curve_sizes
from sparsecircuits.config import PruneSettings
from sparsecircuits.errors import UserError

FAST = dict(progress=False, threads=1)
LEARNED = dict(ablation="zero", steps=60, lr=3e-2, k_coefs=[1e-2], **FAST)  # finds the toy circuit


def test_sizes_are_every_size_when_few_and_log_spaced_when_many():
    assert curve_sizes(5, 16) == [0, 1, 2, 3, 4, 5]
    assert curve_sizes(15, 16) == list(range(16))
    assert curve_sizes(5, 0) == []
    big = curve_sizes(1000, 16)
    assert big[0] == 0 and big[-1] == 1000 and len(big) <= 16
    assert all(a < b for a, b in zip(big, big[1:]))
    assert big[:3] == [0, 1, 2]  # the first nodes, where the loss moves most, are all seen
    assert curve_sizes(40, 2) == [0, 40]


def _check_shape(rows: list[dict], k: int) -> None:
    sizes = [r["n_nodes"] for r in rows]
    assert sizes[0] == 0 and sizes[-1] == k
    assert all(a < b for a, b in zip(sizes, sizes[1:]))
    edges = [r["n_edges"] for r in rows]
    assert edges[0] == 0 and all(a <= b for a, b in zip(edges, edges[1:]))  # a superset keeps every edge


def test_learned_curve_ends_at_the_circuit_and_the_attribution_curve_runs_beside_it(toy_run):
    c = prune(toy_run, toy_examples(64), **LEARNED)
    assert set(c.node_ids) == TOY_CIRCUIT
    curves = c.metrics["loss_vs_size"]
    assert set(curves) == {"learned", "attribution"}
    for rows in curves.values():
        _check_shape(rows, 3)
    last = curves["learned"][-1]
    assert last["loss"] == c.metrics["circuit_loss"] and last["accuracy"] == c.metrics["circuit_accuracy"]
    assert last["n_edges"] == c.metrics["n_edges"] and last["train_loss"] == c.metrics["circuit_train_loss"]
    # under zero ablation the toy's answer needs all three nodes: until the third is in, A and
    # B give the same logits and the calibrated loss stays at chance (2 ln 2), then it drops
    losses = [r["loss"] for r in curves["learned"]]
    assert all(a >= b for a, b in zip(losses, losses[1:]))
    assert losses[:3] == pytest.approx([2 * math.log(2)] * 3, abs=0.05) and losses[3] < 1e-3
    assert [r["accuracy"] for r in curves["attribution"]][-1] == 1.0  # attribution ranks the same three first


def test_attribution_circuit_has_its_own_curve_only(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", **FAST)
    rows = c.metrics["loss_vs_size"]["attribution"]
    assert set(c.metrics["loss_vs_size"]) == {"attribution"}
    _check_shape(rows, 3)
    assert rows[-1]["loss"] == c.metrics["circuit_loss"]


def test_no_curve_when_asked_for_none(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", curve_points=0, **FAST)
    assert "loss_vs_size" not in c.metrics and "loss_vs_size" not in c.metrics["timings"]


def test_the_curve_is_in_the_published_schema(toy_run):
    from circuit_schema import schema_errors

    c = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", **FAST)
    assert schema_errors(c.to_json()) == []
    broken = c.to_json()
    broken["metrics"]["loss_vs_size"]["attribution"][0]["n_nodes"] = -1
    assert schema_errors(broken)


@pytest.mark.parametrize("points", [-1, 1])
def test_curve_points_must_be_zero_or_at_least_two(points):
    with pytest.raises(UserError, match="curve_points"):
        PruneSettings(curve_points=points).validate()
