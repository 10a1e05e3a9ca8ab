"""Build a data dir: corpus -> tokenizer -> token shards, all or nothing.

    DATA/manifest.json   which files went in (path, bytes, sha256, split), which were skipped and why
    DATA/tokenizer.json  the byte-level BPE (HF tokenizers format)
    DATA/train.bin       uint16 token ids, files joined by <|endoftext|>
    DATA/val.bin         the same for the val files
    DATA/meta.json       settings, token counts, vocab size, sources

Everything is written into a hidden temp dir beside DATA, which is renamed into place
only when complete, so a crash or Ctrl-C leaves nothing half-built. A DATA that is
already complete with the same settings is reused without reading any source file
(so edits to the sources are not noticed: pass ``force=True`` to rebuild).

The tokenizer is trained on the train split only (val stays unseen), capped at
``TOKENIZER_TRAIN_BYTES`` of train files drawn at random with the seed; the whole
standard library's train split fits under the cap, so there it sees all of it.
"""
from __future__ import annotations

import hashlib
import os
import random
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Collection, Iterable

import tokenizers
from tqdm import tqdm

from ..config import DataConfig
from ..errors import UserError
from ..io import atomic_write_json, read_json
from .corpus import DEFAULT_MAX_FILE_BYTES, DEFAULT_VAL_FRAC, Corpus, collect_corpus, default_source_dirs
from .required_tokens import REQUIRED_TOKENS
from .shards import TOKEN_DTYPE, append_tokens
from .simple_python import GENERATOR_NAME, add_simple_python
from .tokenizer import EOT, eot_id, save_tokenizer, train_tokenizer

FORMAT_VERSION = 1
DATA_FILES = ("manifest.json", "tokenizer.json", "train.bin", "val.bin", "meta.json")
TOKENIZER_TRAIN_BYTES = 64_000_000
ENCODE_CHUNK_BYTES = 2_000_000

__all__ = ["build_data", "build_tiny_data", "default_data_dir", "ensure_default_data", "is_complete", "DATA_FILES"]


def default_data_dir(vocab_size: int = 2048, simple_bytes: int = 0) -> Path:
    """``$SPARSECIRCUITS_CACHE`` (or ``~/.cache/sparsecircuits``) / ``data-stdlib-v{vocab}``,
    or ``data-stdlib+simple{MB}M-v{vocab}`` with generated simple Python added."""
    root = os.environ.get("SPARSECIRCUITS_CACHE") or Path.home() / ".cache" / "sparsecircuits"
    name = "data-stdlib" + (f"+simple{simple_bytes / 1e6:g}M" if simple_bytes > 0 else "")
    return Path(root).expanduser() / f"{name}-v{vocab_size}"


def _settings(
    src_dirs: list[str], vocab_size: int, seed: int, val_frac: float, max_bytes: int | None, max_file_bytes: int,
    simple_bytes: int = 0, exclude: Collection[str] = (),
) -> dict:
    extra = {}
    if simple_bytes > 0:
        digest = hashlib.sha256("\0".join(sorted(exclude)).encode("utf-8")).hexdigest()
        extra = {"simple_bytes": simple_bytes, "simple_generator": GENERATOR_NAME, "simple_exclude_sha256": digest}
    return extra | {
        "format_version": FORMAT_VERSION,
        "sources": src_dirs,
        "vocab_size": vocab_size,
        "seed": seed,
        "val_frac": val_frac,
        "max_bytes": max_bytes,
        "max_file_bytes": max_file_bytes,
        "required_tokens": list(REQUIRED_TOKENS),
    }


def is_complete(out: Path, settings: dict | None = None) -> bool:
    """Whether ``out`` holds every data file, shard sizes match meta (and settings match)."""
    out = Path(out)
    if not all((out / name).is_file() for name in DATA_FILES):
        return False
    try:
        meta = read_json(out / "meta.json", "data meta")
        itemsize = TOKEN_DTYPE().itemsize
        for split in ("train", "val"):
            if (out / f"{split}.bin").stat().st_size != itemsize * int(meta[f"{split}_tokens"]):
                return False
    except (UserError, KeyError, TypeError, ValueError, OSError):
        return False
    return settings is None or meta.get("settings") == settings


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that holds anything but our own data files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a directory: {out}")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DATA_FILES)
        if foreign:
            raise UserError(f"output dir {out} holds other files ({', '.join(foreign[:3])}); choose an empty or new dir")


