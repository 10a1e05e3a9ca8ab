"""Fixtures for the analysis tests: hand-built models (``analysis_models.py``), tiny data."""
from __future__ import annotations

import pytest
import torch
from analysis_models import make_run


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread for this folder's tests: the tiny models here run slower with two
    on a shared CPU.  Restored after each module, so other folders keep their setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def honest_run(tmp_path):
    return make_run(tmp_path / "honest", cheat=False)


@pytest.fixture
def cheat_run(tmp_path):
    return make_run(tmp_path / "cheat", cheat=True)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from sparsecircuits.data.build import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("analysis_data") / "data")
