import math
from collections import Counter

import pytest
import torch

from circuit_fixtures import TOY_CIRCUIT, toy_examples
from sparsecircuits.circuits import Circuit, prune
from sparsecircuits.circuits.circuit import calibrated_diff, encode_for_run, fit_calibration
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.prune import (
    NotLearnedError,
    PruneSettings,
    _frozen,
    _resolve_task,
    optimise_tau,
    smallest_passing,
)
from sparsecircuits.errors import UserError
from sparsecircuits.tasks.base import TaskExample

# short and fast: a larger lr stands in for the default's longer schedule
FAST = dict(steps=60, lr=3e-2, k_coefs=[1e-2], progress=False, threads=1)


def test_prunes_the_hand_built_model_to_exactly_its_circuit(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="zero", **FAST)
    assert set(c.node_ids) == TOY_CIRCUIT
    m = c.metrics
    assert m["n_nodes"] == 3 and m["target_met"]
    # edges by hand: mlp_in:0 -> neuron 0 -> mlp_out:1 (2 internal); io: embed A and B -> mlp_in:0,
    # mlp_out:1 -> logit P (lm_head of Q ignores channel 1)
    assert m["n_edges"] == 2
    assert m["n_edges_with_io"] == 5
    links = {(lk["source"], lk["target"]): lk["weight"] for lk in c.links}
    assert links[("blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0")] == 5.0
    assert links[("embed:3", "blocks.0.hook_mlp_in:0")] == -1.0  # token B
    assert links[("blocks.0.hook_mlp_out:1", "logit:4")] == 10.0  # token P
    assert m["circuit_loss"] <= 0.15 and m["circuit_accuracy"] == 1.0
    assert m["full_accuracy"] == 1.0 and not c.forced
    assert m["curve"] and {"step", "loss", "n_open"} <= set(m["curve"][0])
    assert c.settings["n_train_examples"] + c.settings["n_test_examples"] == 64
    # the size-vs-target table uses the same ranking: 3 nodes meet every target here
    assert [r["n_nodes"] for r in m["size_vs_target"]] == [3] * len(m["size_vs_target"])
    # and the circuit evaluates again from its own state, on fresh examples
    again = c.evaluate(toy_examples(20, seed=5))
    assert again["accuracy"] == 1.0 and again["loss"] < 0.15
    # ablating only the circuit wrecks the task (necessity)
    assert c.evaluate(toy_examples(20, seed=5), keep=~c.keep, calibrated=False)["accuracy"] == 0.5


def test_refuses_a_task_the_model_has_not_learned(toy_run):
    wrong = [TaskExample(e.prompt, e.incorrect, e.correct) for e in toy_examples(32)]
    with pytest.raises(NotLearnedError, match=r"0\.0% accurate"):
        prune(toy_run, wrong, ablation="zero", **FAST)
    before = torch.get_num_threads()
    c = prune(toy_run, wrong, ablation="zero", force=True, **FAST)
    assert c.forced and c.to_json()["forced"] is True
    assert torch.get_num_threads() == before  # the threads setting is restored


def test_bad_settings_are_user_errors(toy_run):
    with pytest.raises(UserError, match="ablation"):
        prune(toy_run, toy_examples(16), ablation="random", **FAST)
    with pytest.raises(UserError, match="target"):
        prune(toy_run, toy_examples(16), target_loss=0, **FAST)
    with pytest.raises(UserError, match="at least 4"):
        prune(toy_run, toy_examples(3), **FAST)


def test_bisection_finds_the_smallest_size_on_a_monotone_predicate():
    for true_k in (0, 1, 7, 63, 64):
        calls = []

        def passes(k):
            calls.append(k)
            return k >= true_k

        assert smallest_passing(passes, 0, 64) == true_k
        assert len(set(calls)) <= 9  # logarithmic
    assert smallest_passing(lambda k: k >= 100, 0, 64) is None  # hi fails: nothing to find
    # a relative tolerance (for the coarse size-vs-target curve) stays within it, and passes
    k = smallest_passing(lambda k: k >= 1000, 0, 5000, rel_tol=0.02)
    assert 1000 <= k <= 1020


