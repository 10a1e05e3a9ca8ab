"""Fixtures for the training tests: one tiny data dir and one finished cpu-tiny run.

Every run here uses ``train.threads=1`` so that runs in this process, in a subprocess
and under torchrun use the same kernels and can be compared bit for bit; and
``checkpoint_every=5`` so that kills land between several checkpoints.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from sparsecircuits.cli import main

SETS = ["--set", "train.threads=1", "--set", "train.checkpoint_every=5"]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "cpu-tiny", "--data", str(data), "--out", str(out), "--no-progress", *SETS, *extra]


def weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def metrics(run: Path) -> list[dict]:
    """Metric lines without the wall-clock field (the only one allowed to differ)."""
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("tokens_per_s")
    return rows


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too), path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def popen_cli(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sparsecircuits", *args], env={**cli_env(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from sparsecircuits.data.build import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("train_data") / "data")


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    """cpu-tiny trained start to finish in one call, through the CLI."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_args(tiny_data, out)) == 0
    return out


@pytest.fixture(scope="session")
def accum_run(tiny_data, tmp_path_factory) -> Path:
    """The reference run's settings with train.grad_accum=2 (two half-batch micro-steps)."""
    out = tmp_path_factory.mktemp("accum") / "run"
    assert main(train_args(tiny_data, out, "--set", "train.grad_accum=2")) == 0
    return out


def torchrun(nproc: int, args: list[str]) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node=N -m sparsecircuits ARGS`` (gloo on CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "sparsecircuits", *args]
    return subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
