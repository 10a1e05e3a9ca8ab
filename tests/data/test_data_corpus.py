"""Corpus collection: deterministic, deduplicated, skips counted, split by file at random."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

from sparsecircuits.data.corpus import (
    EXCLUDED_DIR_NAMES,
    _walk_py_files,
    collect_corpus,
    default_source_dirs,
)
from sparsecircuits.errors import UserError


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


@pytest.fixture
def messy_tree(tmp_path) -> Path:
    root = tmp_path / "messy"
    for i in range(6):
        _write(root / f"m{i}.py", f"def f{i}(x):\n    return x + {i}\n")
    _write(root / "pkg" / "copy_of_m0.py", "def f0(x):\n    return x + 0\n")  # duplicate of m0
    _write(root / "latin1.py", "s = 'caf\xe9'\n".encode("latin-1"))  # not UTF-8
    _write(root / "big.py", "x = 1\n" * 100)  # 600 bytes, over max_file_bytes=500
    _write(root / "empty.py", "\n  \n")
    _write(root / "notes.txt", "not python")
    os.symlink(root / "gone.py", root / "broken.py")  # unreadable
    return root


def test_collect_is_deterministic(messy_tree):
    a = collect_corpus([messy_tree], max_file_bytes=500).manifest()
    b = collect_corpus([messy_tree], max_file_bytes=500).manifest()
    assert a == b


def test_skipped_files_are_counted_by_reason(messy_tree):
    corpus = collect_corpus([messy_tree], max_file_bytes=500)
    manifest = corpus.manifest()
    assert manifest["skipped"] == {
        "duplicate": 1, "empty": 1, "too_large": 1, "unreadable": 1, "not_utf8": 1, "over_max_bytes": 0,
    }
    assert sorted(f["path"] for f in manifest["files"]) == [f"m{i}.py" for i in range(6)]
    assert {s["path"]: s["reason"] for s in manifest["skipped_files"]} == {
        "big.py": "too_large", "broken.py": "unreadable", "empty.py": "empty", "latin1.py": "not_utf8",
    }
    assert manifest["totals"]["files"] == 6
    assert manifest["totals"]["bytes"] == sum(f["bytes"] for f in manifest["files"])


def test_duplicates_keep_the_first_path_in_sorted_order(tmp_path):
    _write(tmp_path / "b.py", "x = 1\n")
    _write(tmp_path / "a" / "z.py", "x = 1\n")
    _write(tmp_path / "c.py", "y = 2\n")
    corpus = collect_corpus([tmp_path])
    assert [f.rel for f in corpus.files] == ["a/z.py", "c.py"]
    assert [(s.rel, s.reason) for s in corpus.skipped] == [("b.py", "duplicate")]


def test_manifest_records_hash_bytes_and_split(messy_tree):
    corpus = collect_corpus([messy_tree], max_file_bytes=500)
    entry = corpus.manifest()["files"][0]
    assert set(entry) == {"source", "path", "bytes", "sha256", "split"}
    assert entry["bytes"] == (messy_tree / entry["path"]).stat().st_size
    assert len(entry["sha256"]) == 64


@pytest.fixture
def many_files(tmp_path) -> Path:
    for i in range(100):
        _write(tmp_path / f"mod_{i:03d}.py", f"VALUE = {i}\n")
    return tmp_path


def test_split_is_by_file_random_and_disjoint(many_files):
    corpus = collect_corpus([many_files], val_frac=0.05, seed=0)
    val = {f.rel for f in corpus.split("val")}
    train = {f.rel for f in corpus.split("train")}
    assert len(val) == 5 and len(train) == 95
    assert not val & train
    assert val | train == {f"mod_{i:03d}.py" for i in range(100)}
    tail = {f"mod_{i:03d}.py" for i in range(95, 100)}
    assert val != tail  # not the alphabetical tail
    again = {f.rel for f in collect_corpus([many_files], val_frac=0.05, seed=0).split("val")}
    other = {f.rel for f in collect_corpus([many_files], val_frac=0.05, seed=1).split("val")}
    assert again == val and other != val


def test_two_files_give_one_train_one_val(tmp_path):
    _write(tmp_path / "a.py", "a = 1\n")
    _write(tmp_path / "b.py", "b = 2\n")
    corpus = collect_corpus([tmp_path], val_frac=0.03)
    assert len(corpus.split("train")) == 1 and len(corpus.split("val")) == 1


def test_max_bytes_caps_the_corpus(many_files):
    corpus = collect_corpus([many_files], max_bytes=200)
    assert 0 < corpus.manifest()["totals"]["bytes"] <= 200
    assert corpus.manifest()["skipped"]["over_max_bytes"] == 100 - len(corpus.files)


@pytest.mark.parametrize("make", ["missing", "empty", "only_bad", "file"])
def test_bad_sources_are_user_errors(tmp_path, make):
    src = tmp_path / "src"
    if make == "empty":
        src.mkdir()
    elif make == "only_bad":
        _write(src / "x.py", b"\xff\xfe")
        _write(src / "y.py", "")
    elif make == "file":
        _write(src, "x = 1\n")
    with pytest.raises(UserError):
        collect_corpus([src])


def test_bad_val_fraction_is_a_user_error(many_files):
    with pytest.raises(UserError, match="val fraction"):
        collect_corpus([many_files], val_frac=0.0)


def test_default_source_is_the_stdlib_without_site_packages(tmp_path):
    assert default_source_dirs() == [Path(sysconfig.get_paths()["stdlib"]).resolve()]
    _write(tmp_path / "os2.py", "x = 1\n")
    _write(tmp_path / "site-packages" / "third_party.py", "y = 1\n")
    _write(tmp_path / "dist-packages" / "other.py", "z = 1\n")
    _write(tmp_path / "test" / "test_x.py", "w = 1\n")
    assert _walk_py_files(tmp_path, EXCLUDED_DIR_NAMES) == ["os2.py", "test/test_x.py"]


def test_tiny_stdlib_manifest_has_no_site_packages(tiny_data):
    import json

    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert manifest["files"] and not any("site-packages" in f["path"] for f in manifest["files"])
