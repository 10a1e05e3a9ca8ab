"""frontier --ray: the smoke grid trained and pruned as Ray tasks gives the serial frontier.json.

Nothing is mocked on the Ray side: the tasks run in Ray's worker processes.  The driver's
own training and pruning functions are replaced by ones that fail, so a result can only
have come from the workers.
"""
from __future__ import annotations

import importlib
import json

import pytest
from ray_helpers import STARTUP_TIMEOUT, start_local_ray

from sparsecircuits.cli import main

frontier_mod = importlib.import_module("sparsecircuits.analysis.frontier")  # the package exports a function by that name

TIMINGS = ("seconds", "train_seconds")


def _content(path):
    """``frontier.json`` without its timings (wall-clock seconds differ from run to run)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in TIMINGS}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return strip(json.loads(path.read_text()))


def _not_here(*args, **kwargs):
    raise AssertionError("trained or pruned in the driver, not in a Ray task")


def _argv(out, data, *extra):
    return ["frontier", "--grid", "smoke", "--out", str(out), "--data", str(data), "--no-progress", *extra]


@pytest.mark.slow
def test_frontier_on_ray_writes_the_serial_frontier_json(tmp_path, tiny_data_dir, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    assert main(_argv(tmp_path / "serial", tiny_data_dir)) == 0
    serial = _content(tmp_path / "serial" / "frontier.json")
    assert len(serial["models"]) == 4 and all(m["training"] == "trained" for m in serial["models"])
    capsys.readouterr()

    monkeypatch.setattr(frontier_mod, "ensure_trained", _not_here)
    monkeypatch.setattr(frontier_mod, "prune_sizes", _not_here)

    # --ray without an address: the command starts a local Ray, and stops it when done
    rc = main(_argv(tmp_path / "ray", tiny_data_dir, "--ray"))
    err = capsys.readouterr().err
    if rc == 2 and STARTUP_TIMEOUT in err:
        pytest.skip("a local Ray node did not start within Ray's start-up wait (machine overloaded)")
    assert rc == 0, err
    assert not ray.is_initialized()
    assert _content(tmp_path / "ray" / "frontier.json") == serial
    for m in serial["models"]:
        assert (tmp_path / "ray" / m["name"] / "model.safetensors").is_file()
        assert (tmp_path / "ray" / m["name"] / "circuits" / "single_double_quote" / "circuit.json").is_file()

    # a process already connected to Ray keeps its connection; finished models and circuits are reused
    start_local_ray(ray, num_cpus=2)
    try:
        assert main(_argv(tmp_path / "ray", tiny_data_dir, "--ray")) == 0
        again = json.loads((tmp_path / "ray" / "frontier.json").read_text())
        assert all(m["training"] == "reused" for m in again["models"])
        assert all(t["cached"] for m in again["models"] for t in m["tasks"].values())
        assert ray.is_initialized()
        capsys.readouterr()

        # bad input found by a worker (models of another length in --out) is one line, as without Ray
        assert main(_argv(tmp_path / "ray", tiny_data_dir, "--ray", "--steps", "20")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "holds another model" in err and "Traceback" not in err
    finally:
        ray.shutdown()


def test_frontier_ray_without_ray_installed_is_one_line(tmp_path, tiny_data_dir, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(_argv(tmp_path / "x", tiny_data_dir, "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'sparsecircuits[cluster]'" in err
    assert not (tmp_path / "x" / "frontier.json").exists()
