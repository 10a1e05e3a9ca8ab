"""The one entry point: ``sparsecircuits <command>``.

Thin by design: each command lives in ``sparsecircuits.commands.<module>``, which
provides ``register(subparsers)``; the registered handler is ``args.func(args)``.
A ``UserError`` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

# Order here is the order in `--help`.
COMMAND_MODULES = [
    "data",
    "train",
    "evaluate",
    "sample",
    "tasks",
    "prune",
    "check",
    "timeline",
    "report",
    "view",
    "frontier",
    "openai",
    "export",
    "bridge",
    "demo",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (argparse's own code)."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised via CLI tests
        sys.stderr.write(f"sparsecircuits: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsecircuits", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"sparsecircuits.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sparsecircuits.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        sys.stderr.write(f"sparsecircuits: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("sparsecircuits: interrupted\n")
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
