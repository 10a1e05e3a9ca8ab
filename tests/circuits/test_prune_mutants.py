"""Pruning properties the main tests leave open (found by benchmarks/mutation.py).

``prune --search`` scores each trial with ``_candidate`` and ``heldout_loss``, outside
``prune()``: they must give what ``prune()`` itself reports for the same k_coef and seed.
"""
from __future__ import annotations

import pytest
import torch
from circuit_fixtures import toy_examples

from sparsecircuits.circuits.prune import (
    _candidate,
    _candidates,
    _prepare,
    finish,
    heldout_loss,
    make_settings,
)

K = 1e-2


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
    assert cand["k"] == 3 and acc == 1.0 and loss < 0.15  # the toy circuit, exact on the test items
    moved = dict(cand, k=cand["k"] - 1)  # one node short of the 3-node circuit: worse on the test items
    assert heldout_loss(ctx, moved, s)[0] > loss
