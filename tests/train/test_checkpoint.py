"""Checkpoints: atomic, verified on load; a damaged one, or a failed write, is one clear line."""
from __future__ import annotations

import errno
import os
import shutil

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.errors import UserError
from sparsecircuits.train import checkpoint as ckpt

from .conftest import snapshot, train_args


def _save(d, step, value=1.0):
    return ckpt.save_checkpoint(d, step, {"w": torch.full((4,), value)}, {"tokens": step})


def test_roundtrip_and_pruning(tmp_path):
    for step in (5, 10, 15):
        _save(tmp_path, step, float(step))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000010", "step_0000015"]
    path, tensors, meta = ckpt.load_latest(tmp_path)
    assert path.name == "step_0000015" and meta["step"] == 15 and meta["tokens"] == 15
    assert torch.equal(tensors["w"], torch.full((4,), 15.0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_order_is_numeric_past_seven_digits(tmp_path):
    _save(tmp_path, 9_999_999)
    _save(tmp_path, 10_000_000)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_10000000"


def test_resave_same_step_replaces_it(tmp_path):
    _save(tmp_path, 5, 1.0)
    _save(tmp_path, 5, 2.0)
    _, tensors, _ = ckpt.load_latest(tmp_path)
    assert torch.equal(tensors["w"], torch.full((4,), 2.0))


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_json", "bad_json", "no_tensors"])
def test_damaged_newest_is_an_error_naming_it_and_the_older_one(tmp_path, damage):
    _save(tmp_path, 5)
    newest = _save(tmp_path, 10)
    tensors = newest / ckpt.STATE_TENSORS
    if damage == "flip":
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:40])
    elif damage == "no_json":
        (newest / ckpt.STATE_JSON).unlink()
    elif damage == "bad_json":
        (newest / ckpt.STATE_JSON).write_text("{not json")
    else:
        tensors.unlink()
    with pytest.raises(UserError) as exc:
        ckpt.load_latest(tmp_path)
    msg = str(exc.value)
    assert str(newest) in msg and "corrupt" in msg and "step_0000005 is intact" in msg
    assert "\n" not in msg


def test_damaged_only_checkpoint_has_no_hint(tmp_path):
    only = _save(tmp_path, 5)
    (only / ckpt.STATE_TENSORS).write_bytes(b"")
    with pytest.raises(UserError, match="corrupt") as exc:
        ckpt.load_latest(tmp_path)
    assert "intact" not in str(exc.value)


def test_failed_write_keeps_previous_and_leaves_no_temp(tmp_path, monkeypatch):
    _save(tmp_path, 5, 5.0)

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(OSError):
        _save(tmp_path, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000005"]
    monkeypatch.undo()
    assert torch.equal(ckpt.load_latest(tmp_path)[1]["w"], torch.full((4,), 5.0))


def test_stale_temp_folder_is_ignored_then_cleaned(tmp_path):
    _save(tmp_path, 5)
    stale = tmp_path / ".step_0000010.abc"
    stale.mkdir()
    (stale / ckpt.STATE_TENSORS).write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000005"
    _save(tmp_path, 10)
    assert not stale.exists()


# -- through the CLI: exit 2, one line, nothing on disk changed ---------------------

@pytest.fixture
def stopped_run(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, "--stop-after", "10")) == 0
    return run


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_resume_from_damaged_checkpoint_changes_nothing(stopped_run, capsys, damage):
    newest = ckpt.latest_checkpoint(stopped_run / "checkpoints")
    assert newest.name == "step_0000010"
    f = newest / ckpt.STATE_TENSORS
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with open(stopped_run / "metrics.jsonl", "a") as fh:  # a line a resume would normally drop
        fh.write('{"step": 12, "train_loss": 1.0}\n')
    before = snapshot(stopped_run)
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(newest) in err[0] and "step_0000005 is intact" in err[0], err
    assert snapshot(stopped_run) == before


def test_full_disk_during_checkpoint_stops_with_one_line(stopped_run, monkeypatch, capsys):
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(str(dst)).startswith("step_"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "could not write the checkpoint at step 15" in err[0] and "No space left" in err[0]
    assert "step_0000010" in err[0]
    monkeypatch.undo()
    names = sorted(p.name for p in (stopped_run / "checkpoints").iterdir())
    assert names == ["step_0000005", "step_0000010"]
    assert ckpt.load_latest(stopped_run / "checkpoints")[2]["step"] == 10
    assert not (stopped_run / "model.safetensors").exists()


def test_full_disk_in_safetensors_write(stopped_run, monkeypatch, capsys):
    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert sorted(p.name for p in (stopped_run / "checkpoints").iterdir()) == ["step_0000005", "step_0000010"]


def test_resume_without_checkpoint_is_an_error(stopped_run, capsys):
    shutil.rmtree(stopped_run / "checkpoints")
    before = snapshot(stopped_run)
    assert main(["train", "--resume", str(stopped_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint found" in err[0]
    assert snapshot(stopped_run) == before


def test_new_run_refuses_existing_run_dir(stopped_run, tiny_data, capsys):
    before = snapshot(stopped_run)
    assert main(train_args(tiny_data, stopped_run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0]
    assert snapshot(stopped_run) == before
