"""Pruning faults that change a user's circuit, each caught on purpose.

Every test here pins one property that a one-line fault in the method would break while
leaving the rest of the suite green: the soft mask used while optimising must ablate to
the same values as the hard mask used to evaluate; "mean" ablation must use the node
means; the k_coef sweep must return its smallest passing circuit; changed weights must
not be served stale means; and the calibration shift must act in the right direction.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from circuit_fixtures import (
    TOY_CIRCUIT,
    random_model,
    toy_config,
    toy_examples,
    toy_model,
    toy_tokenizer,
    write_token_shards,
)

from sparsecircuits.circuits import prune
from sparsecircuits.circuits.circuit import (
    calibrated_diff,
    circuit_diffs,
    fit_calibration,
    orientation,
)
from sparsecircuits.circuits.graph import count_edges
from sparsecircuits.circuits.masking import (
    MaskedModel,
    ablation_baseline,
    compute_node_means,
    heaviside_ste,
    node_means,
    val_windows,
)
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.circuits.prune import _Prober, _resolve_task
from sparsecircuits.config import PruneSettings
from sparsecircuits.config import RunConfig
from sparsecircuits.run import Run
from sparsecircuits.rundir import RunDir
from sparsecircuits.tasks import diff_loss

prune_module = importlib.import_module("sparsecircuits.circuits.prune")  # the package re-exports prune()
FAST = dict(steps=60, lr=3e-2, progress=False, threads=1)


def _tokens(vocab: int, b: int = 4, t: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def _run_with_val(tmp_path, model, n_tokens: int = 600, seed: int = 0):
    """A run directory with weights on disk and validation tokens next to it."""
    from safetensors.torch import save_file

    val = np.random.default_rng(seed).integers(0, model.cfg.vocab_size, size=n_tokens).astype(np.uint16)
    data = write_token_shards(tmp_path / "data", val, model.cfg.vocab_size)
    path = tmp_path / "run"
    path.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(RunDir(path).weights))
    cfg = RunConfig(model=model.cfg)
    cfg.data.data_dir = str(data)  # as training records it
    return Run(path=path, config=cfg, model=model, tokenizer=None), val


# ---------------------------------------------------------------------------- soft vs hard mask


def test_soft_and_hard_masks_agree_under_mean_ablation():
    """The optimiser's mask (``m * x + (1 - m) * mean``) is the evaluator's, node for node."""
    model = random_model(seed=2)
    ns = NodeSet.from_model(model)
    g = torch.Generator().manual_seed(0)
    means = 0.5 + torch.randn(ns.n, generator=g)  # (n,) far from zero
    masked = MaskedModel(model, means, ns)
    x = _tokens(model.cfg.vocab_size)
    keep = torch.rand(ns.n, generator=g) < 0.5  # about half the nodes of every site ablated
    hard = masked(x, keep)
    assert torch.allclose(masked(x, keep.float()), hard, atol=1e-5, rtol=0)
    tau = torch.where(keep, 0.3, -0.3).requires_grad_(True)
    assert torch.allclose(masked(x, heaviside_ste(tau)), hard, atol=1e-5, rtol=0)
    # the means matter here: zero ablation of the same nodes gives other logits
    assert (MaskedModel(model, None, ns)(x, keep) - hard).abs().max() > 0.1


def test_a_closed_node_reads_exactly_its_mean_on_the_soft_path():
    model = random_model(seed=3)
    ns = NodeSet.from_model(model)
    means = torch.arange(ns.n, dtype=torch.float32) / ns.n + 1.0  # (n,) distinct, nonzero
    site = ns.site("blocks.1.mlp.hook_post")
    seen = {}

    def grab(t, hook):
        seen["post"] = t.detach().clone()
        return t

    masked = MaskedModel(model, means, ns)
    mask = torch.ones(ns.n)
    mask[site.start:site.stop] = 0.0  # close every neuron of block 1
    hooks = masked.hooks(mask) + [("blocks.1.mlp.hook_post", grab)]
    model.run_with_hooks(_tokens(model.cfg.vocab_size), fwd_hooks=hooks)
    expected = means[site.start:site.stop].expand_as(seen["post"])
    assert torch.equal(seen["post"], expected)


# ---------------------------------------------------------------------------- mean ablation


def test_mean_ablation_baseline_is_the_node_means(tmp_path):
    model = random_model(seed=4)
    run, val = _run_with_val(tmp_path, model)
    expected = compute_node_means(model, val_windows(val, 256, model.cfg.block_size))
    got = ablation_baseline(run, "mean")
    assert got is not None and got.shape == (NodeSet.from_model(model).n,)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert expected.abs().max() > 0.01  # nonzero means: a zero vector would not pass
    assert ablation_baseline(run, "zero") is None
    given = torch.full_like(expected, 7.0)
    assert torch.equal(ablation_baseline(run, "mean", given), given)


def test_prune_with_mean_ablation_uses_the_node_means(tmp_path):
    model = toy_model()
    run, val = _run_with_val(tmp_path, model, n_tokens=300)
    run.tokenizer = toy_tokenizer()
    c = prune(run, toy_examples(48), ablation="mean", k_coefs=[1e-2], **{**FAST, "steps": 5})
    expected = compute_node_means(model, val_windows(val, 256, model.cfg.block_size))
    assert torch.allclose(c.baseline(), expected, atol=1e-6, rtol=0)  # the means pruning used
    assert c.metrics["ablation"] == "mean"


# ---------------------------------------------------------------------------- means cache


def test_changed_weights_invalidate_the_means_cache(tmp_path):
    from safetensors.torch import save_file

    first = random_model(seed=5)
    run, val = _run_with_val(tmp_path, first)
    m1 = node_means(run, n_windows=16)
    assert RunDir(run.path).node_means.is_file()
    weights = run.path / "model.safetensors"
    before = weights.stat()

    second = random_model(seed=6)  # same shapes, hence the same file size
    save_file({k: v.contiguous() for k, v in second.state_dict().items()}, str(weights))
    assert weights.stat().st_size == before.st_size
    # a retrained model is written later; make that visible even on a coarse-clock file system
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    run.model = second
    m2 = node_means(run, n_windows=16)
    expected = compute_node_means(second, val_windows(val, 16, second.cfg.block_size))
    assert torch.allclose(m2, expected, atol=1e-6, rtol=0)
    assert (m2 - m1).abs().max() > 1e-3
    # and the refreshed cache serves the new means without the data
    (tmp_path / "data" / "val.bin").unlink()
    assert torch.equal(node_means(run, n_windows=16), m2)


# ---------------------------------------------------------------------------- k_coef sweep


def _toy_with_a_spare_path():
    """The toy model plus a neuron path that is never active: mlp_in:3 -> neuron 1 -> mlp_out:3.

    Residual channel 3 is zero for every token and no logit reads mlp_out:3, so the task is
    unchanged, but keeping that path adds two weight edges to a circuit.
    """
    model = toy_model()
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[1, 3] = 1.0
        model.blocks[0].mlp.c_proj.weight[3, 1] = 1.0
    return model


SPARE = ["blocks.0.hook_mlp_in:3", "blocks.0.mlp.hook_post:1", "blocks.0.hook_mlp_out:3"]
IDLE = ["blocks.0.hook_attn_in:0"]  # a node with no weight edge to anything kept here


def _ranking(ns: NodeSet, first: list[str], then: list[str]) -> torch.Tensor:
    """tau (n,): ``first`` at 1.0, ``then`` at 0.9 (both open), every other node closed."""
    tau = torch.full((ns.n,), -0.5)
    tau[[ns.index(n) for n in first]] = 1.0
    tau[[ns.index(n) for n in then]] = 0.9
    return tau


def test_the_sweep_keeps_the_fewest_edge_passing_circuit(tmp_path, monkeypatch):
    """Three k_coefs with known outcomes: the smallest one sits in the middle of the sweep."""
    model = _toy_with_a_spare_path()
    run = Run(path=tmp_path, config=RunConfig(model=toy_config()), model=model, tokenizer=toy_tokenizer())
    ns = NodeSet.from_model(model)
    circuit = sorted(TOY_CIRCUIT)
    # the spare path ranked above the real circuit: the bisection must keep both
    taus = {1e-3: _ranking(ns, SPARE + IDLE, circuit),  # 7 nodes, 4 edges
            3e-3: _ranking(ns, circuit, []),  # 3 nodes, 2 edges: the answer
            1e-2: _ranking(ns, SPARE, circuit)}  # 6 nodes, 4 edges

    def fake_optimise(masked, data, k_coefs, s, seed, bar=None):
        return [(taus[k].clone(), [{"step": 0, "loss": 0.5, "n_open": int((taus[k] > 0).sum()), "k_coef": k}])
                for k in k_coefs]

    monkeypatch.setattr(prune_module, "optimise_taus", fake_optimise)
    keep = {k: ns.keep_from_names(names) for k, names in
            {"small": circuit, "big": circuit + SPARE, "bigger": circuit + SPARE + IDLE}.items()}
    edges = {k: count_edges(model, ns, v) for k, v in keep.items()}
    assert edges["small"] < edges["big"] == edges["bigger"]  # the premise of this test

    # alone, each ranking is bisected to its own smallest passing circuit
    for k_coef, n_nodes, size in ((1e-3, 7, "bigger"), (3e-3, 3, "small"), (1e-2, 6, "big")):
        alone = prune(run, toy_examples(48), ablation="zero", k_coefs=[k_coef], **FAST).settings["sweep"]
        assert [(r["n_nodes"], r["n_edges"], r["met"], r["beaten"]) for r in alone] == [
            (n_nodes, edges[size], True, False)]

    c = prune(run, toy_examples(48), ablation="zero", k_coefs=[1e-3, 3e-3, 1e-2], **FAST)
    sweep = [(r["k_coef"], r["n_nodes"], r["n_edges"], r["met"], r["beaten"]) for r in c.settings["sweep"]]
    # together: the fewest open nodes (3e-3) is bisected first; the others cannot pass within
    # its edge count (their top nodes are the spare path), so they are beaten after one probe,
    # recorded at their largest circuit with no more edges than the winner's
    assert sweep[1] == (3e-3, 3, edges["small"], True, False)
    for k_coef, n_nodes, n_edges, met, beaten in (sweep[0], sweep[2]):
        assert beaten and not met and n_edges <= edges["small"]
    assert c.settings["k_coef"] == 3e-3
    assert set(c.node_ids) == TOY_CIRCUIT and c.metrics["n_edges"] == edges["small"]

    # equal edges: the circuit with fewer nodes wins, wherever it sits in the sweep
    c2 = prune(run, toy_examples(48), ablation="zero", k_coefs=[1e-2, 1e-3], **FAST)
    assert c2.settings["k_coef"] == 1e-2 and c2.metrics["n_nodes"] == 6
    c3 = prune(run, toy_examples(48), ablation="zero", k_coefs=[1e-3, 1e-2], **FAST)
    assert c3.settings["k_coef"] == 1e-2 and c3.metrics["n_nodes"] == 6


def test_a_candidate_whose_open_nodes_fail_goes_last_and_is_beaten_by_one_probe(tmp_path, monkeypatch):
    """The fewest open nodes are not always the smallest circuit: a k_coef that closed the
    circuit itself (here only an idle node is open) needs most of the ranking.  Bisected
    first, it would pass only far down the ranking and cost a long bisection; evaluated at its
    open nodes first, it fails there, goes after the candidate that passes, and is beaten by
    one probe at the winner's edge count."""
    model = _toy_with_a_spare_path()
    run = Run(path=tmp_path, config=RunConfig(model=toy_config()), model=model, tokenizer=toy_tokenizer())
    ns = NodeSet.from_model(model)
    circuit = sorted(TOY_CIRCUIT)
    taus = {1e-2: _ranking(ns, IDLE, []),  # 1 open node, the circuit closed with the rest
            3e-3: _ranking(ns, circuit, SPARE)}  # 6 open nodes, passing: bisected to 3

    def fake_optimise(masked, data, k_coefs, s, seed, bar=None):
        return [(taus[k].clone(), [{"step": 0, "loss": 0.5, "n_open": int((taus[k] > 0).sum()), "k_coef": k}])
                for k in k_coefs]

    monkeypatch.setattr(prune_module, "optimise_taus", fake_optimise)
    c = prune(run, toy_examples(48), ablation="zero", k_coefs=[1e-2, 3e-3], **FAST)
    sweep = {r["k_coef"]: r for r in c.settings["sweep"]}
    small = count_edges(model, ns, ns.keep_from_names(circuit))
    assert (sweep[3e-3]["n_nodes"], sweep[3e-3]["n_edges"], sweep[3e-3]["met"]) == (3, small, True)
    assert sweep[1e-2]["beaten"] and not sweep[1e-2]["met"] and sweep[1e-2]["n_edges"] <= small
    assert c.settings["k_coef"] == 3e-3 and set(c.node_ids) == TOY_CIRCUIT


