"""Collect Python source files into a corpus with a train/val split by file.

Defaults to this Python's own standard library (tests included: they are real code
too), which every machine that runs us has. The split is by *file*, drawn at random
with a seed, so no file contributes to both sides and val is not the alphabetical tail
(which would be all of ``xml/`` and ``zoneinfo/``).

Everything is deterministic: paths are walked in sorted order, duplicates (same
sha256) keep their first occurrence, and the random draws depend only on the seed
and the list of kept files.
"""
from __future__ import annotations

import hashlib
import os
import random
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import UserError

DEFAULT_VAL_FRAC = 0.03
DEFAULT_MAX_FILE_BYTES = 1_000_000
EXCLUDED_DIR_NAMES = ("site-packages", "dist-packages")
SKIP_REASONS = ("duplicate", "empty", "too_large", "unreadable", "not_utf8", "over_max_bytes")


@dataclass(frozen=True)
class CorpusFile:
    """One kept source file; ``rel`` is relative to its source dir (POSIX slashes)."""

    source: int
    rel: str
    text: str
    nbytes: int
    sha256: str
    split: str = "train"


@dataclass(frozen=True)
class SkippedFile:
    source: int
    rel: str
    reason: str


@dataclass
class Corpus:
    sources: list[Path]
    files: list[CorpusFile]
    skipped: list[SkippedFile] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def split(self, name: str) -> list[CorpusFile]:
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {name!r}")
        return [f for f in self.files if f.split == name]

    def manifest(self) -> dict:
        """A JSON-ready record of what went in, what was left out and why."""
        counts = {reason: 0 for reason in SKIP_REASONS}
        for s in self.skipped:
            counts[s.reason] += 1
        totals = {"files": len(self.files), "bytes": sum(f.nbytes for f in self.files)}
        for name in ("train", "val"):
            part = self.split(name)
            totals[f"{name}_files"] = len(part)
            totals[f"{name}_bytes"] = sum(f.nbytes for f in part)
        return {
            "schema_version": 1,
            "sources": [str(s) for s in self.sources],
            "settings": self.settings,
            "totals": totals,
            "skipped": counts,
            "files": [
                {"source": f.source, "path": f.rel, "bytes": f.nbytes, "sha256": f.sha256, "split": f.split}
                for f in self.files
            ],
            "skipped_files": [
                {"source": s.source, "path": s.rel, "reason": s.reason}
                for s in self.skipped
                if s.reason != "duplicate"
            ],
        }


def default_source_dirs() -> list[Path]:
    """This interpreter's standard library directory."""
    return [Path(sysconfig.get_paths()["stdlib"]).resolve()]


def _walk_py_files(root: Path, exclude_dirs: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of every ``*.py`` under root, sorted; symlinked dirs not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.endswith(".py"):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def _resolve_sources(src_dirs: Iterable[str | os.PathLike] | None) -> tuple[list[Path], tuple[str, ...]]:
    if src_dirs is None:
        return default_source_dirs(), EXCLUDED_DIR_NAMES
    sources = []
    for d in src_dirs:
        path = Path(d).expanduser()
        if not path.exists():
            raise UserError(f"source directory not found: {path}")
        if not path.is_dir():
            raise UserError(f"source is not a directory: {path}")
        resolved = path.resolve()
        if resolved not in sources:
            sources.append(resolved)
    if not sources:
        raise UserError("no source directories given")
    return sources, ()


def _select_by_budget(files: list[CorpusFile], max_bytes: int, seed: int) -> tuple[list[CorpusFile], list[CorpusFile]]:
    """A seeded random subset that fits in ``max_bytes``, kept in sorted order."""
    order = list(range(len(files)))
    random.Random(f"budget:{seed}").shuffle(order)
    chosen, total = set(), 0
    for i in order:
        if total + files[i].nbytes <= max_bytes:
            chosen.add(i)
            total += files[i].nbytes
    kept = [f for i, f in enumerate(files) if i in chosen]
    left = [f for i, f in enumerate(files) if i not in chosen]
    return kept, left


def _assign_split(files: list[CorpusFile], val_frac: float, seed: int) -> list[CorpusFile]:
    n = len(files)
    n_val = min(n - 1, max(1, round(val_frac * n)))
    val = set(random.Random(f"split:{seed}").sample(range(n), n_val))
    return [
        CorpusFile(f.source, f.rel, f.text, f.nbytes, f.sha256, "val" if i in val else "train")
        for i, f in enumerate(files)
    ]


def collect_corpus(
    src_dirs: Iterable[str | os.PathLike] | None = None,
    *,
    seed: int = 0,
    val_frac: float = DEFAULT_VAL_FRAC,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_bytes: int | None = None,
) -> Corpus:
    """Read every ``*.py`` under ``src_dirs`` (default: the standard library).

    Skips, and counts by reason: duplicates by content, empty (whitespace-only) files,
    files over ``max_file_bytes``, unreadable files, non-UTF-8 files, and (when
    ``max_bytes`` caps the corpus, for quick tests) files outside a seeded random subset
    that fits the cap. Raises UserError for a missing directory or an empty corpus.
    """
    if not 0.0 < val_frac < 1.0:
        raise UserError(f"val fraction must be between 0 and 1, got {val_frac}")
    if max_file_bytes <= 0:
        raise UserError(f"max file size must be positive, got {max_file_bytes}")
    if max_bytes is not None and max_bytes <= 0:
        raise UserError(f"max corpus bytes must be positive, got {max_bytes}")
    sources, exclude = _resolve_sources(src_dirs)

    files: list[CorpusFile] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()
    for si, root in enumerate(sources):
        for rel in _walk_py_files(root, exclude):
            path = root / rel
            try:
                if path.stat().st_size > max_file_bytes:
                    skipped.append(SkippedFile(si, rel, "too_large"))
                    continue
                data = path.read_bytes()
            except OSError:
                skipped.append(SkippedFile(si, rel, "unreadable"))
                continue
            if len(data) > max_file_bytes:  # grew since stat
                skipped.append(SkippedFile(si, rel, "too_large"))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                skipped.append(SkippedFile(si, rel, "not_utf8"))
                continue
            if not text.strip():
                skipped.append(SkippedFile(si, rel, "empty"))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                skipped.append(SkippedFile(si, rel, "duplicate"))
                continue
            seen.add(digest)
            files.append(CorpusFile(si, rel, text, len(data), digest))

    if max_bytes is not None:
        files, left = _select_by_budget(files, max_bytes, seed)
        skipped.extend(SkippedFile(f.source, f.rel, "over_max_bytes") for f in left)

    where = ", ".join(str(s) for s in sources)
    if not files:
        raise UserError(f"no usable .py files under {where}")
    if len(files) < 2:
        raise UserError(f"only 1 usable .py file under {where}; need at least 2 for a train/val split")

    settings = {
        "seed": seed,
        "val_frac": val_frac,
        "max_file_bytes": max_file_bytes,
        "max_bytes": max_bytes,
        "excluded_dirs": list(exclude),
    }
    skipped.sort(key=lambda s: (s.source, s.rel))
    return Corpus(sources, _assign_split(files, val_frac, seed), skipped, settings)
