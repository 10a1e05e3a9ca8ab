"""Pruning properties the main tests leave open (found by benchmarks/mutation.py).

The bisection scores circuits on a probe of the train items: evenly spaced whole groups
(a pair's two prompts together), so every prompt length is represented.

``prune --search`` scores each trial with ``_candidate`` and ``heldout_loss``, outside
``prune()``: they must give what ``prune()`` itself reports for the same k_coef and seed.
"""
from __future__ import annotations

import importlib
import types

import pytest
import torch
from circuit_fixtures import toy_examples

from sparsecircuits.circuits.prune import (
    _candidate,
    _TaskData,
    _candidates,
    _prepare,
    finish,
    heldout_loss,
    make_settings,
    prune,
)

K = 1e-2
prune_module = importlib.import_module("sparsecircuits.circuits.prune")  # the module, not the function


@pytest.fixture
def ctx_and_settings(toy_run):
    s = make_settings(ablation="zero", steps=60, k_coefs=[K], lr=3e-2, threads=1)
    return _prepare(toy_run, toy_examples(64), s, seed=0, force=False, name=None, means=None, t0=0.0), s


def test_one_candidate_is_the_sweep_of_one(ctx_and_settings):
    ctx, s = ctx_and_settings
    one = _candidate(ctx, s, K, seed=3)
    [swept] = _candidates(ctx, s, [K], seed=3)
    assert one["k_coef"] == K and torch.equal(one["tau"], swept["tau"])
    assert (one["k"], one["met"], one["edges"], one["n_open"]) == (swept["k"], swept["met"], swept["edges"],
                                                                     swept["n_open"])
    assert one["train_loss"] == swept["train_loss"] and one["curve"] == swept["curve"]
    assert not torch.equal(_candidate(ctx, s, K, seed=4)["tau"], one["tau"])  # the seed reaches the run


def test_heldout_loss_is_the_circuits_reported_loss_and_accuracy(ctx_and_settings):
    ctx, s = ctx_and_settings
    cand = _candidate(ctx, s, K, seed=0)
    loss, acc = heldout_loss(ctx, cand, s)
    circuit = finish(ctx, s, [cand], cand, seed=0, t0=0.0)
    assert (loss, acc) == (circuit.metrics["circuit_loss"], circuit.metrics["circuit_accuracy"])
    # the split of the time that benchmarks/prune_time.py reports, in seconds to the millisecond
    timings = circuit.metrics["timings"]
    assert {"full_model", "means", "optimise", "bisect", "size_vs_target", "graph"} <= set(timings)
    assert all(isinstance(v, float) and v >= 0 and v == round(v, 3) for v in timings.values())
    assert cand["k"] == 3 and acc == 1.0 and loss < 0.15  # the toy circuit, exact on the test items
    moved = dict(cand, k=cand["k"] - 1)  # one node short of the 3-node circuit: worse on the test items
    assert heldout_loss(ctx, moved, s)[0] > loss


class _Rows:
    """Stands in for a TaskBatch: ``select`` by index tensor, ``len``."""

    def __init__(self, ids) -> None:
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx: torch.Tensor) -> "_Rows":
        return _Rows(self.ids[i] for i in idx.tolist())


def test_the_probe_is_evenly_spaced_whole_groups():
    pairs = _TaskData("t", _Rows(range(20)), None, group=2)  # 10 pairs, sorted by length
    assert pairs.n_train_groups == 10
    assert pairs.probe(4).ids == [0, 1, 6, 7, 12, 13, 18, 19]  # pairs 0, 3, 6 and 9: first and last included
    assert pairs.probe(3).ids == [0, 1, 8, 9, 18, 19]
    assert pairs.probe(1).ids == [0, 1]
    everything = pairs.train
    assert pairs.probe(10) is everything and pairs.probe(11) is everything
    single = _TaskData("t", _Rows(range(5)), None, group=1)
    assert single.probe(2).ids == [0, 4] and single.probe(4).ids == [0, 1, 3, 4]


def test_the_progress_bar_counts_every_step_of_every_k_coef(toy_run, monkeypatch):
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total, desc, disable, **kw):
            self.total, self.desc, self.disable, self.done, self.closed = total, desc, disable, 0, False
            bars.append(self)

        def update(self, n):
            self.done += n

        def set_postfix(self, refresh=True, **kw):
            self.postfix = kw

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    prune(toy_run, toy_examples(64), ablation="zero", steps=7, k_coefs=[1e-3, 1e-2], lr=3e-2, threads=1)
    [bar] = bars
    assert (bar.total, bar.done, bar.desc, bar.disable, bar.closed) == (14, 14, "prune custom", None, True)
    assert set(bar.postfix) == {"loss", "open"} and len(bar.postfix["loss"].split("/")) == 2
    prune(toy_run, toy_examples(64), ablation="zero", steps=7, k_coefs=[1e-3], lr=3e-2, threads=1, progress=False)
    assert bars[1].disable is True and bars[1].done == 7


def _chosen(toy_run, monkeypatch, candidates: list[dict]) -> dict:
    """The candidate the k_coef sweep keeps among hand-made ones."""
    monkeypatch.setattr(prune_module, "_candidates", lambda ctx, s, k_coefs, seed, bar=None: candidates)
    monkeypatch.setattr(prune_module, "finish",
                        lambda ctx, s, cands, best, seed, t0: types.SimpleNamespace(metrics={}, best=best))
    return prune(toy_run, toy_examples(64), ablation="zero", progress=False, threads=1).best


def _cand(name: str, met: bool, edges: int, k: int, loss: float) -> dict:
    return {"name": name, "met": met, "edges": edges, "k": k, "train_loss": loss}


def test_the_sweep_keeps_fewest_edges_then_nodes_then_loss_and_else_the_lowest_loss(toy_run, monkeypatch):
    met = [_cand("a", True, 9, 5, 0.10), _cand("b", True, 7, 6, 0.12), _cand("c", True, 7, 5, 0.14),
           _cand("d", True, 7, 5, 0.11)]
    assert _chosen(toy_run, monkeypatch, met)["name"] == "d"  # 7 edges, 5 nodes, then the lower loss
    missed = [_cand("small", False, 2, 2, 0.50), _cand("close", False, 40, 30, 0.16),
              _cand("mid", False, 10, 8, 0.30)]
    # nothing meets the target: the closest to it, whatever its size
    assert _chosen(toy_run, monkeypatch, missed)["name"] == "close"
    # a circuit meeting the target beats every one that does not, however small or close
    assert _chosen(toy_run, monkeypatch, missed + [_cand("big", True, 90, 60, 0.149)])["name"] == "big"
