"""`sparsecircuits report RUN_DIR`: write the run's self-contained HTML report.

`sparsecircuits report --compare A/circuit.json B/circuit.json [--out F]`: one page with
the two circuits side by side, nodes in both marked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run (RUN_DIR/report/)")
    p.add_argument("run_dir", type=Path, nargs="?", help="a run directory (holds config.json)")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("CIRCUIT_A", "CIRCUIT_B"),
                   help="instead: one page with two circuit.json files side by side")
    p.add_argument("--out", type=Path, default=Path("compare.html"),
                   help="the comparison page to write (default: compare.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..report.html import build_report, write_compare

    if args.compare:
        if args.run_dir is not None:
            raise UserError("give either a run directory or --compare A B, not both")
        out = write_compare(args.compare[0], args.compare[1], args.out)
        print(out)
        sys.stderr.write(f"report: {args.compare[0]} and {args.compare[1]} side by side in {out}\n")
        return 0
    if args.run_dir is None:
        raise UserError("report needs a run directory (or --compare CIRCUIT_A CIRCUIT_B)")
    index, problems = build_report(args.run_dir)
    for problem in problems:
        sys.stderr.write(f"sparsecircuits: warning: {problem}\n")
    n_pages = len(list(index.parent.glob("circuit-*.html")))
    print(index)
    sys.stderr.write(f"report: index and {n_pages} circuit page(s) in {index.parent}\n")
    return 0
