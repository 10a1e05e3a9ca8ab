"""Calibration properties the main tests leave open (found by benchmarks/mutation.py).

``fit_calibration`` runs exactly the LBFGS iterations it is given (``prune``'s
``calibration_steps``, 16 by default): the setting recorded in every circuit is the one
that produced its scale and shift.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecircuits.circuits.circuit import calibrated_diff, fit_calibration


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
