"""``sparsecircuits data build``: Python sources -> tokenizer + token shards."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build the tokenizer and token shards from Python sources")
    sub = parser.add_subparsers(dest="data_command", parser_class=type(parser))
    build = sub.add_parser(
        "build",
        help="collect *.py files, train the BPE tokenizer, write train.bin / val.bin",
        description="Collect every *.py under --src (default: this Python's standard library), "
        "train a byte-level BPE on the train files and write uint16 token shards. "
        "An existing complete build with the same settings is reused.",
    )
    build.add_argument("--src", action="append", metavar="DIR", help="source directory (repeatable; default: the standard library)")
    build.add_argument("--out", metavar="DATA_DIR", help="output data dir (default: the cache, data-stdlib-v{vocab})")
    build.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size (default 2048)")
    build.add_argument("--seed", type=int, default=0, help="seed for the train/val split (default 0)")
    build.add_argument("--val-frac", type=float, default=None, help="fraction of files in val (default 0.03)")
    build.add_argument("--max-bytes", type=int, default=None, help="cap the corpus to a random subset of this many bytes")
    build.add_argument("--simple-bytes", type=int, default=0, metavar="N",
                       help="add N bytes of generated simple Python to the train split (default 0)")
    build.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    build.add_argument("--no-progress", action="store_true", help="no progress output")
    build.set_defaults(func=run_build)
    leaks = sub.add_parser(
        "check-leaks",
        help="look for held-out task prompts (with their answers) verbatim in the train split",
        description="Decode DATA_DIR's train split and search it for every held-out task prompt "
        "followed by its correct answer. Exit 0 when none is found, 1 when some are.",
    )
    leaks.add_argument("data_dir", metavar="DATA_DIR")
    leaks.add_argument("--n", type=int, default=200, help="held-out items per task (default 200)")
    leaks.add_argument("--json", action="store_true", help="print the full report as JSON")
    leaks.set_defaults(func=run_check_leaks)
    parser.set_defaults(func=lambda args: _missing_subcommand(parser))


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_build(args: argparse.Namespace) -> int:
    from ..data.build import build_data
    from ..data.corpus import DEFAULT_VAL_FRAC

    started = time.time()
    exclude: set[str] = set()
    if args.simple_bytes > 0:
        from ..tasks.held_out import held_out_answers

        exclude = held_out_answers()
    out = build_data(
        src_dirs=args.src,
        out=Path(args.out) if args.out else None,
        vocab_size=args.vocab_size,
        seed=args.seed,
        val_frac=DEFAULT_VAL_FRAC if args.val_frac is None else args.val_frac,
        max_bytes=args.max_bytes,
        progress=not args.no_progress,
        force=args.force,
        simple_bytes=args.simple_bytes,
        exclude=exclude,
    )
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # pragma: no cover - build_data just wrote it
        raise UserError(f"cannot read {out / 'meta.json'}: {exc}") from None
    files = meta["train_files"] + meta["val_files"]
    print(
        f"data: {files} files ({meta['train_files']} train, {meta['val_files']} val), "
        f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
        f"vocab {meta['vocab_size']}, {time.time() - started:.1f}s -> {out}"
    )
    return 0


def run_check_leaks(args: argparse.Namespace) -> int:
    from ..data.build import require_data_dir
    from ..data.leaks import find_leaks
    from ..tasks.python_tasks import TASKS

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    report = find_leaks(require_data_dir(args.data_dir), TASKS, n_items=args.n)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    for name, found in report.leaks.items():
        for s in found[:3]:
            print(f"leak in {name}: {s!r}")
    checked = sum(report.checked.values())
    print(f"leak check: {report.n_leaks} of {checked} held-out prompts (with answers) found in "
          f"{report.train_tokens:,} train tokens")
    return 1 if report.n_leaks else 0
