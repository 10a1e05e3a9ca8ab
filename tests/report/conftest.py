"""Fixtures for the report and viewer tests; the builders live in report_fixtures.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, launch, need
from report_fixtures import make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs" / "tiny")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        need(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright package is not installed")
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