class _ScriptedProber(_Prober):
    """A prober whose loss at K is a given function, recording every K it evaluates."""

    def __init__(self, n: int, loss_at) -> None:
        from types import SimpleNamespace

        self.masked = SimpleNamespace(nodes=SimpleNamespace(n=n))
        self.tie, self.order, self.cache, self.loss_at, self.evaluated = None, torch.arange(n), {}, loss_at, []

    def loss(self, k: int) -> float:
        if k not in self.cache:
            self.evaluated.append(k)
            self.cache[k] = (self.loss_at(k), (1.0, 0.0))
        return self.cache[k][0]


def test_a_bisection_starts_from_the_sizes_already_evaluated():
    step = _ScriptedProber(200, lambda k: 0.1 if k >= 37 else 1.0)
    for k in (10, 50, 120):  # what an earlier search left in the cache
        step.loss(k)
    assert step.bracket(0.15) == (10, 50) and step.bracket(0.01) is None
    assert step.smallest(0.15, hint=120) == (37, True)
    new = step.evaluated[3:]
    assert new and all(10 < k < 50 for k in new) and len(new) <= 6  # log2(40) probes, none outside
    # without a cache the same answer, from the hint down
    fresh = _ScriptedProber(200, lambda k: 0.1 if k >= 37 else 1.0)
    assert fresh.smallest(0.15, hint=120) == (37, True)
    # a non-monotone loss: whatever the cache, the answer passes and nothing below it in the
    # bracket was found to pass
    bumpy = _ScriptedProber(200, lambda k: 0.1 if k >= 60 or 20 <= k < 25 else 1.0)
    for k in (22, 100):
        bumpy.loss(k)
    k, met = bumpy.smallest(0.15, hint=100)
    assert met and bumpy.loss(k) <= 0.15 and k <= 22


