"""`sparsecircuits check RUN_DIR --task T`: the faithfulness report card of a circuit.

Reads ``RUN_DIR/circuits/T/circuit.json``, runs the checks of
``sparsecircuits.analysis.faithfulness`` (thresholds in its docstring), stores them in
that file under ``"checks"`` and prints a table.  A flag is a finding, not a failure:
the exit code is 0 unless ``--strict`` is given and a check flags (then 1).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from ..analysis.faithfulness import CHECK_NAMES, RANDOM_DRAWS

    p = sub.add_parser("check", help="faithfulness report card of a pruned circuit",
                       description="Check a pruned circuit: necessity, sufficiency (also on shifted prompts), "
                                   "random and nonsense baselines, interchange, random-weights control, node roles, "
                                   "attention patterns.")
    p.add_argument("run_dir", type=Path, help="run directory holding circuits/TASK/circuit.json")
    p.add_argument("--task", required=True, help="the circuit's task (see `tasks list`), or a --tasks-file task's name")
    p.add_argument("--tasks-file", type=Path, default=None,
                   help="the JSONL examples a custom task was pruned on (needed for such a task)")
    p.add_argument("--checks", default=None,
                   help=f"comma-separated subset of: {', '.join(CHECK_NAMES)} (default: all that apply)")
    p.add_argument("--seed", type=int, default=0, help="seed for random circuits and shifted prompts")
    p.add_argument("--draws", type=int, default=RANDOM_DRAWS, help=f"random circuits (default {RANDOM_DRAWS})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--strict", action="store_true", help="exit with code 1 when any check flags")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _task_for(name: str, tasks_file: Path | None):
    """The built-in task, or a user task from its JSONL file (split as ``prune`` split it)."""
    from ..tasks.python_tasks import CONTROL_TASKS, TASKS, get_task
    from ..tasks.user import ExamplesTask

    if tasks_file is not None:
        from ..tasks.base import load_jsonl_examples

        return ExamplesTask(name, load_jsonl_examples(tasks_file))
    if name in TASKS or name in CONTROL_TASKS:
        return get_task(name)
    raise UserError(f"circuit task {name!r} is not a built-in task; pass the examples it was pruned on "
                    "with --tasks-file FILE")


def run(args: argparse.Namespace) -> int:
    from ..analysis.faithfulness import format_table, run_checks, write_checks
    from ..circuits.circuit import Circuit
    from ..run import load_run
    from ..rundir import RunDir

    path = RunDir(args.run_dir).circuit(args.task)
    if not args.run_dir.is_dir():
        raise UserError(f"run directory not found: {args.run_dir}")
    if not path.is_file():
        raise UserError(f"no circuit for task {args.task} in {args.run_dir} (expected {path}); "
                        f"prune one first with 'sparsecircuits prune {args.run_dir} --task {args.task}'")
    checks = [c.strip() for c in args.checks.split(",") if c.strip()] if args.checks else None
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but no CUDA GPU is available")
    circuit = Circuit.load(path)
    task = _task_for(circuit.task, args.tasks_file)
    run_ = load_run(args.run_dir, device=args.device)
    circuit.attach(run_)
    results = run_checks(run_, circuit, checks=checks, seed=args.seed, progress=not args.no_progress,
                         task=task, n_random=args.draws)
    write_checks(path, results)
    print(format_table(results))
    flagged = [n for n, r in results.items() if r["verdict"] != "pass"]
    print(f"{len(results) - len(flagged)} of {len(results)} checks pass"
          + (f"; flagged: {', '.join(flagged)}" if flagged else "") + f" -> {path}")
    return 1 if (args.strict and flagged) else 0
