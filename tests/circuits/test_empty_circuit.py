"""The empty circuit short-cut: a task the direct embedding -> logit path decides needs no
mask optimisation, and a task it does not decide still gets the full k_coef sweep."""
import importlib

import pytest
import torch

from circuit_fixtures import TOY_CIRCUIT, VOCAB, toy_config, toy_examples, toy_model, toy_tokenizer
from sparsecircuits.circuits import prune
from sparsecircuits.circuits.prune import _prepare, _Prober, empty_candidate, make_settings
from sparsecircuits.config import RunConfig
from sparsecircuits.run import Run

prune_module = importlib.import_module("sparsecircuits.circuits.prune")
FAST = dict(steps=60, lr=3e-2, k_coefs=[1e-2], progress=False, threads=1)


def _bypass_run(tmp_path) -> Run:
    """The toy model plus a direct path: P also reads channel 0 (A +1, B -1) from the
    embedding, which no node mask touches, so every node can go."""
    model = toy_model()
    with torch.no_grad():
        model.lm_head.weight[VOCAB["P"], 0] = 20.0
    return Run(path=tmp_path, config=RunConfig(model=toy_config()), model=model, tokenizer=toy_tokenizer())


def test_a_task_the_direct_path_decides_prunes_to_nothing_without_optimising(tmp_path, monkeypatch):
    run = _bypass_run(tmp_path)

    def no_optimisation(*args, **kwargs):
        raise AssertionError("the mask optimisation ran although the empty circuit meets every target")

    monkeypatch.setattr(prune_module, "optimise_taus", no_optimisation)
    c = prune(run, toy_examples(64), ablation="zero", **FAST)
    m = c.metrics
    assert m["n_nodes"] == 0 and m["n_edges"] == 0 and m["target_met"] and c.node_ids == []
    assert m["circuit_loss"] <= 0.15 and m["circuit_accuracy"] == 1.0
    assert c.settings["sweep"] == [] and c.settings["empty_meets_all_targets"] is True
    assert "k_coef" not in c.settings
    assert [r["n_nodes"] for r in m["size_vs_target"]] == [0] * len(m["size_vs_target"])
    assert all(r["met"] and r["met_heldout"] for r in m["size_vs_target"])
    assert m["curve"] == [] and "loss_vs_size" not in m


def test_without_the_direct_path_the_sweep_runs_and_finds_the_circuit(toy_run, monkeypatch):
    calls = []
    real = prune_module.optimise_taus
    monkeypatch.setattr(prune_module, "optimise_taus", lambda *a, **k: calls.append(1) or real(*a, **k))
    c = prune(toy_run, toy_examples(64), ablation="zero", **FAST)
    assert calls and set(c.node_ids) == TOY_CIRCUIT
    assert "empty_meets_all_targets" not in c.settings and len(c.settings["sweep"]) == 1


def test_the_short_cut_needs_the_strictest_size_target_met_too(tmp_path):
    run = _bypass_run(tmp_path)
    s = make_settings(ablation="zero", **{k: v for k, v in FAST.items() if k != "progress"})
    ctx = _prepare(run, toy_examples(64), s, seed=0, force=False, name=None, means=None, t0=0.0)
    empty_loss = _Prober(ctx.masked, torch.arange(ctx.nodes.n), ctx.probe, s).loss(0)
    assert empty_candidate(ctx, s)["k"] == 0
    stricter = make_settings(ablation="zero", size_targets=[empty_loss / 2, 0.15],
                             **{k: v for k, v in FAST.items() if k != "progress"})
    assert empty_candidate(ctx, stricter) is None
    looser = make_settings(ablation="zero", target_loss=empty_loss * 2, size_targets=[empty_loss * 2],
                           **{k: v for k, v in FAST.items() if k != "progress"})
    assert empty_candidate(ctx, looser)["train_loss"] == pytest.approx(empty_loss)


def test_a_search_on_such_a_task_runs_no_trial(tmp_path, monkeypatch):
    from sparsecircuits.circuits import search as search_module

    def no_study(*args, **kwargs):
        raise AssertionError("the search ran trials although the empty circuit meets every target")

    monkeypatch.setattr(search_module, "_run_study", no_study)
    c = search_module.search(_bypass_run(tmp_path), toy_examples(64), 4, ablation="zero", progress=False,
                             threads=1)
    record = c.metrics["search"]
    assert c.metrics["n_nodes"] == 0 and c.metrics["target_met"]
    assert record["n_trials"] == 0 and record["requested_trials"] == 4 and record["trials"] == []
    assert "empty circuit" in record["skipped"]
