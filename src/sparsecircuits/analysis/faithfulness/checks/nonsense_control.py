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
from ..context import CheckContext, result
from ..controls import control_circuit
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
    control = ctx.options.get("control")
    control = control if control is not None else CONTROL_TASK
    means = ctx.baseline if ctx.ablation == "mean" else None
    return control_circuit(ctx, _control_name(control), ctx.run, control, means=means)


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