def test_bisection_returns_a_passing_size_on_a_non_monotone_predicate():
    good = {3, 10, 11, 12, 13, 14, 15, 16}  # an early dip, then a gap of failures

    k = smallest_passing(lambda k: k in good, 0, 16)
    assert k in good
    # a predicate that changes its mind on re-checking: the answer is stepped up
    seen = {}

    def flaky(k):
        seen[k] = seen.get(k, 0) + 1
        return k >= 6 if k != 6 or seen[k] == 1 else False

    assert smallest_passing(flaky, 0, 16) == 7


def test_tau_is_clamped_and_gets_gradient(toy_run):
    s = PruneSettings(steps=25, lr=0.5, k_coefs=[1e-2])
    data = _resolve_task(toy_run, toy_examples(32), None, s, 0)
    masked = MaskedModel(toy_run.model, None)
    with _frozen(toy_run.model):
        tau, curve = optimise_tau(masked, data, 1e-2, s, seed=0)
    assert tau.abs().max() <= 1.0
    assert (tau == -1.0).any()  # a huge lr pushes unneeded nodes to the clamp
    assert curve[0]["n_open"] == masked.nodes.n  # tau starts at normal(0.1, 0.01): all open
    assert all(p.requires_grad for p in toy_run.model.parameters())  # restored after pruning


def test_calibration_cannot_rescue_a_constant_circuit():
    sign = torch.tensor([1.0, -1.0] * 50)
    diff = -sign * 2.0  # the same oriented logits for every prompt: no information
    a, b = fit_calibration(diff, sign)
    loss = float(torch.nn.functional.softplus(-calibrated_diff(diff, sign, a, b)).mean())
    # no scale and shift beat chance (ln 2 per prompt) here, and the fit reaches it (b = 2a)
    assert loss == pytest.approx(math.log(2), abs=1e-3)
    # while an informative but badly scaled circuit is fixed
    d = torch.tensor([0.05, 0.02, 0.1, 0.04] * 10)
    s2 = torch.tensor([1.0, -1.0, 1.0, -1.0] * 10)
    a2, b2 = fit_calibration(d, s2)
    assert a2 > 1 and torch.nn.functional.softplus(-(a2 * d + s2 * b2)).mean() < 0.2


def test_default_task_name_and_user_examples_split(toy_run):
    s = PruneSettings()
    data = _resolve_task(toy_run, toy_examples(40), "toy", s, seed=0)
    assert data.name == "toy" and data.group == 1
    assert len(data.test) == 10 and len(data.train) == 30

    def rows(batch):  # (prompt ids, correct id, incorrect id) per example
        return [(tuple(t[:lp + 1]), c, i) for t, lp, c, i in zip(
            batch.tokens.tolist(), batch.last_pos.tolist(), batch.correct_id.tolist(), batch.incorrect_id.tolist())]

    # every example lands in exactly one split, encoded as prune evaluates it
    assert Counter(rows(data.train) + rows(data.test)) == Counter(rows(encode_for_run(toy_run, toy_examples(40))))
    assert data.train.last_pos.tolist() == sorted(data.train.last_pos.tolist())  # sorted by length
    other = _resolve_task(toy_run, toy_examples(40), "toy", s, seed=1)
    assert rows(other.test) != rows(data.test)  # the seed picks the held-out quarter


def test_circuit_object_round_trips_through_json(toy_run, tmp_path):
    c = prune(toy_run, toy_examples(32), ablation="zero", **FAST)
    path = c.save(tmp_path / "c" / "circuit.json")
    back = Circuit.load(path)
    assert torch.equal(back.keep, c.keep)
    assert back.to_json() == c.to_json()
    assert back.calibration == c.calibration
    r = back.evaluate(toy_run, toy_examples(10, seed=9))
    assert r == c.evaluate(toy_examples(10, seed=9))
