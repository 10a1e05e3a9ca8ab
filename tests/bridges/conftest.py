"""Fixtures for the bridge tests: one tiny dense run and one bridged twin (builders in bridge_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from bridge_fixtures import FAST

from sparsecircuits.cli import main


@pytest.fixture(scope="session")
def bridge_data(tmp_path_factory) -> Path:
    from sparsecircuits.data.build import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("bridge_data") / "data")


@pytest.fixture(scope="session")
def dense_run(bridge_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "run"
    assert main(["train", "--preset", "cpu-tiny", "--data", str(bridge_data), "--out", str(out), *FAST,
                 "--set", "train.density=1.0", "--set", "model.afrac=1.0"]) == 0
    return out


@pytest.fixture(scope="session")
def bridged_run(dense_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bridged") / "run"
    assert main(["bridge", "train", str(dense_run), "--out", str(out), "--preset", "cpu-tiny", *FAST]) == 0
    return out
