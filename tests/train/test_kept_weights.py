"""train.keep_checkpoints: the weights of evenly spaced steps, kept for circuits during training."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sparsecircuits.cli import main
from sparsecircuits.config import TrainConfig
from sparsecircuits.errors import UserError
from sparsecircuits.rundir import RunDir
from sparsecircuits.train.checkpoint import load_checkpoint

from .conftest import train_args, weights


def test_kept_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert TrainConfig(steps=40, keep_checkpoints=3).kept_steps() == [13, 26, 40]
    assert TrainConfig(steps=7, keep_checkpoints=7).kept_steps() == list(range(1, 8))
    assert TrainConfig(steps=40).kept_steps() == []
    for bad in (-1, 41):
        with pytest.raises(UserError, match="keep_checkpoints"):
            TrainConfig(steps=40, keep_checkpoints=bad).validate()


@pytest.fixture(scope="module")
def kept_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kept") / "run"
    assert main(train_args(tiny_data, out, "--set", "train.keep_checkpoints=4")) == 0
    return out


def test_kept_weights_are_the_weights_of_their_step(kept_run, reference_run):
    rd = RunDir(kept_run)
    assert rd.kept_steps() == [10, 20, 30, 40]
    final = weights(kept_run)
    # keeping weights changes nothing in training: the reference run has the same final weights
    ref = weights(reference_run)
    assert all(torch.equal(final[k], ref[k]) for k in ref)
    last = load_file(str(rd.kept(40).weights))
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)
    tensors, meta = load_checkpoint(kept_run / "checkpoints" / "step_0000040")
    assert meta["step"] == 40
    assert all(torch.equal(tensors[f"model.{k}"], final[k]) for k in final)
    middle = load_file(str(rd.kept(20).weights))
    assert any(not torch.equal(middle[k], final[k]) for k in final)  # an earlier model, not a copy


def test_a_resumed_run_keeps_the_same_weights(kept_run, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--set", "train.keep_checkpoints=4", "--stop-after", "15")) == 0
    assert RunDir(out).kept_steps() == [10]
    # stopped at 15, its resumable checkpoints are 10 and 15: the kept step is step 10's model
    tensors, _ = load_checkpoint(out / "checkpoints" / "step_0000010")
    kept10 = load_file(str(RunDir(out).kept(10).weights))
    assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in kept10.items())
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    for step in (10, 20, 30, 40):
        a = load_file(str(RunDir(out).kept(step).weights))
        b = load_file(str(RunDir(kept_run).kept(step).weights))
        assert all(torch.equal(a[k], b[k]) for k in b), step


def test_bad_keep_checkpoints_is_one_line(tiny_data, tmp_path, capsys):
    assert main(train_args(tiny_data, tmp_path / "run", "--set", "train.keep_checkpoints=41")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "keep_checkpoints" in err
    assert not (tmp_path / "run").exists()