def test_a_real_sweep_returns_its_fewest_edge_passing_entry(toy_run):
    c = prune(toy_run, toy_examples(48), ablation="zero", k_coefs=[0.0, 1e-2], **FAST)
    sweep = c.settings["sweep"]
    assert len(sweep) == 2 and all(r["met"] for r in sweep)
    best = min(sweep, key=lambda r: (r["n_edges"], r["n_nodes"]))
    assert c.metrics["n_edges"] == best["n_edges"] and c.metrics["n_nodes"] == best["n_nodes"]
    assert set(c.node_ids) == TOY_CIRCUIT


# ---------------------------------------------------------------------------- calibration sign


def test_calibration_fits_a_real_shift_with_the_right_sign():
    """Every prompt leans towards the lower answer id by 3; only a shift of about -3a fixes it."""
    sign = torch.tensor([1.0, -1.0] * 32)  # +1: the correct answer has the lower token id
    oriented = 3.0 + sign  # logit[lower id] - logit[higher id]: informative, but biased
    diff = sign * oriented  # correct minus incorrect
    assert float((diff > 0).float().mean()) == 0.5  # uncalibrated: half wrong
    a, b = fit_calibration(diff, sign)
    assert a > 0 and b < -1.0
    assert b / a == pytest.approx(-3.0, abs=0.3)
    cal = calibrated_diff(diff, sign, a, b)
    chance = diff_loss(torch.zeros_like(diff))
    assert bool((cal > 0).all()) and diff_loss(cal) < 0.1 * chance < diff_loss(diff)


