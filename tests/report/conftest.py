"""Fixtures for the report and viewer tests; the builders live in report_fixtures.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs" / "tiny")
