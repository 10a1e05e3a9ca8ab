"""Checkpoint properties the main tests leave open (found by benchmarks/mutation.py).

Where the optimizer state goes on load (the model's device, the step count on the CPU as
AdamW keeps it), plain-number optimizer state, a folder that cannot be deleted, where the
temporary folder lives, and the slow-save hook the fault tests kill a writer with.
"""
from __future__ import annotations

import errno
import os
import warnings

import pytest
import torch

from sparsecircuits.config import ModelConfig, RunConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.train import checkpoint as ckpt
from sparsecircuits.train.trainer import build_optimizer

CFG = RunConfig(model=ModelConfig(vocab_size=16, n_layer=1, d_model=8, n_head=2, d_head=4, d_mlp=16,
                                  block_size=8, afrac=1.0))
TENSORS = {"w": torch.arange(4.0)}


def _stepped():
    """A model and AdamW after one step: every parameter has step, exp_avg and exp_avg_sq."""
    torch.manual_seed(0)
    model = GPT(CFG.model)
    opt = build_optimizer(model, CFG)
    tokens = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(1))  # (B, T)
    model(tokens).square().mean().backward()
    opt.step()
    return model, opt


def test_moments_go_to_the_models_device_and_the_step_count_stays_on_the_cpu():
    tensors = ckpt.pack_state(*_stepped())
    model = GPT(CFG.model).to("meta")  # a device other than the checkpoint's, as a GPU would be
    opt = build_optimizer(model, CFG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op"
        ckpt.unpack_state(tensors, model, opt)
    for name, p in model.named_parameters():
        state = opt.state[p]
        assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta", name
        assert state["step"].device.type == "cpu", name  # AdamW (not fused) wants it there


def test_pack_state_copies_tensors_quietly_and_stores_plain_numbers():
    model, opt = _stepped()
    p = model.lm_head.weight
    opt.state[p]["step"] = 3.0  # optimizers of older torch kept the step as a number
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.tensor(a_tensor) would warn
        tensors = ckpt.pack_state(model, opt)
    step = tensors["optim.lm_head.weight.step"]
    assert torch.is_tensor(step) and float(step) == 3.0
    assert torch.equal(tensors["optim.lm_head.weight.exp_avg"], opt.state[p]["exp_avg"])


def test_save_creates_missing_parent_folders(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "run" / "checkpoints", 1, TENSORS, {})
    assert path == tmp_path / "run" / "checkpoints" / "step_0000001"


def test_the_temporary_folder_is_hidden_beside_the_checkpoints(tmp_path, monkeypatch):
    """Same folder, so the final rename is atomic; hidden, so no one lists a half-written one."""
    seen = []
    real = ckpt.save_file

    def spy(tensors, filename, *args, **kwargs):
        seen.append(os.path.dirname(filename))
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", spy)
    ckpt.save_checkpoint(tmp_path, 5, TENSORS, {})
    (folder,) = seen
    assert os.path.dirname(folder) == str(tmp_path) and os.path.basename(folder).startswith(".step_0000005.")


def _undeletable_tensor_files(monkeypatch) -> None:
    """Deleting any state.safetensors fails, as on a filesystem that refuses it."""
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path).endswith(ckpt.STATE_TENSORS):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


def test_an_old_checkpoint_that_cannot_be_deleted_does_not_stop_saving(tmp_path, monkeypatch):
    _undeletable_tensor_files(monkeypatch)
    for step in (1, 2, 3):  # saving 3 retires 1 (keep=2) ...
        ckpt.save_checkpoint(tmp_path, step, TENSORS, {})
    ckpt.save_checkpoint(tmp_path, 4, TENSORS, {})  # ... and saving 4 meets its hidden leftover
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]


def test_a_failed_write_reports_its_own_error_even_if_cleaning_up_fails(tmp_path, monkeypatch):
    _undeletable_tensor_files(monkeypatch)

    def full_disk(_path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_sha256", full_disk)  # after the tensors are written
    with pytest.raises(OSError, match="No space left on device"):
        ckpt.save_checkpoint(tmp_path, 1, TENSORS, {})
    assert ckpt.list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("spec,seconds", [("5:0.25", 0.25), ("5", 60.0)])
def test_the_slow_save_hook_sleeps_only_at_its_step(tmp_path, monkeypatch, spec, seconds):
    slept = []
    monkeypatch.setattr(ckpt.time, "sleep", slept.append)
    monkeypatch.setenv(ckpt.SLOW_SAVE_ENV, spec)
    ckpt.save_checkpoint(tmp_path, 4, TENSORS, {})
    assert slept == []
    ckpt.save_checkpoint(tmp_path, 5, TENSORS, {})
    assert slept == [seconds]
