"""The circuit viewer at work in Chromium: fit, search, the edge filter, folding,
supernodes through export and import, and two circuits side by side.

Every page is opened from file:// and must log no error or warning and request nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_helpers import PageWatch
from report_fixtures import quote_circuit
from test_report_browser import click_node, selected

from sparsecircuits.report.html import write_compare, write_report
from sparsecircuits.report.synthetic import synthetic_circuit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    """A run with a generated 1,000-node, 10,000-link circuit next to the fixture ones."""
    from report_fixtures import make_run

    run = make_run(tmp_path_factory.mktemp("big") / "runs" / "big")
    d = run / "circuits" / "generated"
    d.mkdir(parents=True)
    (d / "circuit.json").write_text(json.dumps(synthetic_circuit(1000, 10_000, seed=1, task="generated")))
    write_report(run)
    return run


def fit_and_check(page, viewer: int = 0) -> int:
    """Click Fit; every drawn node box lies inside the pane and no two overlap. Returns how many."""
    page.locator(".viewer [data-act=fit]").nth(viewer).click()
    boxes = page.evaluate("(v) => window.circuitViewers[v].boxes()", viewer)
    size = page.evaluate("(v) => window.circuitViewers[v].size()", viewer)
    assert boxes
    for b in boxes:
        assert b["x1"] >= -0.5 and b["y1"] >= -0.5, b
        assert b["x2"] <= size["width"] + 0.5 and b["y2"] <= size["height"] + 0.5, b
    boxes.sort(key=lambda b: b["x1"])
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b["x1"] >= a["x2"] - 1e-6:
                break
            assert not (b["y1"] < a["y2"] - 1e-6 and a["y1"] < b["y2"] - 1e-6), (a, b)
    return len(boxes)


def drawn(page, viewer: int = 0) -> int:
    return page.evaluate("(v) => window.circuitViewers[v].drawnEdges()", viewer)


def set_slider(page, value: int) -> None:
    page.evaluate("""(v) => { const s = document.querySelector('.viewer [data-role=weight]');
        s.value = String(v); s.dispatchEvent(new Event('input', {bubbles: true})); }""", value)


def centre_offset(page, node_id: str) -> float:
    """Distance in pixels from the node's centre to the pane's centre."""
    return page.evaluate("""(id) => { const v = window.circuitViewers[0]; const p = v.cy.getElementById(v.cyId(id)).renderedPosition();
        const s = v.size(); return Math.hypot(p.x - s.width / 2, p.y - s.height / 2); }""", node_id)


def test_fit_puts_every_node_inside_without_overlap(browser, big_run):
    w = PageWatch(browser)
    for name in ("circuit-single_double_quote.html", "circuit-bracket_counting.html"):
        w.open(big_run / "report" / name)
        w.page.locator(".viewer [data-role=graph]").focus()
        for key in ("+", "+", "ArrowLeft", "ArrowDown"):
            w.page.keyboard.press(key)
        assert fit_and_check(w.page) in (20, 7)
    w.open(big_run / "report" / "circuit-generated.html")
    page = w.page
    n_folded = fit_and_check(page)
    counts = page.evaluate("""() => { const cy = window.circuitViewers[0].cy;
        return [cy.nodes('.group').filter(n => !n.hasClass('hidden')).length,
                cy.nodes('.site-embed.node').filter(n => !n.hasClass('hidden')).length]; }""")
    assert counts[0] > 0 and counts[1] == 0  # tokens folded into groups
    before = drawn(page)
    page.locator(".viewer [data-act=unfold]").click()
    n_unfolded = fit_and_check(page)
    assert n_unfolded > n_folded and drawn(page) > before
    page.keyboard.press("Escape")
    assert w.errors == [] and w.dialogs == []
    assert w.foreign_requests(big_run / "report") == []


def test_search_and_important_nodes_select_and_centre(browser, run_dir):
    write_report(run_dir)
    w = PageWatch(browser)
    w.open(run_dir / "report" / "circuit-single_double_quote.html")
    page = w.page
    box = page.locator(".viewer [data-role=search]")
    box.fill("L1 attn_in #40")
    box.press("Enter")
    assert selected(page) == ["blocks.1.hook_attn_in:40"]
    assert centre_offset(page, "blocks.1.hook_attn_in:40") < 2
    assert page.locator("[data-role=panel] .node-id").inner_text() == "blocks.1.hook_attn_in:40"
    box.fill("blocks.1.attn.hook_v")  # a hook name: all its nodes
    box.press("Enter")
    assert sorted(selected(page)) == ["blocks.1.attn.hook_v:50", "blocks.1.attn.hook_v:88"]
    assert page.locator("[data-role=search-info]").inner_text() == "2 matches"
    box.fill("no such node")
    box.press("Enter")
    assert page.locator("[data-role=search-info]").inner_text() == "no match"
    page.keyboard.press("Escape")
    page.locator(".viewer [data-act=fit]").click()
    # The panel's most important node: selected and centred on click.
    first = page.locator("[data-role=panel] button.nbr").first
    name = first.get_attribute("title")
    first.click()
    assert selected(page) == [name]
    assert centre_offset(page, name) < 2
    assert w.errors == [] and w.foreign_requests(run_dir / "report") == []


def test_weight_filter_and_residual_toggle_thin_the_edges(browser, run_dir):
    write_report(run_dir)
    w = PageWatch(browser)
    w.open(run_dir / "report" / "circuit-single_double_quote.html")
    page = w.page
    assert drawn(page) == 25
    set_slider(page, 50)
    half = drawn(page)
    assert 0 < half < 25
    assert "of 25 links drawn" in page.locator("[data-role=edge-count]").inner_text()
    set_slider(page, 0)
    assert drawn(page) == 25
    n_residual = sum(1 for lk in quote_circuit()["links"]
                     if lk["source"].split(":")[0].endswith(("hook_mlp_out", "hook_attn_out"))
                     and lk["target"].split(":")[0].endswith(("hook_attn_in", "hook_mlp_in")))
    assert n_residual > 0
    page.locator(".viewer [data-role=residual]").uncheck()
    assert drawn(page) == 25 - n_residual
    assert w.errors == []


def test_supernode_survives_export_and_import(browser, run_dir, tmp_path):
    write_report(run_dir)
    path = run_dir / "report" / "circuit-single_double_quote.html"
    w = PageWatch(browser, accept_downloads=True)
    w.open(path)
    page = w.page
    members = ["blocks.0.mlp.hook_post:301", "blocks.0.mlp.hook_post:77", "blocks.0.hook_mlp_out:40"]
    click_node(page, members[0])
    for m in members[1:]:
        click_node(page, m, shift=True)
    assert sorted(selected(page)) == sorted(members)
    panel = page.locator(".viewer [data-role=panel]")
    panel.locator("input[aria-label='supernode name']").fill('quote <b>detector</b>')
    panel.locator("textarea[aria-label=note]").fill("fires on the opening quote")
    panel.locator("button.group-btn").click()
    state = page.evaluate("""() => { const cy = window.circuitViewers[0].cy;
        return [cy.nodes('.super').map(n => n.data('label')), cy.nodes('.node.hidden').length]; }""")
    assert state == [["quote <b>detector</b>"], 3]
    before = drawn(page)
    assert before < 25  # member links merged into supernode edges
    fit_and_check(page)
    with page.expect_download() as info:
        page.locator(".viewer [data-act=export]").click()
    saved = tmp_path / "annotations.json"
    info.value.save_as(saved)
    notes = json.loads(saved.read_text())
    assert notes["format"] == "sparsecircuits-annotations" and notes["task"] == "single_double_quote"
    assert notes["supernodes"] == [{"name": "quote <b>detector</b>", "note": "fires on the opening quote",
                                    "collapsed": True, "members": members}]

    page.reload()
    page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 1")
    assert page.evaluate("window.circuitViewers[0].cy.nodes('.super').length") == 0
    page.locator(".viewer [data-role=import]").set_input_files(str(saved))
    page.wait_for_function("() => window.circuitViewers[0].cy.nodes('.super').length === 1")
    assert page.evaluate("window.circuitViewers[0].annotations().supernodes") == notes["supernodes"]
    assert drawn(page) == before
    assert "Loaded 1 supernode" in page.locator("[data-role=panel]").inner_text()
    # A bad file is a message, not an error.
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    page.locator(".viewer [data-role=import]").set_input_files(str(bad))
    page.wait_for_function("() => document.querySelector('[data-role=panel]').innerText.includes('Not valid JSON')")

    # Saved next to circuit.json, the report shows it on the next build.
    (run_dir / "circuits" / "single_double_quote" / "annotations.json").write_text(saved.read_text())
    write_report(run_dir)
    w.open(path)
    assert page.evaluate("window.circuitViewers[0].cy.nodes('.super').map(n => n.data('label'))") == ["quote <b>detector</b>"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert w.errors == [] and w.dialogs == []
    assert w.foreign_requests(run_dir / "report") == []


def test_two_circuits_side_by_side(browser, tmp_path):
    a, b = quote_circuit(), quote_circuit()
    b["nodes"] = b["nodes"][:12]
    keep = {n["id"] for n in b["nodes"]}
    b["links"] = [lk for lk in b["links"] if lk["source"] in keep and lk["target"] in keep]
    for name, c in (("seed0", a), ("seed1", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "circuit.json").write_text(json.dumps(c))
    out = write_compare(tmp_path / "seed0" / "circuit.json", tmp_path / "seed1" / "circuit.json", tmp_path / "cmp.html")
    w = PageWatch(browser, width=1600)
    w.page.goto(out.as_uri())
    page = w.page
    page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 2")
    shared = page.evaluate("[0, 1].map(v => window.circuitViewers[v].cy.nodes('.shared').length)")
    assert shared == [12, 12]
    fit_and_check(page, 0)
    fit_and_check(page, 1)
    click_node(page, "blocks.0.hook_mlp_in:12", viewer=0)
    page.wait_for_function("() => window.circuitViewers[1].selected().length === 1")
    assert selected(page, 1) == ["blocks.0.hook_mlp_in:12"]
    assert w.errors == [] and w.foreign_requests(out) == []


def test_links_are_painted_between_their_nodes_and_found_under_the_pointer(browser, run_dir):
    """Links live on the canvas under Cytoscape: at the midpoint of a link, clear of boxes
    and of other links, the canvas holds that link's colour (blue positive, red negative)
    and the pointer there names it on the hover line."""
    write_report(run_dir)
    w = PageWatch(browser)
    w.open(run_dir / "report" / "circuit-single_double_quote.html")
    page = w.page
    links = page.evaluate("""() => { const v = window.circuitViewers[0];
        return v.drawnLinks().map(([a, b]) => [a, b, v.point(v.cyId(a)), v.point(v.cyId(b))]); }""")
    boxes = page.evaluate("() => window.circuitViewers[0].boxes()")
    pane = page.evaluate("() => { const r = document.querySelector('.viewer [data-role=graph]').getBoundingClientRect(); "
                         "return [r.left, r.top]; }")
    weight = {(lk["source"], lk["target"]): lk["weight"] for lk in quote_circuit()["links"]}

    def dist(p, a, b) -> float:
        dx, dy = b["x"] - a["x"], b["y"] - a["y"]
        t = max(0.0, min(1.0, ((p[0] - a["x"]) * dx + (p[1] - a["y"]) * dy) / (dx * dx + dy * dy or 1)))
        return ((p[0] - a["x"] - t * dx) ** 2 + (p[1] - a["y"] - t * dy) ** 2) ** 0.5

    clear = []  # (source, target, page point) of links whose midpoint is clear of boxes and other links
    for k, (src, dst, a, b) in enumerate(links):
        mid = ((a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2)
        local = (mid[0] - pane[0], mid[1] - pane[1])
        if any(bx["x1"] - 6 <= local[0] <= bx["x2"] + 6 and bx["y1"] - 6 <= local[1] <= bx["y2"] + 6 for bx in boxes):
            continue
        if any(dist(mid, o[2], o[3]) < 10 for j, o in enumerate(links) if j != k):
            continue
        clear.append((src, dst, mid))
    assert len(clear) >= 3
    pixels = page.evaluate("""(points) => { const c = document.querySelector('.viewer canvas.ink');
        const r = c.getBoundingClientRect(), s = c.width / r.width;
        const img = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return points.map(([x, y]) => { const i = 4 * (Math.round((y - r.top) * s) * c.width + Math.round((x - r.left) * s));
            return Array.from(img.slice(i, i + 4)); }); }""", [list(mid) for _, _, mid in clear])
    for (src, dst, mid), rgba in zip(clear, pixels):
        assert rgba[3] > 0, (src, dst, rgba)
        assert (rgba[2] > rgba[0]) == (weight[(src, dst)] > 0), (src, dst, rgba)
        page.mouse.move(*mid)
        assert page.locator(".viewer [data-role=hover]").inner_text().startswith(f"{src} \u2192 {dst} ")
    page.mouse.move(2, 2)
    assert w.errors == []


def test_labels_wait_until_zoomed_in_far_enough_to_read(browser, big_run):
    """A large circuit opens zoomed out with no labels to measure; zoomed in, every box on
    screen has its label (and boxes far off screen none yet), also after panning and
    unfolding; folded tokens are no elements until unfolded. A small one opens labelled."""
    w = PageWatch(browser)
    w.open(big_run / "report" / "circuit-generated.html")
    page = w.page
    labels = """() => { const v = window.circuitViewers[0], cy = v.cy, s = v.size();
        const boxes = cy.nodes().filter(n => !n.hasClass('hidden'));
        const labelled = n => n.style('label') === n.data('label');
        const onScreen = boxes.filter(n => { const b = n.renderedBoundingBox({includeLabels: false});
            return b.x2 > 0 && b.x1 < s.width && b.y2 > 0 && b.y1 < s.height; });
        return [cy.zoom(), onScreen.length, onScreen.filter(labelled).length, boxes.filter(labelled).length, boxes.length]; }"""
    zoom, on_screen, on_labelled, labelled, total = page.evaluate(labels)
    assert zoom < 0.6 and on_screen == total > 500 and labelled == 0
    assert page.evaluate("window.circuitViewers[0].cy.nodes('.node.site-embed').length") == 0
    page.locator(".viewer [data-role=graph]").focus()
    while page.evaluate("window.circuitViewers[0].cy.zoom()") < 0.6:
        page.keyboard.press("+")
    zoom, on_screen, on_labelled, labelled, total = page.evaluate(labels)
    assert 0 < on_screen == on_labelled <= labelled < total
    for key in ("ArrowDown",) * 6 + ("ArrowLeft",) * 6:
        page.keyboard.press(key)
    zoom, on_screen2, on_labelled2, labelled2, total = page.evaluate(labels)
    assert 0 < on_screen2 == on_labelled2 and labelled2 > labelled
    page.locator(".viewer [data-act=unfold]").click()  # fits: zoomed out, nothing new to label
    page.locator(".viewer [data-role=graph]").focus()
    while page.evaluate("window.circuitViewers[0].cy.zoom()") < 0.6:
        page.keyboard.press("+")
    zoom, on_screen, on_labelled, labelled, total = page.evaluate(labels)
    assert 0 < on_screen == on_labelled
    w.open(big_run / "report" / "circuit-single_double_quote.html")
    zoom, on_screen, on_labelled, labelled, total = page.evaluate(labels)
    assert zoom >= 0.6 and on_screen == on_labelled == labelled == total
    assert w.errors == []


HOLD_TIMERS = """window.__held = [];
(function () { const later = window.setTimeout;
  window.setTimeout = function (f, ms) { if (ms) { return later(f, ms); } window.__held.push(f); return 0; }; })();"""

INK_FILL = """(rgb) => { const c = document.querySelector('.viewer canvas.ink'), t = document.createElement('canvas');
    t.width = c.width; t.height = c.height;
    const g = t.getContext('2d', {willReadFrequently: true});
    g.drawImage(c, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) <= 3 && d[i + 3] === 255) { n++; } }
    return n; }"""

NEURON_FILL = [0xdc, 0xfc, 0xe7]  # an MLP neuron box's fill: nothing else on the ink layer has it


def test_large_circuit_is_painted_first_and_made_live_on_the_first_press(browser, big_run):
    """Held before its boxes become elements (zero-delay timers kept back), the 1,000-node
    page has painted them on the ink layer and offers no viewer API yet; a press on the
    graph makes every box an element at once and clears the painted ones."""
    w = PageWatch(browser)
    page = w.page
    page.add_init_script(HOLD_TIMERS)
    page.goto((big_run / "report" / "circuit-generated.html").as_uri())
    page.wait_for_function("() => performance.getEntriesByName('viewer-built').length === 1")
    page.wait_for_function(f"() => ({INK_FILL})({NEURON_FILL}) > 100")  # the first frame, boxes painted
    assert page.evaluate("window.circuitViewers === undefined")
    page.locator(".viewer [data-role=graph]").dispatch_event("pointerdown")
    page.evaluate("() => { const held = window.__held; window.__held = []; held.forEach(f => f()); }")
    page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 1")
    want = page.evaluate("""() => { const d = JSON.parse(document.getElementById('circuit-data').textContent);
        const folded = new Set(d.groups.flatMap(g => g.members));
        return d.nodes.filter((n, i) => !folded.has(i)).length + d.groups.length; }""")
    assert len(page.evaluate("() => window.circuitViewers[0].boxes()")) == want > 600
    page.wait_for_function(f"() => ({INK_FILL})({NEURON_FILL}) === 0")  # no box painted twice
    assert w.errors == [] and w.dialogs == []


def test_large_circuit_becomes_live_by_itself(browser, big_run):
    """Left alone, the page makes its boxes elements after the first frame; the marks the
    benchmark reads come in order."""
    w = PageWatch(browser)
    w.open(big_run / "report" / "circuit-generated.html")
    page = w.page
    page.wait_for_function("() => performance.getEntriesByName('viewer-ready').length === 1")
    t = page.evaluate("() => ['viewer-built', 'viewer-drawn', 'viewer-ready'].map(m => performance.getEntriesByName(m)[0].startTime)")
    assert t[0] <= t[1] <= t[2]
    assert page.evaluate("window.circuitViewers[0].cy.nodes('.node').length") > 600
    assert w.errors == [] and w.dialogs == []
