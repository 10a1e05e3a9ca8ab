"""The report's pages in a real browser (Debian's Chromium, driven by Playwright).

Opened from file://, as a mailed report would be: no console errors or warnings, no
network request, a click on a node fills the panel with its snippets, and hostile tokens
render as text without running.
"""
from __future__ import annotations

import threading

import pytest
from browser_helpers import PageWatch
from report_fixtures import IMG_TOKEN, SCRIPT_TOKEN, quote_circuit

from sparsecircuits.report.html import write_report
from sparsecircuits.report.server import make_server

pytestmark = pytest.mark.slow


def click_node(page, node_id: str, viewer: int = 0, shift: bool = False) -> None:
    """A real mouse click (with shift: adding to the selection) on circuit node ``node_id``."""
    cy_id = page.evaluate("([v, id]) => window.circuitViewers[v].cyId(id)", [viewer, node_id])
    assert cy_id, node_id
    pt = page.evaluate("([v, id]) => window.circuitViewers[v].point(id)", [viewer, cy_id])
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(pt["x"], pt["y"])
    if shift:
        page.keyboard.up("Shift")


def selected(page, viewer: int = 0) -> list[str]:
    return page.evaluate("(v) => window.circuitViewers[v].selected().map(window.circuitViewers[v].nodeId)", viewer)


def lit_nodes(page) -> set[str]:
    return set(page.evaluate("""() => { const v = window.circuitViewers[0];
        return v.cy.nodes('.node').filter(n => !n.hasClass('faded') && !n.hasClass('hidden')).map(n => v.nodeId(n.id())); }"""))


def test_circuit_page_in_browser(browser, run_dir, tmp_path):
    write_report(run_dir)
    w = PageWatch(browser)
    page = w.page
    path = run_dir / "report" / "circuit-single_double_quote.html"
    w.open(path)
    counts = page.evaluate("""() => { const cy = window.circuitViewers[0].cy;
        return [cy.nodes('.node').length, window.circuitViewers[0].drawnLinks().length,
                window.circuitViewers[0].drawnEdges()]; }""")
    assert counts == [20, 25, 25]  # four tokens: too few to fold
    panel = page.locator(".viewer [data-role=panel]")
    assert "Most important nodes" in panel.text_content()

    # The hostile embed node: its label and its snippets are plain text.
    click_node(page, "hook_embed:900")
    page.wait_for_function("() => document.querySelector('[data-role=panel] .node-id') !== null")
    assert panel.locator(".node-id").inner_text() == "hook_embed:900"
    assert panel.locator(".snippet").count() == 4
    snippet_text = panel.locator(".snippets").text_content()
    assert SCRIPT_TOKEN in snippet_text and IMG_TOKEN in snippet_text
    assert panel.locator("h3", has_text="Activation on the task").count() == 1
    assert panel.locator("h3", has_text="Ablation effect").count() == 1
    assert selected(page) == ["hook_embed:900"]
    # Its descendants stay lit, everything else fades (it has no ancestors).
    c = quote_circuit()
    ids = [n["id"] for n in c["nodes"]]
    down, stack = {"hook_embed:900"}, ["hook_embed:900"]
    while stack:
        cur = stack.pop()
        for link in c["links"]:
            if link["source"] == cur and link["target"] not in down:
                down.add(link["target"])
                stack.append(link["target"])
    assert lit_nodes(page) == down and len(down) < len(ids)

    click_node(page, "hook_embed:901")
    page.wait_for_function("() => document.querySelector('[data-role=panel] .node-id').textContent === 'hook_embed:901'")
    assert IMG_TOKEN in panel.locator(".node-title").text_content().replace("\u2423", " ")

    # A key node shows its attention pattern as a heatmap (7 tokens -> 49 cells).
    click_node(page, "blocks.1.attn.hook_k:53")
    page.wait_for_function("() => document.querySelector('[data-role=panel] .node-id').textContent === 'blocks.1.attn.hook_k:53'")
    assert panel.locator("h3", has_text="Attention pattern").count() == 1
    assert panel.locator("svg[aria-label='attention pattern'] rect").count() == 49
    # A node without details still gets a panel.
    click_node(page, "blocks.3.hook_mlp_in:55")
    page.wait_for_function("() => document.querySelector('[data-role=panel]').innerText.includes('No activation details')")
    page.keyboard.press("Escape")
    page.wait_for_function("() => window.circuitViewers[0].selected().length === 0")
    # the focus update is deferred to the next task; the overview panel comes back with it
    page.wait_for_function("() => document.querySelector('[data-role=panel]').textContent.includes('Most important nodes')")
    assert lit_nodes(page) == set(ids)

    shot = tmp_path / "circuit.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert w.dialogs == [] and w.errors == []
    assert w.foreign_requests(path) == []


def test_index_page_in_browser(browser, run_dir, tmp_path):
    write_report(run_dir)
    w = PageWatch(browser)
    page = w.page
    page.goto((run_dir / "report" / "index.html").as_uri())
    assert page.locator("svg.loss-curve path.series").count() == 2
    assert "<script>alert(1)</script>" in page.locator(".config-grid").inner_text()
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    page.click("text=single_double_quote")
    page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 1")
    assert page.url.endswith("circuit-single_double_quote.html")
    page.click("a.back")
    page.wait_for_selector("svg.loss-curve")
    assert page.evaluate("document.querySelectorAll('img, script').length") == 0
    assert w.dialogs == [] and w.errors == []
    assert w.foreign_requests(run_dir / "report") == []


def test_deep_link_selects_node(browser, run_dir):
    write_report(run_dir)
    w = PageWatch(browser)
    w.open(run_dir / "report" / "circuit-single_double_quote.html", "#node=blocks.1.attn.hook_q%3A53")
    assert w.page.locator("[data-role=panel] .node-id").inner_text() == "blocks.1.attn.hook_q:53"
    assert selected(w.page) == ["blocks.1.attn.hook_q:53"]
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
        w.page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 1")
        click_node(w.page, "hook_embed:900")
        w.page.wait_for_function("() => document.querySelectorAll('[data-role=panel] .snippet').length === 4")
        assert w.page.evaluate("typeof window.__pwned") == "undefined"
        assert w.dialogs == [] and w.errors == []
        assert all(u.startswith(srv.url.rstrip("/")) or u == "data:," for u in w.requests)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
