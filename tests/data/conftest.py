"""Fixtures for the data pipeline tests: one tiny stdlib build, small source trees."""
from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from sparsecircuits.data.build import build_tiny_data
from sparsecircuits.data.tokenizer import load_tokenizer

# Small modules present in every CPython; copied to build quick, realistic corpora.
STDLIB_SAMPLES = [
    "bisect.py", "colorsys.py", "copy.py", "fnmatch.py", "glob.py", "keyword.py",
    "textwrap.py", "shlex.py", "queue.py", "sched.py", "netrc.py", "heapq.py",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_data(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_tok(tiny_data):
    return load_tokenizer(tiny_data / "tokenizer.json")


def _read_samples() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [(root / name).read_text(encoding="utf-8") for name in STDLIB_SAMPLES]


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    return _read_samples()


@pytest.fixture
def src_tree(tmp_path) -> Path:
    """A source dir of a dozen real stdlib modules."""
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    for i, text in enumerate(_read_samples()):
        where = root / "pkg" if i % 2 else root
        (where / STDLIB_SAMPLES[i]).write_text(text, encoding="utf-8")
    return root
