"""The circuit page's stability section, its core nodes in the viewer's data, and the
loss-vs-size plot."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from report_fixtures import quote_circuit

from sparsecircuits.report.html import write_report
from sparsecircuits.rundir import RunDir

DATA_RE = re.compile(r'<script type="application/json" id="circuit-data">(.*?)</script>', re.S)
IMG_RE = re.compile(r'<img class="plot loss-vs-size"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
TASK = "single_double_quote"
CORE = ["blocks.0.hook_mlp_in:12", "blocks.0.mlp.hook_post:301", "blocks.1.attn.hook_q:53"]


def _internal(circuit: dict) -> list[str]:
    return [n["id"] for n in circuit["nodes"] if n["site"] not in ("embed", "logit")]


def _record(first_nodes: list[str]) -> dict:
    return {"task": TASK, "seeds": [0, 1, 2], "target_loss": 0.15,
            "runs": [{"seed": s, "n_nodes": n, "n_edges": e, "circuit_loss": 0.1, "circuit_accuracy": 0.97,
                      "target_met": True, "nodes": first_nodes if s == 0 else CORE}
                     for s, n, e in ((0, 16, 25), (1, 3, 2), (2, 3, 2))],
            "sizes": {"n_nodes": {"min": 3, "max": 16, "mean": 7.33, "std": 6.1},
                      "n_edges": {"min": 2, "max": 25, "mean": 9.67, "std": 10.8}},
            "jaccard": {"mean": 0.45, "min": 0.19, "pairs": 3},
            "core": {"fraction": 0.8, "min_runs": 3, "nodes": CORE, "n_nodes": 3, "n_edges": 2, "loss": 0.31,
                     "accuracy": 0.9, "met_heldout": False}}


def _page(run_dir: Path) -> str:
    write_report(run_dir)
    return (run_dir / "report" / f"circuit-{TASK}.html").read_text(encoding="utf-8")


def test_core_nodes_are_marked_for_the_viewer_and_the_section_shows_the_spread(run_dir):
    RunDir(run_dir).write_stability(TASK, _record(_internal(quote_circuit())))
    page = _page(run_dir)
    data = json.loads(DATA_RE.search(page).group(1))
    assert sorted(data["nodes"][i]["id"] for i in data["core"]) == sorted(CORE)
    section = re.search(r'<section class="stability">.*?</section>', page, re.S).group(0)
    assert "Stability across seeds" in section and "3\u201316" in section and "0.45" in section
    assert "3 in this circuit" in section
    assert '<div class="card bad"><div class="card-label">core loss</div>' in section  # 0.31 > target 0.15
    assert section.count("<tr>") == 1 + 3  # header and one row per seed


def test_a_stability_record_of_another_circuit_is_a_warning_not_a_core(run_dir):
    RunDir(run_dir).write_stability(TASK, _record(CORE))  # the circuit there now is another one
    page = _page(run_dir)
    assert json.loads(DATA_RE.search(page).group(1))["core"] == []
    assert 'class="stability"' not in page
    index = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    assert "stability.json: made with another circuit" in index


def test_no_stability_file_no_section_and_no_core(run_dir):
    page = _page(run_dir)
    assert json.loads(DATA_RE.search(page).group(1))["core"] == []
    assert 'class="stability"' not in page and not IMG_RE.search(page)  # no curve in this circuit either


def test_loss_vs_size_is_one_inline_png_on_the_circuit_page(run_dir):
    path = run_dir / "circuits" / TASK / "circuit.json"
    circuit = json.loads(path.read_text())
    rows = lambda f: [{"n_nodes": k, "n_edges": k, "loss": f(k), "accuracy": 0.9} for k in range(0, 21, 4)]  # noqa: E731
    circuit["metrics"]["loss_vs_size"] = {"learned": rows(lambda k: 1.4 / (1 + k)),
                                          "attribution": rows(lambda k: 1.4 / (1 + k / 4))}
    path.write_text(json.dumps(circuit))
    page = _page(run_dir)
    found = IMG_RE.findall(page)
    assert len(found) == 1
    assert base64.b64decode(found[0]).startswith(b"\x89PNG\r\n\x1a\n")
    # a malformed curve is skipped, not an error
    circuit["metrics"]["loss_vs_size"] = {"learned": [{"n_nodes": "x"}], "attribution": "nope"}
    path.write_text(json.dumps(circuit))
    assert not IMG_RE.search(_page(run_dir))


@pytest.mark.slow
def test_the_viewer_rings_the_core_and_names_it(browser, run_dir):
    from browser_helpers import PageWatch
    from test_report_browser import click_node

    RunDir(run_dir).write_stability(TASK, _record(_internal(quote_circuit())))
    write_report(run_dir)
    page_path = run_dir / "report" / f"circuit-{TASK}.html"
    w = PageWatch(browser)
    w.page.goto(page_path.as_uri())
    page = w.page
    page.wait_for_function("() => window.circuitViewers && window.circuitViewers.length === 1")
    ringed = page.evaluate("""() => { const v = window.circuitViewers[0];
        return v.cy.nodes('.core').map(n => v.nodeId(n.id())); }""")
    assert sorted(ringed) == sorted(CORE)
    assert "stable core across seeds" in page.inner_text("[data-role=legend]")
    shows = "(id) => document.querySelector('[data-role=panel]').innerText.includes(id)"
    click_node(page, CORE[0])
    page.wait_for_function(shows, arg=CORE[0])  # the panel follows a selection a tick later
    assert "stable core" in page.inner_text("[data-role=panel]")
    click_node(page, "blocks.1.hook_attn_out:55")  # not in the core
    page.wait_for_function(shows, arg="blocks.1.hook_attn_out:55")
    assert "stable core" not in page.inner_text("[data-role=panel]")
    assert w.errors == [] and w.foreign_requests(page_path) == []
