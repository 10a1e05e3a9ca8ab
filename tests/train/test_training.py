"""Training cpu-tiny: the loss falls, the density ends exact, stop + resume is bitwise exact."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.config import build_config
from sparsecircuits.errors import UserError
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparsity import is_dense_name, nonzero_target
from sparsecircuits.train.trainer import Trainer, clip_grad_rms_

from .conftest import metrics, train_args, weights


def test_loss_falls_clearly(reference_run):
    rows = metrics(reference_run)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    first, last = rows[0]["train_loss"], rows[-1]["train_loss"]
    assert last < first - 0.5, (first, last)
    assert rows[-1]["val_loss"] < rows[1]["val_loss"]


def test_final_density_is_exact(reference_run):
    cfg = build_config("cpu-tiny")
    density = cfg.train.density
    sd = weights(reference_run)
    names = [n for n, _ in GPT(build_config("cpu-tiny").model).named_parameters()]
    sparse = [n for n in names if not is_dense_name(n)]
    assert len(sparse) >= 8
    for name in sparse:
        t = sd[name]
        assert int(torch.count_nonzero(t)) == nonzero_target(t.numel(), density), name
    for name in names:  # gains and sink logits stay dense
        if is_dense_name(name):
            assert int(torch.count_nonzero(sd[name])) == sd[name].numel(), name
    assert metrics(reference_run)[-1]["nonzero_frac"] == pytest.approx(density, abs=1e-3)


def test_stop_then_resume_is_bitwise_identical(tiny_data, reference_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, "--stop-after", "13")) == 0
    assert "stopped after step 13" in capsys.readouterr().out
    assert not (run / "model.safetensors").exists()
    assert [r["step"] for r in metrics(run)] == [10]
    assert (run / "checkpoints" / "step_0000013").is_dir()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    ref, got = weights(reference_run), weights(run)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert metrics(run) == metrics(reference_run)


def test_resume_finished_run_keeps_weights(reference_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "done"
    shutil.copytree(reference_run, run)
    before = weights(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "already at step 40" in capsys.readouterr().out
    after = weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert metrics(run) == metrics(reference_run)


def test_grad_accum_matches_one_batch(accum_run, reference_run):
    """grad_accum=2 sums two half-batch gradients: the same step up to summation order.

    Over 40 steps the difference stays near float32 rounding (1e-7); a bug such as a
    missing division by the number of micro-batches moves weights by more than 1e-3.
    """
    ref, got = weights(reference_run), weights(accum_run)
    diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
    assert diff <= 1e-6, diff
    for a, b in zip(metrics(reference_run), metrics(accum_run)):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["nonzero_frac"] == b["nonzero_frac"]


def test_grad_accum_must_divide_batch(tiny_data, tmp_path):
    with pytest.raises(UserError, match="multiple of train.grad_accum"):
        build_config("cpu-tiny", sets=[f"data.data_dir={tiny_data}", "train.grad_accum=3"])


def test_toml_and_set_reach_the_run(tiny_data, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 7\n[model]\nd_model = 48\n[train]\nlr = 0.05\nlog_every = 1\n')
    run = tmp_path / "run"
    rc = main(["train", "--preset", "cpu-tiny", "--data", str(tiny_data), "--out", str(run), "--no-progress",
               "--config", str(toml), "--set", "train.lr=0.03", "--set", "train.threads=1", "--stop-after", "1"])
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["seed"], cfg["model"]["d_model"], cfg["train"]["lr"]) == (7, 48, 0.03)
    assert cfg["model"]["n_layer"] == 2  # the preset still applies underneath
    assert json.loads((run / "metrics.jsonl").read_text())["lr"] == pytest.approx(0.03)  # warmup is 1 step


@pytest.mark.parametrize("inject_at", [3, 7])
def test_nonfinite_loss_stops_and_keeps_checkpoint(tiny_data, tmp_path, monkeypatch, capsys, inject_at):
    real = Trainer.micro_loss

    def poisoned(self, xs, ys):
        loss = real(self, xs, ys)
        return loss * float("nan") if self.step + 1 == inject_at else loss

    monkeypatch.setattr(Trainer, "micro_loss", poisoned)
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, "--set", "train.checkpoint_every=2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"non-finite loss at step {inject_at} " in err[0]
    good = (inject_at - 1) // 2 * 2
    if good:
        assert f"step_{good:07d}" in err[0]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir()) if good else []
    assert ckpts[-1:] == ([f"step_{good:07d}"] if good else [])
    assert not (run / "model.safetensors").exists()
    assert [r["step"] for r in metrics(run)] == []
    if good:
        monkeypatch.setattr(Trainer, "micro_loss", real)
        from sparsecircuits.train.checkpoint import load_latest

        path, tensors, meta = load_latest(run / "checkpoints")
        assert meta["step"] == good and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_huge_lr_diverges_with_a_clear_line(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(train_args(tiny_data, run, "--set", "train.lr=1e38", "--set", "train.grad_clip_rms=0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "training diverged: non-finite" in err[0] and "at step " in err[0]
    assert not (run / "model.safetensors").exists()


def test_clip_grad_rms():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)
    a.grad, b.grad = torch.full((3,), 4.0), torch.full((5,), 4.0)
    assert clip_grad_rms_([a, b], 1.0) == pytest.approx(4.0)
    assert torch.allclose(a.grad, torch.ones(3)) and torch.allclose(b.grad, torch.ones(5))
    # below the limit, or with clipping off (0), nothing is scaled
    assert clip_grad_rms_([a, b], 2.0) == pytest.approx(1.0)
    a.grad.fill_(3.0)
    assert clip_grad_rms_([a, b], 0.0) == pytest.approx(math.sqrt((9 * 3 + 5) / 8))
    assert a.grad.tolist() == [3.0] * 3 and b.grad.tolist() == [1.0] * 5
    # a non-finite entry: the RMS is NaN and no gradient is touched (the loop then stops)
    b.grad[0] = float("inf")
    assert math.isnan(clip_grad_rms_([a, b], 1.0))
    assert a.grad.tolist() == [3.0] * 3 and b.grad[1:].tolist() == [1.0] * 4
    # parameters without a gradient are skipped, and none at all gives 0
    c = torch.zeros(2, requires_grad=True)
    a.grad.fill_(2.0)
    assert clip_grad_rms_([a, c], 1.0) == pytest.approx(2.0) and a.grad.tolist() == [1.0] * 3
    assert clip_grad_rms_([c], 1.0) == 0.0
