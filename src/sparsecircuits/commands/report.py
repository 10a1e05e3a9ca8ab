"""`sparsecircuits report RUN_DIR`: write the run's self-contained HTML report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run (RUN_DIR/report/)")
    p.add_argument("run_dir", type=Path, help="a run directory (holds config.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.html import build_report

    index, problems = build_report(args.run_dir)
    for problem in problems:
        sys.stderr.write(f"sparsecircuits: warning: {problem}\n")
    n_pages = len(list(index.parent.glob("circuit-*.html")))
    print(index)
    sys.stderr.write(f"report: index and {n_pages} circuit page(s) in {index.parent}\n")
    return 0