def test_the_shift_is_a_bias_between_answer_tokens_not_towards_the_correct_one():
    batch = type("B", (), {"correct_id": torch.tensor([4, 5, 4]), "incorrect_id": torch.tensor([5, 4, 5])})()
    sign = orientation(batch)
    assert sign.tolist() == [1.0, -1.0, 1.0]
    diff = torch.zeros(3)
    # a positive shift raises the lower id (4): right where 4 is correct, wrong where 5 is
    assert calibrated_diff(diff, sign, 1.0, 2.0).tolist() == [2.0, -2.0, 2.0]


def _biased_toy(tmp_path):
    """The toy task where the circuit's logits all lean towards Q unless the fit shifts them.

    Under mean ablation with a mean of 20 on mlp_out:2 (the constant channel Q reads), the
    3-node toy circuit answers Q after both A and B (accuracy 1/2) while its logit
    difference still separates them: only a calibration shift towards P rescues it.
    """
    model = toy_model()
    run = Run(path=tmp_path, config=RunConfig(model=toy_config()), model=model, tokenizer=toy_tokenizer())
    ns = NodeSet.from_model(model)
    means = torch.zeros(ns.n)
    means[ns.index("blocks.0.hook_mlp_out:2")] = 20.0
    return run, ns, means


def test_a_circuit_that_needs_a_shift_passes_with_the_right_sign(tmp_path):
    run, ns, means = _biased_toy(tmp_path)
    s = PruneSettings(ablation="mean")
    data = _resolve_task(run, toy_examples(64), "toy", s, seed=0)
    masked = MaskedModel(run.model, means, ns)
    keep = ns.keep_from_names(TOY_CIRCUIT)
    raw = circuit_diffs(masked, keep, data.train)
    assert float((raw > 0).float().mean()) == pytest.approx(0.5, abs=0.1)  # the premise
    order = torch.tensor([ns.index(n) for n in sorted(TOY_CIRCUIT)]
                         + [i for i in range(ns.n) if ns.name(i) not in TOY_CIRCUIT])
    prober = _Prober(masked, order, data.train, s)
    assert prober.loss(3) < 0.15  # calibrated: meets the default target
    a, b = prober.calibration(3)
    # P (id 4) is the lower id; the circuit leans to Q, so the shift must raise P: b > 0
    assert a > 0 and b > 0
    assert prober.smallest(0.15, 3) == (3, True)


