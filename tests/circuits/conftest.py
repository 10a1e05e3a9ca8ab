"""Fixtures for the circuit tests; the builders (and the toy task) live in circuit_fixtures.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from circuit_fixtures import save_run_dir, toy_config, toy_model, toy_tokenizer

from sparsecircuits.config import RunConfig
from sparsecircuits.run import Run


@pytest.fixture
def toy_run(tmp_path: Path) -> Run:
    return Run(path=tmp_path, config=RunConfig(model=toy_config()), model=toy_model(), tokenizer=toy_tokenizer())


@pytest.fixture
def toy_run_dir(tmp_path: Path) -> Path:
    return save_run_dir(tmp_path / "toyrun", toy_model(), toy_tokenizer())


