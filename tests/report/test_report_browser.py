"""The circuit page in a real browser (Debian's Chromium, driven by Playwright).

Opened from file://, as a mailed report would be: no console errors, a click on a node
fills the panel with its snippets, and hostile tokens render as text without running.
Never downloads a browser: without /usr/bin/chromium the test skips, or fails on CI.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from report_fixtures import IMG_TOKEN, SCRIPT_TOKEN

from sparsecircuits.report.html import write_report
from sparsecircuits.report.server import make_server

pytestmark = pytest.mark.slow  # a real browser: seconds per page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required on CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _need(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class PageWatch:
    """A page plus everything it reported: console errors, uncaught errors, dialogs."""

    def __init__(self, browser):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def test_circuit_page_in_browser(browser, run_dir, tmp_path):
    write_report(run_dir)
    w = PageWatch(browser)
    page = w.page
    page.goto((run_dir / "report" / "circuit-single_double_quote.html").as_uri())
    page.wait_for_selector("svg.circuit-graph g.node")
    assert page.locator("svg.circuit-graph g.node").count() == 20
    assert page.locator("svg.circuit-graph path.edge").count() == 25
    assert "Most important nodes" in page.locator("#panel").text_content()

    # The hostile embed node: its label and its snippets are plain text.
    page.click('g.node[aria-label="hook_embed:900"]')
    panel = page.locator("#panel")
    assert panel.locator(".node-id").inner_text() == "hook_embed:900"
    assert panel.locator(".snippet").count() == 4
    snippet_text = panel.locator(".snippets").text_content()
    assert SCRIPT_TOKEN in snippet_text and IMG_TOKEN in snippet_text
    assert panel.locator("h3", has_text="Activation on the task").count() == 1
    assert panel.locator("h3", has_text="Ablation effect").count() == 1
    # Its neighbours get highlighted, the rest fades.
    assert page.locator("svg.circuit-graph.focus").count() == 1
    assert page.locator("svg.circuit-graph path.edge.hl").count() == 1
    assert page.locator("svg.circuit-graph g.node.hl").count() == 2

    page.click('g.node[aria-label="hook_embed:901"]')
    assert IMG_TOKEN in panel.locator(".node-title").text_content().replace("\u2423", " ")

    # A key node shows its attention pattern as a heatmap (7 tokens -> 49 cells).
    page.click('g.node[aria-label="blocks.1.attn.hook_k:53"]')
    assert panel.locator("h3", has_text="Attention pattern").count() == 1
    assert panel.locator("svg[aria-label='attention pattern'] rect").count() == 49
    # A node without details still gets a panel.
    page.click('g.node[aria-label="blocks.3.hook_mlp_in:55"]')
    assert "No activation details" in panel.inner_text()
    page.keyboard.press("Escape")
    assert page.locator("svg.circuit-graph.focus").count() == 0

    page.click('g.node[aria-label="hook_embed:900"]')
    shot = tmp_path / "circuit.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert w.dialogs == []
    assert w.errors == []


def test_index_page_in_browser(browser, run_dir, tmp_path):
    write_report(run_dir)
    w = PageWatch(browser)
    page = w.page
    page.goto((run_dir / "report" / "index.html").as_uri())
    assert page.locator("svg.loss-curve path.series").count() == 2
    assert "<script>alert(1)</script>" in page.locator(".config-grid").inner_text()
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    page.click("text=single_double_quote")
    page.wait_for_selector("svg.circuit-graph")
    assert page.url.endswith("circuit-single_double_quote.html")
    page.click("a.back")
    page.wait_for_selector("svg.loss-curve")
    assert page.evaluate("document.querySelectorAll('img, script').length") == 0
    assert w.dialogs == [] and w.errors == []


def test_deep_link_selects_node(browser, run_dir):
    write_report(run_dir)
    w = PageWatch(browser)
    url = (run_dir / "report" / "circuit-single_double_quote.html").as_uri() + "#node=blocks.1.attn.hook_q%3A53"
    w.page.goto(url)
    assert w.page.locator("#panel .node-id").inner_text() == "blocks.1.attn.hook_q:53"
    assert w.page.locator("g.node.selected").count() == 1
    assert w.errors == []


def test_viewer_serves_reports_to_a_browser(browser, run_dir):
    """Through the local server: runs page -> report (written on demand) -> circuit page."""
    srv = make_server(run_dir.parent, port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        w = PageWatch(browser)
        w.page.goto(srv.url)
        w.page.click("text=tiny")
        w.page.wait_for_selector("svg.loss-curve")
        w.page.click("text=single_double_quote")
        w.page.click('g.node[aria-label="hook_embed:900"]')
        assert w.page.locator("#panel .snippet").count() == 4
        assert w.page.evaluate("typeof window.__pwned") == "undefined"
        assert w.dialogs == [] and w.errors == []
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
