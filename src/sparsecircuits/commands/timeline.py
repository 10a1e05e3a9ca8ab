"""`sparsecircuits timeline RUN --task T`: the task's circuit at every kept training step.

Needs a run trained with ``--set train.keep_checkpoints=N``.  Each kept step is pruned on
its own weights (``analysis/timeline.py``); its circuit goes to
``RUN/kept/step_NNNNNNN/circuits/T/circuit.json`` and the timeline (accuracy, circuit size,
overlaps and each node's persistence across steps) to ``RUN/timelines/T.json``, which the
report plots.  Running it again reuses every step's circuit pruned the same way.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ABLATIONS, LEARNED_ACCURACY, TARGET_LOSS
from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="prune a task at every kept training checkpoint",
                       description="Prune a task at every checkpoint kept during training "
                                   "(train.keep_checkpoints) and write how its circuit formed.")
    p.add_argument("run_dir", type=Path, help="run directory (runs/NAME)")
    p.add_argument("--task", required=True, help="built-in task name (see 'sparsecircuits tasks list')")
    p.add_argument("--target-loss", type=float, default=TARGET_LOSS,
                   help=f"task loss each circuit must reach (default {TARGET_LOSS})")
    p.add_argument("--ablation", choices=ABLATIONS, default="mean", help="how pruned nodes are replaced")
    p.add_argument("--steps", type=int, default=None, help="mask optimisation steps per k_coef (default: built in)")
    p.add_argument("--k-coefs", default=None, help="comma-separated sparsity penalties to sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--at", default=None, metavar="STEP,STEP",
                   help="only these training steps (default: every kept one)")
    p.add_argument("--force", action="store_true",
                   help=f"also prune steps where the model is below {LEARNED_ACCURACY * 100:.0f}%% accurate "
                        "(their circuits are marked forced)")
    p.add_argument("--threads", type=int, default=0, help="torch threads while pruning (default: torch's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a pruning setting, as for prune --set (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _steps_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--at expects comma-separated step numbers, got {text!r}") from None
    if not steps:
        raise UserError("--at is empty")
    return steps


def _cell(value, fmt: str) -> str:
    """``value`` in ``fmt`` (a width first, e.g. ``7.3f``), or a dash in the same width."""
    width = int(fmt.split(".")[0].rstrip("d%f") or 0)
    return f"{'-':>{width}}" if value is None else format(value, fmt)


def run(args: argparse.Namespace) -> int:
    from ..analysis.timeline import timeline
    from ..tasks.python_tasks import get_task
    from .prune import _k_coefs, settings_overrides

    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    get_task(args.task)  # an unknown name fails before any model is loaded
    record, path = timeline(args.run_dir, args.task, seed=args.seed, force=args.force, progress=not args.no_progress,
                            at=_steps_list(args.at), target_loss=args.target_loss, ablation=args.ablation,
                            steps=args.steps, k_coefs=_k_coefs(args.k_coefs), threads=args.threads,
                            **settings_overrides(args.overrides))
    print(f"{'step':>8} {'full acc':>8} {'nodes':>6} {'edges':>7} {'loss':>7} {'J prev':>7} {'J last':>7}")
    for r in record["steps"]:
        print(f"{r['step']:>8} {_cell(r.get('full_accuracy'), '8.0%')} {_cell(r.get('n_nodes'), '6d')} "
              f"{_cell(r.get('n_edges'), '7d')} {_cell(r.get('circuit_loss'), '7.3f')} "
              f"{_cell(r.get('jaccard_previous'), '7.2f')} {_cell(r.get('jaccard_last'), '7.2f')}"
              + ("  (not learned: not pruned)" if not r["pruned"] else "  forced" if r.get("forced") else ""))
    pruned = sum(1 for r in record["steps"] if r["pruned"])
    core = sum(1 for n in record["nodes"] if n["persistence"] == 1.0)
    print(f"{args.task}: {pruned} of {len(record['steps'])} kept steps pruned; {core} node(s) in every pruned "
          f"circuit, {len(record['nodes'])} in any -> {path}")
    return 0
