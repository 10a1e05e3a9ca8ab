"""`sparsecircuits demo`: the whole method in one command, reusing whatever is already built.

The stages live in ``sparsecircuits.pipeline``; this module only reads the arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="data -> train -> prune -> report, reusing what exists")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--extra-tasks", type=int, default=None,
                   help="at most this many learned tasks to prune besides the paper's two (default: all)")
    p.add_argument("--force-paper-tasks", action="store_true",
                   help="prune single_double_quote and bracket_counting even where the model has not learned "
                        "them (marked forced)")
    p.add_argument("--n", type=int, default=200, help="test items per task for scoring")
    p.add_argument("--data", type=Path, default=None,
                   help="token-shard folder (default: the stdlib, built once and cached)")
    p.add_argument("--prune-steps", type=int, default=None,
                   help="optimisation steps per k_coef when pruning (default: the pruner's own)")
    p.add_argument("--prune-items", type=int, default=None,
                   help="task pairs for pruning, and half as many held out (default: the pruner's own)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="tasks pruned at once, each in its own one-thread process (default: one per core)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..pipeline import DemoSettings, run_demo

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    run_demo(DemoSettings(out=args.out, preset=args.preset, sets=args.set, data=args.data,
                          extra_tasks=args.extra_tasks, n=args.n, prune_steps=args.prune_steps,
                          prune_items=args.prune_items, jobs=args.jobs,
                          force_paper_tasks=args.force_paper_tasks))
    return 0