def test_within_edges_is_the_largest_top_k_with_no_more_edges(tmp_path):
    """Checked against every K of a ranking by counting the edges of each top-K circuit."""
    from types import SimpleNamespace

    from sparsecircuits.circuits.prune import _Prober, make_settings, within_edges

    model = _toy_with_a_spare_path()
    ns = NodeSet.from_model(model)
    order = torch.randperm(ns.n, generator=torch.Generator().manual_seed(0))
    masked = SimpleNamespace(nodes=ns)
    batch = SimpleNamespace(correct_id=torch.tensor([1]), incorrect_id=torch.tensor([2]))  # never evaluated
    prober = _Prober(masked, order, batch, make_settings(ablation="zero"))
    ctx = SimpleNamespace(model=model, nodes=ns)
    counts = [count_edges(model, ns, prober.keep(k)) for k in range(ns.n + 1)]
    assert counts == sorted(counts) and counts[-1] > 0  # nested circuits: edges only grow
    for max_edges in sorted(set(counts)) + [counts[-1] + 5]:
        assert within_edges(ctx, prober, max_edges) == max(k for k, e in enumerate(counts) if e <= max_edges)


def test_the_empty_and_the_whole_circuit_are_evaluated_once_per_pruning(tmp_path, monkeypatch):
    """K = 0 and K = n are the same circuits in every candidate's ranking: one evaluation each
    on the bisection's items, however many k_coefs and curves ask for them."""
    calls: dict[tuple[int, str], int] = {}
    real = prune_module.circuit_diffs

    def counting(masked, mask, batch, batch_size=256):
        if mask is not None and mask.dtype == torch.bool and (mask.all() or not mask.any()):
            key = (id(batch), "all" if mask.all() else "none")
            calls[key] = calls.get(key, 0) + 1
        return real(masked, mask, batch, batch_size)

    monkeypatch.setattr(prune_module, "circuit_diffs", counting)
    # random weights: no circuit meets the target, so every candidate's search doubles up to all nodes
    model = random_model(0, vocab_size=len(toy_tokenizer().get_vocab()), block_size=16)
    run = Run(path=tmp_path, config=RunConfig(model=model.cfg), model=model, tokenizer=toy_tokenizer())
    c = prune(run, toy_examples(64), ablation="zero", force=True, **{**FAST, "k_coefs": [1e-3, 1e-2, 3e-2]},
              curve_points=4)
    assert not c.metrics["target_met"]
    assert calls and max(calls.values()) == 1, calls
    assert any(kind == "all" for _, kind in calls)  # the searches did reach the whole circuit