def _tokenizer_texts(corpus: Corpus, seed: int) -> list[str]:
    train = corpus.split("train")
    if sum(f.nbytes for f in train) <= TOKENIZER_TRAIN_BYTES:
        return [f.text for f in train]
    order = list(range(len(train)))
    random.Random(f"tokenizer:{seed}").shuffle(order)
    texts, total = [], 0
    for i in order:
        if total + train[i].nbytes > TOKENIZER_TRAIN_BYTES:
            continue
        texts.append(train[i].text)
        total += train[i].nbytes
    return texts


def _chunks(texts: list[str], sizes: list[int], chunk_bytes: int) -> Iterable[tuple[list[str], int]]:
    start, total = 0, 0
    for i, n in enumerate(sizes):
        total += n
        if total >= chunk_bytes:
            yield texts[start : i + 1], total
            start, total = i + 1, 0
    if start < len(texts):
        yield texts[start:], total


def _write_split(tok: tokenizers.Tokenizer, corpus: Corpus, split: str, path: Path, bar: tqdm) -> int:
    """Encode one split's files with ``encode_batch`` (parallel, in Rust) into ``path``."""
    files = corpus.split(split)
    eot = eot_id(tok)
    written, first = 0, True
    with open(path, "wb") as fh:
        for texts, nbytes in _chunks([f.text for f in files], [f.nbytes for f in files], ENCODE_CHUNK_BYTES):
            encodings = tok.encode_batch(texts, add_special_tokens=False)
            n, first = append_tokens(fh, (e.ids for e in encodings), eot, first)
            written += n
            bar.update(nbytes)
        fh.flush()
        os.fsync(fh.fileno())
    return written


def _build_into(tmp: Path, corpus: Corpus, settings: dict, vocab_size: int, seed: int, progress: bool) -> dict:
    started = time.time()
    manifest = corpus.manifest()
    atomic_write_json(tmp / "manifest.json", manifest)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"training BPE tokenizer (vocab {vocab_size}) on {len(corpus.split('train'))} train files ...")
    tok = train_tokenizer(_tokenizer_texts(corpus, seed), vocab_size=vocab_size, progress=progress and sys.stderr.isatty())
    save_tokenizer(tok, tmp / "tokenizer.json")
    trained = time.time()
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a source file is just text
    totals = manifest["totals"]
    counts = {}
    with tqdm(total=totals["bytes"], unit="B", unit_scale=True, desc="tokenizing", disable=not progress or None, file=sys.stderr) as bar:
        for split in ("train", "val"):
            counts[split] = _write_split(tok, corpus, split, tmp / f"{split}.bin", bar)
    meta = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "sources": [str(s) for s in corpus.sources],
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "eot_id": eot_id(tok),
        "eot": EOT,
        "dtype": "uint16",
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "train_files": totals["train_files"],
        "val_files": totals["val_files"],
        "train_bytes": totals["train_bytes"],
        "val_bytes": totals["val_bytes"],
        "skipped": manifest["skipped"],
        "build_seconds": round(time.time() - started, 2),
        "tokenizer_seconds": round(trained - started, 2),
        "python": sys.version.split()[0],
        "tokenizers_version": tokenizers.__version__,
    }
    atomic_write_json(tmp / "meta.json", meta)  # written last: its presence marks completion
    return meta


