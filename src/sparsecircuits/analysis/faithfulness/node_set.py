"""A circuit from a hand-chosen node set, so the report card can judge any hypothesis (or a
circuit found by another tool), not only what ``prune`` found."""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch

from ...circuits.circuit import Circuit, calibrated_diff, circuit_diffs, fit_calibration, orientation
from ...circuits.masking import MaskedModel, ablation_baseline
from ...config import TARGET_LOSS, PruneSettings
from ...errors import UserError
from ...tasks.base import diff_loss
from .context import encode_items


def circuit_from_keep(run, keep: torch.Tensor, train_items: Sequence, task: str = "custom",
                      ablation: str = "mean", means: torch.Tensor | None = None,
                      target_loss: float = TARGET_LOSS) -> Circuit:
    """A ``Circuit`` for the node set ``keep`` (n,), calibrated on ``train_items``."""
    keep = keep.to(torch.bool).cpu()
    baseline = ablation_baseline(run, ablation, means)
    batch, _ = encode_items(run, list(train_items), task)
    if batch is None:
        raise UserError(f"task {task}: no train items fit the model")
    diff = circuit_diffs(MaskedModel(run.model, baseline), keep, batch)
    a, b = fit_calibration(diff, orientation(batch))
    settings = asdict(PruneSettings(target_loss=target_loss, ablation=ablation))
    train_loss = diff_loss(calibrated_diff(diff, orientation(batch), a, b))
    return Circuit.build(run, task, keep, (a, b), settings, [batch], baseline=baseline,
                         metrics={"circuit_train_loss": train_loss})
