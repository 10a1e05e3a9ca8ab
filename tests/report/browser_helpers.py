"""Driving the report pages in Debian's Chromium with Playwright; never downloads a browser.

Without /usr/bin/chromium or the playwright package a browser test skips, or fails on
CI, where both must be present.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 120_000  # generous: the machine running the tests may be busy with training
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required on CI)")
    pytest.skip(reason)


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


class PageWatch:
    """A page plus everything it reported: console errors, uncaught errors, dialogs, and
    every request it made (a report page must make none beyond its own file)."""

    def __init__(self, browser, width: int = 1400, height: int = 1000, **context):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": height}, **context)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path, fragment: str = "") -> None:
        self.page.goto(path.as_uri() + fragment)
        self.page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length > 0")

    def foreign_requests(self, allowed: Path | None = None) -> list[str]:
        """Requests other than the page files themselves (and the blob of an export)."""
        ok = allowed.as_uri() if allowed else "file://"
        return [u for u in self.requests if not (u.startswith(ok) or u.startswith("blob:") or u == "data:,")]
