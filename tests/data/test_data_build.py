"""Building a data dir: complete or absent, reused when unchanged, CLI errors are one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import sparsecircuits.data.build as build_mod
from sparsecircuits.cli import main
from sparsecircuits.data.build import DATA_FILES, build_data, build_tiny_data, default_data_dir, is_complete
from sparsecircuits.data.shards import TokenShards
from sparsecircuits.errors import UserError


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_tiny_build_is_complete_and_consistent(tiny_data):
    assert sorted(p.name for p in tiny_data.iterdir()) == sorted(DATA_FILES)
    assert is_complete(tiny_data)
    meta = json.loads((tiny_data / "meta.json").read_text())
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert meta["train_files"] == manifest["totals"]["train_files"] > meta["val_files"] >= 1
    assert (tiny_data / "train.bin").stat().st_size == 2 * meta["train_tokens"]
    assert manifest["totals"]["bytes"] <= 400_000
    assert not [p for p in tiny_data.parent.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_complete_build_is_reused(tiny_data):
    before = _snapshot(tiny_data)
    assert build_tiny_data(tiny_data) == tiny_data
    assert _snapshot(tiny_data) == before


def test_crash_leaves_nothing_and_keeps_a_previous_build(tmp_path, src_tree, monkeypatch):
    out = tmp_path / "data"

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(build_mod, "_write_split", boom)
    with pytest.raises(RuntimeError):
        build_data([src_tree], out, vocab_size=520, progress=False)
    assert list(tmp_path.iterdir()) == [src_tree.parent / "src"]  # no out, no temp dir
    monkeypatch.undo()

    build_data([src_tree], out, vocab_size=520, progress=False)
    before = _snapshot(out)
    monkeypatch.setattr(build_mod, "_write_split", boom)
    with pytest.raises(RuntimeError):
        build_data([src_tree], out, vocab_size=520, seed=1, progress=False)  # new settings: rebuild
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]


def test_new_settings_rebuild_in_place(tmp_path, src_tree):
    out = tmp_path / "data"
    build_data([src_tree], out, vocab_size=520, seed=0, progress=False)
    first = json.loads((out / "manifest.json").read_text())
    build_data([src_tree], out, vocab_size=520, seed=5, progress=False)
    second = json.loads((out / "manifest.json").read_text())
    assert first["settings"]["seed"] == 0 and second["settings"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]


def test_literal_eot_in_a_source_file_is_plain_text(tmp_path, src_tree):
    (src_tree / "eot.py").write_text('SEP = "<|endoftext|>"\n' * 50)
    out = build_data([src_tree], tmp_path / "data", vocab_size=520, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    shards = TokenShards(out)
    eots = int((shards.train == shards.eot_id).sum() + (shards.val == shards.eot_id).sum())
    assert meta["train_files"] + meta["val_files"] == 13
    assert eots == 13 - 2  # one between consecutive files of each split, none from the text


def test_refuses_to_replace_a_foreign_dir(tmp_path, src_tree):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="other files"):
        build_data([src_tree], out, vocab_size=520, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_default_data_dir_honours_the_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSECIRCUITS_CACHE", str(tmp_path))
    assert default_data_dir(1024) == tmp_path / "data-stdlib-v1024"
    monkeypatch.delenv("SPARSECIRCUITS_CACHE")
    assert default_data_dir() == Path.home() / ".cache" / "sparsecircuits" / "data-stdlib-v2048"


def test_cli_build_prints_one_summary_line(tmp_path, src_tree, capsys):
    out = tmp_path / "data"
    rc = main(["data", "build", "--src", str(src_tree), "--out", str(out), "--vocab-size", "520", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and "12 files" in lines[0] and str(out) in lines[0]
    assert is_complete(out)


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_cli_bad_source_exits_2_and_leaves_out_untouched(tmp_path, tiny_data, capsys, problem):
    src = tmp_path / "src"
    if problem == "empty":
        src.mkdir()
    before = _snapshot(tiny_data)
    rc = main(["data", "build", "--src", str(src), "--out", str(tiny_data), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and str(src) in err
    assert "Traceback" not in err
    assert _snapshot(tiny_data) == before