def build_data(
    src_dirs: list[str | os.PathLike] | None = None,
    out: str | os.PathLike | None = None,
    vocab_size: int = 2048,
    seed: int = 0,
    val_frac: float = DEFAULT_VAL_FRAC,
    max_bytes: int | None = None,
    progress: bool = True,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    force: bool = False,
    simple_bytes: int = 0,
    exclude: Collection[str] = (),
) -> Path:
    """Build (or reuse) a data dir from ``src_dirs`` (default: the standard library).

    ``out`` defaults to ``default_data_dir(vocab_size, simple_bytes)``. ``max_bytes`` caps
    the corpus to a seeded random subset of files (quick tests). ``simple_bytes`` adds that
    much generated simple Python (``data.simple_python``) to the train split, leaving out
    any generated module that contains a string of ``exclude`` (the held-out task prompts
    with their answers). Returns the data dir's path.
    """
    if simple_bytes < 0:
        raise UserError(f"simple-python bytes must be >= 0, got {simple_bytes}")
    out = Path(out).expanduser() if out is not None else default_data_dir(vocab_size, simple_bytes)
    out = out.absolute()
    if not 258 <= vocab_size <= 65536:
        raise UserError(f"vocab size must be between 258 and 65536, got {vocab_size}")
    if seed < 0:
        raise UserError(f"seed must be non-negative, got {seed}")
    # The default's resolved path goes into the settings too, so data built by another
    # Python (another standard library) is not mistaken for this one's.
    sources = default_source_dirs() if src_dirs is None else [Path(d).expanduser().resolve() for d in src_dirs]
    src_key = [str(p) for p in sources]
    settings = _settings(src_key, vocab_size, seed, val_frac, max_bytes, max_file_bytes, simple_bytes, exclude)
    if not force and is_complete(out, settings):
        return out
    corpus = collect_corpus(src_dirs, seed=seed, val_frac=val_frac, max_file_bytes=max_file_bytes, max_bytes=max_bytes)
    corpus = add_simple_python(corpus, simple_bytes, seed, exclude)
    _check_out(out)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # (not mkdtemp: its 0700 mode would stick to the finished dir)
    old = None
    try:
        _build_into(tmp, corpus, settings, vocab_size, seed, progress)
        if out.exists():
            if not force and is_complete(out, settings):  # another process finished first
                return out
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            old.mkdir()
            os.replace(out, old / "data")
        try:
            os.replace(tmp, out)
        except OSError:
            if is_complete(out, settings):  # lost a race with a concurrent build
                return out
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not out.exists() and (old / "data").exists():
                os.replace(old / "data", out)  # put the previous data back
            shutil.rmtree(old, ignore_errors=True)
    return out


def ensure_default_data(vocab_size: int = 2048, progress: bool = True, simple_bytes: int = 0,
                        exclude: Collection[str] = ()) -> Path:
    """The standard-library data dir (plus ``simple_bytes`` of generated simple Python,
    without ``exclude``) in the cache, built on first use."""
    return build_data(None, default_data_dir(vocab_size, simple_bytes), vocab_size=vocab_size,
                      progress=progress, simple_bytes=simple_bytes, exclude=exclude)


def require_data_dir(path: str | os.PathLike) -> Path:
    """``path`` resolved, or a UserError naming it when it holds no ``train.bin``."""
    path = Path(path).expanduser()
    if not (path / "train.bin").is_file():
        raise UserError(f"data directory {path} has no train.bin; build it with "
                        "'sparsecircuits data build --out DIR'")
    return path.resolve()


def resolve_data(data: DataConfig) -> Path:
    """The token-shard folder of a ``DataConfig``: its ``data_dir``, or the default (the
    stdlib, plus generated simple Python when ``simple_bytes`` asks for it) built on first
    use.  The generated code must not contain a held-out task prompt, and only the task
    suite knows those, hence the one import from above ``data``."""
    if data.data_dir:
        return require_data_dir(data.data_dir)
    exclude: set[str] = set()
    if data.simple_bytes > 0:
        from ..tasks.held_out import held_out_answers

        exclude = held_out_answers()
    return Path(ensure_default_data(vocab_size=data.vocab_size, simple_bytes=data.simple_bytes,
                                    exclude=exclude)).resolve()


def build_tiny_data(out: str | os.PathLike, max_bytes: int = 400_000, vocab_size: int = 512) -> Path:
    """A small data dir for tests: a fixed seeded subset of the standard library.

    About ``max_bytes`` of source, 10% of its files in val so val has a few thousand
    tokens; builds in a second or two.
    """
    return build_data(None, out, vocab_size=vocab_size, seed=0, val_frac=0.1, max_bytes=max_bytes, progress=False)
