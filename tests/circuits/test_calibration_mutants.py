"""Calibration properties the main tests leave open (found by benchmarks/mutation.py).

``fit_calibration`` runs exactly the LBFGS iterations it is given (``prune``'s
``calibration_steps``, 16 by default): the setting recorded in every circuit is the one
that produced its scale and shift.  ``circuit_diffs`` scores items in chunks of
``batch_size`` (prune's ``eval_batch``): every item once, in order, whatever the chunking.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from circuit_fixtures import toy_examples

from sparsecircuits.circuits.circuit import calibrated_diff, circuit_diffs, encode_for_run, fit_calibration
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.nodes import NodeSet


def _loss(diff: torch.Tensor, sign: torch.Tensor, fit: tuple[float, float]) -> float:
    return float(F.softplus(-calibrated_diff(diff, sign, *fit)).mean())


def test_the_fit_runs_the_iterations_it_is_given():
    g = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0] * 50)
    # separable, leaning towards the higher answer id: every further iteration still gains
    diff = 0.3 * torch.randn(100, generator=g) + 0.5 - 3 * sign
    fits = {steps: fit_calibration(diff, sign, steps=steps) for steps in (4, 16, 20)}
    assert fits[4] != fits[16] != fits[20]
    assert _loss(diff, sign, fits[20]) < _loss(diff, sign, fits[16]) < _loss(diff, sign, fits[4])
    assert fit_calibration(diff, sign) == fits[16]  # the default, prune's calibration_steps
    # LBFGS from (a, b) = (1, 0) with unit step and strong-Wolfe line search: short of convergence
    # here, so a different start step or line search would land elsewhere (a = 4.05 with lr 2)
    assert fits[16] == pytest.approx((6.1797, 18.5769), rel=1e-4)


def test_circuit_diffs_are_the_same_in_any_chunks(toy_run):
    batch = encode_for_run(toy_run, toy_examples(12), "toy")  # 12 prompts
    nodes = NodeSet.from_model(toy_run.model)
    masked = MaskedModel(toy_run.model, None, nodes)
    whole = circuit_diffs(masked, None, batch)  # (12,) in one chunk
    assert whole.shape == (12,) and whole.dtype == torch.float32
    for size in (1, 5, 11, 12):
        assert torch.allclose(circuit_diffs(masked, None, batch, batch_size=size), whole, atol=1e-6)
    keep = torch.zeros(nodes.n, dtype=torch.bool)  # a mask reaches every chunk too
    assert torch.allclose(circuit_diffs(masked, keep, batch, batch_size=5), circuit_diffs(masked, keep, batch))
    assert not torch.allclose(circuit_diffs(masked, keep, batch), whole)
    none = circuit_diffs(masked, None, batch.select(slice(0, 0)))  # no items: no differences, not an error
    assert none.shape == (0,) and none.dtype == torch.float32


def test_a_circuit_wrong_on_every_prompt_is_fitted_towards_chance_and_nan_falls_back_to_the_identity():
    """The guard "never worse than no calibration" compares with the uncalibrated loss of
    the same differences; a fit that is not finite falls back to exactly (1, 0)."""
    g = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0] * 50)
    diff = -1.0 - 0.1 * torch.rand(100, generator=g)  # every prompt wrong by about 1
    a, b = fit_calibration(diff, sign)
    assert a < 1e-3  # scaled towards 0: chance (ln 2) beats being confidently wrong (1.35)
    assert _loss(diff, sign, (a, b)) < 0.7 < float(F.softplus(-diff).mean())
    assert fit_calibration(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, -1.0])) == (1.0, 0.0)
