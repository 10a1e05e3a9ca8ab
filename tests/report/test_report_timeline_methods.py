"""The index page's circuits during training (timelines/) and learned-vs-attribution table."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from report_fixtures import SCRIPT_TOKEN, quote_circuit

from sparsecircuits.circuit_sizes import internal_nodes
from sparsecircuits.report.html import build_report, write_report

TASK = "single_double_quote"


def _timeline() -> dict:
    """Three kept steps: not learned at 100, then two circuits sharing two of their nodes."""
    a, b, c = "blocks.0.hook_attn_in:1", "blocks.1.attn.hook_v:3", f"blocks.2.hook_mlp_in:{SCRIPT_TOKEN}"
    return {"task": TASK, "settings": {"target_loss": 0.15, "ablation": "mean"}, "first_learned_step": 200,
            "steps": [
                {"step": 100, "pruned": False, "full_accuracy": 0.5, "tokens": 1000, "nodes": []},
                {"step": 200, "pruned": True, "full_accuracy": 0.9, "circuit_accuracy": 0.95, "n_nodes": 3,
                 "n_edges": 5, "circuit_loss": 0.1, "jaccard_previous": None, "jaccard_last": 0.5, "forced": False,
                 "tokens": 2000, "val_loss": 3.2, "nodes": [a, b, c]},
                {"step": 300, "pruned": True, "full_accuracy": 1.0, "circuit_accuracy": 1.0, "n_nodes": 2,
                 "n_edges": 2, "circuit_loss": 0.05, "jaccard_previous": 0.5, "jaccard_last": 1.0, "forced": False,
                 "tokens": 3000, "nodes": [a, b]}],
            "nodes": [{"id": a, "steps": [200, 300], "persistence": 1.0, "first": 200, "in_last": True},
                      {"id": b, "steps": [200, 300], "persistence": 1.0, "first": 200, "in_last": True},
                      {"id": c, "steps": [200], "persistence": 0.5, "first": 200, "in_last": False}]}


def test_timeline_is_plotted_per_task_on_the_index(run_dir):
    (run_dir / "timelines").mkdir()
    (run_dir / "timelines" / f"{TASK}.json").write_text(json.dumps(_timeline()))
    write_report(run_dir)
    index = (run_dir / "report" / "index.html").read_text()
    block = index[index.index(f'id="timeline-{TASK}"'):]
    assert "Circuits during training" in index and "timeline-accuracy" in block and "timeline-size" in block
    grid = re.search(r'<svg class="persistence".*?</svg>', block, re.S).group(0)
    assert grid.count('fill="#2563eb"') == 5  # one cell per (node, step) kept: 2 + 2 + 1
    assert grid.count('fill="#eef0f3"') == 1  # the step that was not pruned
    assert SCRIPT_TOKEN not in index and "&lt;script&gt;" in grid  # node ids are text
    assert "first learned the task at step 200" in block and "2 node(s) in every pruned circuit, 3 in any" in block
    assert "not learned: not pruned" in block
    assert 'href="circuit-single_double_quote.html"' in block
    page = (run_dir / "report" / f"circuit-{TASK}.html").read_text()
    assert f'href="index.html#timeline-{TASK}"' in page
    assert "timeline-bracket_counting" not in index  # only tasks with a timeline
    assert "index.html#timeline" not in (run_dir / "report" / "circuit-bracket_counting.html").read_text()


def test_a_damaged_timeline_is_a_warning(run_dir):
    (run_dir / "timelines").mkdir()
    (run_dir / "timelines" / f"{TASK}.json").write_text("{not json")
    _, warnings = build_report(run_dir)
    assert any("timeline" in w for w in warnings)
    assert "Circuits during training" not in (run_dir / "report" / "index.html").read_text()


def _attribution_circuit() -> dict:
    """The quote circuit with its last 10 internal nodes dropped (and their links)."""
    data = copy.deepcopy(quote_circuit())
    drop = set(internal_nodes(data)[-10:])
    data["nodes"] = [n for n in data["nodes"] if n["id"] not in drop]
    data["links"] = [ln for ln in data["links"] if ln["source"] not in drop and ln["target"] not in drop]
    data["metrics"].update(n_nodes=len(internal_nodes(data)), n_edges=40, circuit_loss=0.12, method="attribution")
    return data


@pytest.fixture
def both_methods(run_dir) -> Path:
    folder = run_dir / "circuits" / f"{TASK}@attribution"
    folder.mkdir()
    (folder / "circuit.json").write_text(json.dumps(_attribution_circuit()))
    return run_dir


def test_learned_and_attribution_side_by_side(both_methods):
    run_dir = both_methods
    learned, attr = quote_circuit(), _attribution_circuit()
    n_learned, n_attr = learned["metrics"]["n_nodes"], attr["metrics"]["n_nodes"]
    overlap = len(internal_nodes(attr)) / len(internal_nodes(learned))  # the attribution set is a subset
    write_report(run_dir)
    index = (run_dir / "report" / "index.html").read_text()
    table = re.search(r'<table class="data methods">.*?</table>', index, re.S).group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    assert len(rows) == 1  # only the task pruned both ways
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)]
    assert cells[0] == TASK and cells[1] == str(n_learned) and cells[4] == str(n_attr)
    assert cells[5] == "40" and cells[6] == "0.120"
    assert cells[7] == f"{overlap:.2g}"
    edges_ratio = 40 / learned["metrics"]["n_edges"]
    assert cells[8].startswith(f"{edges_ratio:.3g}\u00d7 edges, {n_attr / n_learned:.3g}\u00d7 nodes")
    page = (run_dir / "report" / f"methods-{TASK}.html").read_text()
    assert 'id="circuit-a"' in page and 'id="circuit-b"' in page and "learned" in page and "attribution" in page
    # the attribution circuit has a row of its own, out of the geometric mean
    assert f'{TASK}</a> (attribution)' in index
    note = re.search(r"<p class=\"muted\">(Geometric mean|No circuit met).*?</p>", index, re.S).group(0)
    (run_dir / "circuits" / f"{TASK}@attribution" / "circuit.json").unlink()
    write_report(run_dir)
    assert note in (run_dir / "report" / "index.html").read_text()


def test_the_side_by_side_page_goes_with_its_circuit(both_methods):
    run_dir = both_methods
    write_report(run_dir)
    assert (run_dir / "report" / f"methods-{TASK}.html").is_file()
    (run_dir / "circuits" / f"{TASK}@attribution" / "circuit.json").unlink()
    write_report(run_dir)
    assert not (run_dir / "report" / f"methods-{TASK}.html").exists()
    assert "Learned masks and attribution" not in (run_dir / "report" / "index.html").read_text()
