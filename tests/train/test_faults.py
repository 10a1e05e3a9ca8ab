"""A training process killed with SIGKILL (mid-step or mid-checkpoint) resumes bit for bit.

The CLI runs in subprocesses (started together, to share their start-up time); each is
killed at a point given by what is on disk, not by time. Every run's last checkpoint
write is slowed by ``SPARSECIRCUITS_TEST_SLOW_SAVE`` so no process can finish before
its kill, however slow the machine.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.train import checkpoint as ckpt

from .conftest import metrics, popen_cli, train_args, weights

TIMEOUT_S = 180


def _checkpoint_steps(run: Path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in ckpt.list_checkpoints(run / "checkpoints")]


def _logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    steps = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            steps.append(json.loads(ln)["step"])
        except ValueError:
            pass
    return steps


def _mid_save(step: int) -> Callable[[Path], bool]:
    def ready(run: Path) -> bool:
        ckdir = run / "checkpoints"
        return ckdir.is_dir() and any((p / ckpt.STATE_TENSORS).is_file() for p in ckdir.glob(f".step_{step:07d}.*"))
    return ready


def _after_checkpoint(step: int, then_wait: float = 0.0) -> Callable[[Path], bool]:
    seen: list[float] = []

    def ready(run: Path) -> bool:
        if not seen and max(_checkpoint_steps(run), default=0) >= step:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= then_wait
    return ready


# name -> (when to kill, which checkpoint write to slow down)
KILLS: dict[str, tuple[Callable[[Path], bool], str]] = {
    # mid-step 6, just after the first checkpoint
    "after_ckpt_5": (_after_checkpoint(5), "40:600"),
    # just after the step-20 metric line: before or while checkpoint 20 is written, so a
    # metric line newer than the newest checkpoint is on disk
    "after_log_20": (lambda run: 20 in _logged_steps(run), "40:600"),
    # somewhere in steps 26-39
    "mid_steps_after_25": (_after_checkpoint(25, then_wait=0.15), "40:600"),
    # while checkpoint 10 is half written (tensors on disk, state.json not yet)
    "mid_checkpoint_10": (_mid_save(10), "10:600"),
}


@pytest.fixture(scope="module")
def killed_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("killed")
    procs = {name: popen_cli(train_args(tiny_data, root / name), SPARSECIRCUITS_TEST_SLOW_SAVE=slow)
             for name, (_, slow) in KILLS.items()}
    deadline = time.monotonic() + TIMEOUT_S
    try:
        pending = dict(procs)
        while pending:
            for name, proc in list(pending.items()):
                if KILLS[name][0](root / name):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    del pending[name]
                else:
                    assert proc.poll() is None, f"{name}: training ended early: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, f"kill points never reached: {sorted(pending)}"
            time.sleep(0.01)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == -signal.SIGKILL, name
    return {name: root / name for name in KILLS}


def _resume_and_compare(run: Path, reference_run: Path) -> None:
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    ref, got = weights(reference_run), weights(run)
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert metrics(run) == metrics(reference_run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_ckpt_5", "after_log_20", "mid_steps_after_25"])
def test_sigkill_then_resume_is_bitwise_identical(killed_runs, reference_run, point):
    run = killed_runs[point]
    assert not (run / "model.safetensors").exists()
    assert _checkpoint_steps(run), "killed before any checkpoint"
    _resume_and_compare(run, reference_run)


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_previous(killed_runs, reference_run):
    run = killed_runs["mid_checkpoint_10"]
    ckdir = run / "checkpoints"
    assert _checkpoint_steps(run) == [5]
    assert list(ckdir.glob(".step_0000010.*")), "the half-written checkpoint should still be there"
    path, _, meta = ckpt.load_latest(ckdir)
    assert path.name == "step_0000005" and meta["step"] == 5
    _resume_and_compare(run, reference_run)
