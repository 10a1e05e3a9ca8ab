"""The report's bridged-pair section and steering plots: what `bridge eval` and `bridge steer`
wrote, shown on the index and circuit pages, escaped, and tolerant of damaged files."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from sparsecircuits.cli import main
from sparsecircuits.report.bridges import pair_section
from sparsecircuits.report.html import write_report
from sparsecircuits.report.loading import load_run_data

HOSTILE = "<script>window.__pwned=1</script>"


def _circuit(task: str) -> dict:
    nodes = [{"id": "blocks.1.hook_attn_in:3", "hook": "blocks.1.hook_attn_in", "index": 3, "layer": 1,
              "site": "attn_in", "head": None, "token": None, "mask": 0.9},
             {"id": "unembed:5", "hook": "unembed", "index": 5, "layer": None, "site": "logit", "head": None,
              "token": "')", "mask": None}]
    return {"task": task, "forced": False, "metrics": {"n_nodes": 1, "n_edges": 1}, "nodes": nodes,
            "links": [{"source": nodes[0]["id"], "target": nodes[1]["id"], "weight": 0.5}]}


def _bridged_run(path: Path) -> Path:
    """A run directory as `bridge train`, `bridge eval`, `prune` and `bridge steer` leave it."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {"n_layer": 2, "d_model": 16}, "train": {}, "seed": 0}))
    for task in ("single_double_quote", "bracket_counting"):
        (path / "circuits" / task).mkdir(parents=True)
        (path / "circuits" / task / "circuit.json").write_text(json.dumps(_circuit(task)))
    (path / "bridge.json").write_text(json.dumps({"schema_version": 1, "dense_run": f"/runs/{HOSTILE}",
                                                 "n_layer": 2, "d_dense": 16, "d_sparse": 24, "encoder_k": 6}))
    rows = [{"location": loc, "nmse_encoder": 0.25, "nmse_decoder": 0.5, "kl_dense_to_sparse": 0.125,
             "kl_sparse_to_dense": 0.0625} for loc in ("blocks.0.hook_resid_pre", HOSTILE)]
    (path / "bridge_eval.json").write_text(json.dumps({
        "batches": 1, "tokens": 4096, "sparse_val_loss": 3.5, "dense_val_loss": 3.25,
        "kl_dense_to_sparse_model": 0.75, "locations": rows}))
    steer = path / "steer" / "single_double_quote"
    steer.mkdir(parents=True)
    (steer / "blocks.1.hook_attn_in_3.json").write_text(json.dumps({
        "task": "single_double_quote", "node": "blocks.1.hook_attn_in:3", "n_prompts": 12,
        "strengths": [0.0, 0.5, 1.0], "p_counterfactual": [0.01, 0.1, 0.5],
        "random": {f"{HOSTILE}:1": [0.01, 0.011, 0.012]}, "random_mean": [0.01, 0.011, 0.012],
        "p_counterfactual_unsteered_on_counterfactual_prompt": 0.875}))
    return path


def _page(run: Path, name: str) -> str:
    return (run / "report" / name).read_text(encoding="utf-8")


def test_index_and_circuit_pages_show_the_pair_and_the_curve(tmp_path):
    run = _bridged_run(tmp_path / "bridged")
    write_report(run)
    index = _page(run, "index.html")
    assert "Bridged pair" in index and "Steering the dense model" not in index
    row = re.search(r"<tr><td><code>blocks\.0\.hook_resid_pre</code></td>.*?</tr>", index).group(0)
    assert [c for c in re.findall(r">([0-9.]+)<", row)] == ["0.25", "0.5", "0.125", "0.0625"]
    assert "3.5 / 3.25" in index and "4,096" in index

    quote = _page(run, "circuit-single_double_quote.html")
    assert "Bridged pair" in quote and "Steering the dense model" in quote
    img = re.search(r'<img class="plot steering"[^>]*src="data:image/png;base64,([^"]+)"', quote)
    assert img and base64.b64decode(img.group(1)).startswith(b"\x89PNG")
    row = re.search(r"<tr><td class=\"num\">1</td>.*?</tr>", quote).group(0)  # strength 1: node and random
    assert ">0.5<" in row and ">0.012<" in row
    assert "0.875" in quote

    other = _page(run, "circuit-bracket_counting.html")
    assert "No steering curve for this task yet" in other and "plot steering" not in other
    for page in (index, quote, other):
        assert HOSTILE not in page and "&lt;script&gt;window" in page


def test_damaged_files_are_warnings_and_hide_nothing_else(tmp_path):
    run = _bridged_run(tmp_path / "bridged")
    (run / "bridge_eval.json").write_text("{not json")
    (run / "steer" / "single_double_quote" / "blocks.0.hook_mlp_in_1.json").write_text(
        json.dumps({"strengths": [0, 1], "p_counterfactual": [0.1]}))
    data = load_run_data(run)
    assert any("bridge_eval.json" in w for w in data.warnings)
    assert any("blocks.0.hook_mlp_in_1.json" in w and "unequal" in w for w in data.warnings)
    assert [c["node"] for c in data.bridge["steer"]["single_double_quote"]] == ["blocks.1.hook_attn_in:3"]
    write_report(run)
    assert "No measurement yet" in _page(run, "index.html")
    assert "plot steering" in _page(run, "circuit-single_double_quote.html")


def test_an_ordinary_run_has_no_bridge_section(tmp_path):
    run = _bridged_run(tmp_path / "plain")
    (run / "bridge.json").unlink()
    assert load_run_data(run).bridge is None
    write_report(run)
    assert "Bridged pair" not in _page(run, "index.html")
    assert "Steering" not in _page(run, "circuit-single_double_quote.html")


def test_the_report_reads_what_the_commands_write(bridged_run):
    assert main(["bridge", "eval", str(bridged_run), "--batches", "1"]) == 0
    assert main(["bridge", "steer", str(bridged_run), "--task", "single_double_quote", "--node",
                 "blocks.0.hook_mlp_in:2", "--strengths", "0,1", "--pairs", "2", "--random", "1"]) == 0
    data = load_run_data(bridged_run)
    assert not [w for w in data.warnings if "bridge" in w or "steer" in w]
    assert "blocks.0.hook_mlp_in:2" in [c["node"] for c in data.bridge["steer"]["single_double_quote"]]
    html = pair_section(data.bridge)
    assert html.count("<tr><td><code>blocks.") == 4 and "No measurement yet" not in html
