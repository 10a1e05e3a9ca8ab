"""`pip install` into an environment that already has torch: the wheel `python -m build`
makes, installed into a fresh venv, runs the CLI end to end.

The fresh venv has no packages of its own; a ``.pth`` file puts the current
environment's site-packages behind it, so torch (and every other dependency) is the one
already installed and ``pip install --no-index`` must resolve the wheel's requirements
against it: a torch range in the metadata that excluded the installed torch would fail
here, with nothing downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the venv's own paths
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    assert p.returncode == 0, f"{cmd} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def test_metadata_takes_a_torch_range_and_the_makefile_keeps_the_pin():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = [d for d in deps if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert torch_req and "==" not in torch_req[0] and ">=" in torch_req[0]
    assert "TORCH := torch==" in (ROOT / "Makefile").read_text()


@pytest.mark.slow
def test_wheel_installs_next_to_existing_torch_and_runs_the_cli(tmp_path):
    # build from a clean copy of the sources, so nothing is written into the checkout
    src = tmp_path / "src_copy"
    shutil.copytree(ROOT / "src" / "sparsecircuits", src / "src" / "sparsecircuits",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src])
    wheels = list(dist.glob("sparsecircuits-*.whl"))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    base = Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable)
    _run([base, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(purelib) / "existing-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "--quiet", wheels[0]])

    where = _run([py, "-c", "import sparsecircuits, torch; print(sparsecircuits.__file__); print(torch.__version__)"])
    pkg_file, torch_version = where.stdout.split()
    assert Path(pkg_file).is_relative_to(venv), pkg_file  # the wheel's copy, not the checkout
    import torch

    assert torch_version == torch.__version__  # the torch that was already there
    cli = venv / "bin" / "sparsecircuits"
    assert cli.is_file()
    data = tmp_path / "data"
    _run([py, "-c", f"from sparsecircuits.data.build import build_tiny_data; build_tiny_data({str(data)!r})"])
    run = tmp_path / "run"
    _run([cli, "train", "--preset", "cpu-tiny", "--data", data, "--out", run, "--set", "train.steps=4",
          "--set", "train.eval_every=2", "--set", "train.checkpoint_every=2", "--set", "train.threads=1"])
    assert (run / "model.safetensors").is_file()
    out = _run([cli, "tasks", "eval", run, "--tasks", "single_double_quote", "--n", "8", "--json"]).stdout
    scores = json.loads(out)
    assert "single_double_quote" in json.dumps(scores)
