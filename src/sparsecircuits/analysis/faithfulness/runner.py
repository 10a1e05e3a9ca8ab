"""Running the report card: pick the checks that apply, run them, print and store them."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from ...circuits.circuit import Circuit
from ...circuits.frozen import kernel_sites
from ...circuits.lanes import default_lanes, spread
from ...errors import UserError
from ...io import to_jsonable
from ...tasks.base import TaskItem
from .checks.random_baseline import RANDOM_DRAWS
from .context import CheckContext
from .registry import all_checks


def check_names() -> tuple[str, ...]:
    """Every check, in report-card order."""
    return tuple(c.name for c in all_checks())


def default_checks(task_name: str) -> list[str]:
    """Every check that applies to a task (the bracket probes only to bracket_counting)."""
    return [c.name for c in all_checks() if c.applies_to(task_name)]


def _chosen(checks: Sequence[str] | None, task_name: str) -> list[str]:
    if checks is None:
        return default_checks(task_name)
    names = list(checks)
    known = {c.name: c for c in all_checks()}
    unknown = [c for c in names if c not in known]
    if unknown:
        raise UserError(f"unknown check(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    misfit = [known[c] for c in names if not known[c].applies_to(task_name)]
    if misfit:
        tasks = sorted({t for c in misfit for t in c.tasks})
        raise UserError(f"the {' and '.join(c.name for c in misfit)} check(s) apply to {', '.join(tasks)} only")
    return names


def run_checks(run, circuit: Circuit, checks: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
               *, task=None, variants: dict[str, list[TaskItem]] | None = None, control=None,
               means: torch.Tensor | None = None, n_random: int = RANDOM_DRAWS) -> dict:
    """Run the report card's checks on ``circuit`` (pruned from ``run``'s model).

    Returns ``{name: {"value", "threshold", "verdict", "detail"[, "data"]}}`` for every
    check that could run (a check with nothing to measure, such as shifted variants that
    no prompt of which fits the context, is left out and said so on stderr).

    ``checks`` picks a subset of ``CHECK_NAMES`` (default: all that apply).  ``task`` is a
    ``Task`` (anything with ``generate(n, seed, split)``) for a circuit of a custom task;
    ``variants`` replaces the shifted variants (``{name: [TaskItem]}``); ``control`` the
    nonsense control (a task name or ``TaskItem`` list); ``means`` the node means.
    """
    if task is None:
        from ...tasks.python_tasks import get_task

        task = get_task(circuit.task)
    task_name = getattr(task, "name", None) or circuit.task
    names = _chosen(checks, task_name)
    if n_random < 1:
        raise UserError(f"random draws must be >= 1, got {n_random}")
    circuit.attach(run)
    ctx = CheckContext(run, circuit, task, seed, means, progress, n_random=n_random, variants=variants,
                       control=control)
    fns = {c.name: c.fn for c in all_checks()}
    from tqdm.auto import tqdm

    out: dict[str, dict] = {}
    bar = tqdm(names, desc=f"check {task_name}", disable=None if progress else True, leave=False,
               dynamic_ncols=True)
    try:
        with kernel_sites(run.model), spread(run.model, default_lanes(0)):  # masked passes side by side
            for name in bar:
                bar.set_postfix_str(name, refresh=True)
                r = fns[name](ctx)
                if r is None:
                    if progress:
                        sys.stderr.write(f"check {name}: nothing to measure (no prompt fits the model); left out\n")
                    continue
                out[name] = r
    finally:
        bar.close()
    return out


def format_table(checks: dict) -> str:
    """A plain-text table of check results, one row per check."""
    rows = [("check", "value", "threshold", "verdict", "detail")]
    for name, r in checks.items():
        rows.append((name, f"{r['value']:.3f}", f"{r['threshold']:.3f}", r["verdict"].upper(), r["detail"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(lines)


def write_checks(circuit_path: str | Path, checks: dict, merge: bool = True) -> None:
    """Store ``checks`` in a circuit file under the top-level key ``"checks"`` (atomic)."""
    from ...io import atomic_write_json, read_json

    path = Path(circuit_path)
    obj = read_json(path, what="circuit file")
    if not isinstance(obj, dict):
        raise UserError(f"{path}: malformed circuit JSON: expected a JSON object")
    old = obj.get("checks") if merge and isinstance(obj.get("checks"), dict) else {}
    obj["checks"] = to_jsonable({**old, **checks})
    atomic_write_json(path, obj)
