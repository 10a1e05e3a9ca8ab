"""Control circuits: a task pruned, forced, with the real circuit's own settings, seed and
ablation, on something that should not have a small circuit (a nonsense task, a model that
never learned the task), and cached per control under ``RUN/controls/<name>/``.

One place decides the settings a control is pruned with and when its cached circuit may be
reused (``RunDir.fresh_circuit`` with the same key a real circuit would have), so every
control check compares like with like.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ...circuits.circuit import Circuit
from ...config import PruneSettings
from ...errors import UserError
from .context import CheckContext


def control_settings(ctx: CheckContext) -> dict[str, Any]:
    """The pruning settings of the circuit under check, with its target and ablation."""
    return {**asdict(PruneSettings()), **ctx.settings, "target_loss": ctx.target, "ablation": ctx.ablation}


def control_circuit(ctx: CheckContext, name: str, run, task, means=None) -> Circuit:
    """``task`` pruned on ``run`` as the control ``name``: read back from the run directory
    when a fresh copy is cached there, else pruned (forced: a control that cannot reach the
    target is a result too) and saved. A read-only run directory just prunes again."""
    from ...circuits.prune import prune
    from ...rundir import RunDir, circuit_key

    s = control_settings(ctx)
    run_dir = RunDir(ctx.run.path) if ctx.run.path else None
    path = run_dir.control(name) if run_dir is not None else None
    if path is not None:
        cached = run_dir.fresh_circuit(path, circuit_key(name, ctx.prune_seed, s))
        if cached is not None:
            try:
                return Circuit.from_json(cached, source=str(path))
            except UserError:
                pass  # not a circuit after all: pruned again below and replaced
    circ = prune(run, task, target_loss=ctx.target, ablation=ctx.ablation, steps=int(s["steps"]),
                 seed=ctx.prune_seed, force=True, k_coefs=list(s["k_coefs"]), n_train=int(s["n_train"]),
                 n_test=int(s["n_test"]), progress=ctx.progress, name=name, means=means,
                 curve_points=0)  # a control's loss-vs-size curve is never shown: not worth its time
    if path is not None and run_dir.path.is_dir():
        try:
            circ.save(path)
        except OSError:
            pass  # a read-only run directory: the control is pruned again next time
    return circ


def control_path(ctx: CheckContext, name: str):
    """Where the control ``name`` is cached, or None for a run without a directory."""
    from ...rundir import RunDir

    return RunDir(ctx.run.path).control(name) if ctx.run.path else None
