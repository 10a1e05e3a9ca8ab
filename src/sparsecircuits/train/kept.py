"""Weights kept at chosen steps of training, so circuits can be pruned as they form.

``train.keep_checkpoints = N`` keeps the weights of N evenly spaced steps, the last being
the final step (``TrainConfig.kept_steps``). Why not keep resumable checkpoints instead:
those hold the Adam moments too (three times the weights) and only the newest two stay,
while a timeline needs the weights alone, for the whole run.

Each kept step is a run directory of its own, ``RUN/kept/step_NNNNNNN/``
(``RunDir.kept``), holding ``model.safetensors``; the node means and circuits computed for
those weights are cached beside them by the code that caches them for any run, so a
checkpoint's circuit never replaces the final model's. A resumable checkpoint still on
disk serves too: its weights are copied out into the same folder on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import UserError
from ..io import atomic_path
from ..rundir import RunDir
from . import checkpoint as ckpt


def write_weights(path: Path, state: Mapping[str, torch.Tensor], step: int) -> Path:
    """``state`` (a model's state dict) as safetensors at ``path``, atomically, with its step."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp), metadata={"format": "sparsecircuits", "step": str(int(step))})
    return path


def resumable_steps(run_dir: RunDir) -> list[int]:
    """Steps of the resumable checkpoints on disk (``checkpoints/step_*``)."""
    return [int(p.name[len("step_"):]) for p in ckpt.list_checkpoints(run_dir.checkpoints)]


def available_steps(run_dir: RunDir) -> list[int]:
    """Every step whose weights can be read: kept ones and resumable checkpoints."""
    return sorted(set(run_dir.kept_steps()) | set(resumable_steps(run_dir)))


def kept_run_dir(run_dir: RunDir, step: int) -> RunDir:
    """The kept folder of ``step``, its weights copied out of a resumable checkpoint if
    only that has them; a step with neither is a UserError listing the steps there are."""
    kept = run_dir.kept(step)
    if kept.weights.is_file():
        return kept
    if step in resumable_steps(run_dir):
        tensors, _meta = ckpt.load_checkpoint(run_dir.checkpoints / f"step_{step:07d}")
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            write_weights(kept.weights, state, step)
        except OSError as exc:
            raise UserError(f"could not write {kept.weights} ({exc.strerror or exc})") from None
        return kept
    have = available_steps(run_dir)
    listed = ", ".join(str(s) for s in have) if have else "none (train with --set train.keep_checkpoints=N)"
    raise UserError(f"{run_dir.path} has no checkpoint at step {step}; steps with weights: {listed}")
