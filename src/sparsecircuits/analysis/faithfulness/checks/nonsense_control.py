"""nonsense_control: pruning reaches a low loss even on a task the model cannot do, so a
real circuit must be much smaller than one pruned, the same way, for nonsense.

The control (``nonsense_name_when`` unless ``run_checks(control=...)`` gives a task name
or a ``TaskItem`` list) is pruned with the circuit's own settings, seed and ablation,
forced, and cached in the run directory per control.  The value is min over nodes and
edges of size(nonsense) / size(circuit); it passes at 2 or more, or when the nonsense
pruning never reached the target at all.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from ....circuits.circuit import Circuit
from ....config import PruneSettings
from ....errors import UserError
from ..context import CheckContext, result
from ..registry import register

NONSENSE_MIN_RATIO = 2.0
CONTROL_TASK = "nonsense_name_when"


def _control_name(control) -> str:
    """The name a nonsense control is cached under: its task name, or for a list of items
    a digest of them, so that two controls never share a cached circuit."""
    if isinstance(control, str):
        return control
    text = json.dumps([asdict(x) for x in control], sort_keys=True)
    return "custom-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _control_circuit(ctx: CheckContext) -> Circuit:
    """The nonsense task pruned with the circuit's own settings (cached in the run dir)."""
    from ....circuits.prune import prune
    from ....rundir import RunDir, circuit_key

    s = {**asdict(PruneSettings()), **ctx.settings}
    s["target_loss"] = ctx.target
    s["ablation"] = ctx.ablation
    control = ctx.options.get("control")
    control = control if control is not None else CONTROL_TASK
    name = _control_name(control)
    run_dir = RunDir(ctx.run.path) if ctx.run.path else None
    path = run_dir.control(name) if run_dir is not None else None
    if path is not None:
        cached = run_dir.fresh_circuit(path, circuit_key(name, ctx.prune_seed, s))
        if cached is not None:
            try:
                return Circuit.from_json(cached, source=str(path))
            except UserError:
                pass  # not a circuit after all: pruned again below and replaced
    means = ctx.baseline if ctx.ablation == "mean" else None
    circ = prune(ctx.run, control, target_loss=ctx.target, ablation=ctx.ablation, steps=int(s["steps"]),
                 seed=ctx.prune_seed, force=True, k_coefs=list(s["k_coefs"]), n_train=int(s["n_train"]),
                 n_test=int(s["n_test"]), progress=ctx.progress, name=name, means=means,
                 curve_points=0)  # a control's loss-vs-size curve is never shown: not worth its time
    if path is not None and run_dir.path.is_dir():
        try:
            circ.save(path)
        except OSError:
            pass  # a read-only run directory: the control is simply pruned again next time
    return circ


@register("nonsense_control", order=50)
def check_nonsense_control(ctx: CheckContext) -> dict:
    ctrl = _control_circuit(ctx)
    real_n, real_e = ctx.circuit.n_nodes, ctx.circuit.n_edges
    ctrl_n, ctrl_e = ctrl.n_nodes, ctrl.n_edges
    r_nodes = ctrl_n / max(real_n, 1)
    r_edges = ctrl_e / max(real_e, 1)
    value = min(r_nodes, r_edges)
    met = bool(ctrl.metrics.get("target_met", True))
    note = "" if met else " (the nonsense circuit never reached the target, so it cannot pass as a real one)"
    return result(value, NONSENSE_MIN_RATIO, (not met) or value >= NONSENSE_MIN_RATIO,
                  f"nonsense/real: nodes {ctrl_n}/{real_n} = {r_nodes:.2f}x, edges {ctrl_e}/{real_e} = "
                  f"{r_edges:.2f}x; nonsense loss {ctrl.metrics.get('circuit_loss', float('nan')):.3f}{note}",
                  {"nodes_ratio": r_nodes, "edges_ratio": r_edges, "nonsense_nodes": ctrl_n, "nonsense_edges": ctrl_e,
                   "real_nodes": real_n, "real_edges": real_e, "nonsense_target_met": met})
