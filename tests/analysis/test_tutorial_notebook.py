"""docs/tutorial.ipynb runs, on a model whose circuit is known, and is committed without outputs.

The notebook is executed by a real Jupyter kernel (nbclient + ipykernel, local, no network)
with the run directory set the way papermill sets parameters: a cell inserted after the
one tagged ``parameters``.  The model is the hand-built one of test_learned_tasks.py, which
has learned single_double_quote (the notebook's default task) through three known nodes,
so the assertions read the circuit, the checks and the plots out of the cells' outputs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from analysis_models import QUOTE_PATH, save_learned_run
from circuit_schema import schema_errors

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "tutorial.ipynb"
FAST = {"steps": 40, "k_coefs": [0.003, 0.01], "threads": 1}


def _cells(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def _text(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for c in code:
        assert c.outputs == [] and c.execution_count is None, c.source[:60]
    params = _cells(nb, "parameters")
    assert len(params) == 1 and 'run_dir = "runs/demo"' in params[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_tutorial_finds_the_known_circuit_and_checks_it(tmp_path, tiny_data_dir):
    from nbclient import NotebookClient

    run_dir = save_learned_run(tmp_path / "run", tiny_data_dir)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = nb.cells.index(_cells(nb, "parameters")[0])
    injected = nbformat.v4.new_code_cell(
        f"run_dir = {str(run_dir)!r}\nprune_settings = {FAST!r}\nsave_circuit = True")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, injected)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()

    # the model's answer and its activations
    out = _text(_cells(nb, "run-with-cache")[0])
    assert float(re.search(r"at the last token: (-?[\d.]+)", out).group(1)) > 0  # the model answers right
    n = re.search(r"blocks\.0\.attn\.hook_pattern\s+\(1, 2, (\d+), (\d+)\)", out)
    assert n and n.group(1) == n.group(2)

    # the circuit found is exactly the model's quote path (none of its bracket path)
    lines = _text(_cells(nb, "circuit-nodes")[0]).splitlines()
    assert lines[0].startswith("3 nodes")
    assert {line.strip() for line in lines[1:]} == QUOTE_PATH
    links = _text(_cells(nb, "circuit-links")[0])
    assert "blocks.0.hook_attn_in:0 -> blocks.0.attn.hook_v:0" in links and "(weight)" in links

    # sufficient alone, necessary to the model
    ev = {m.group(1): (float(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"^(full model|circuit alone|model without the circuit)\s+loss ([\d.]+)\s+accuracy (\d+)%",
        _text(_cells(nb, "evaluate")[0]), re.M)}
    assert ev["circuit alone"][0] < 0.15 and ev["circuit alone"][1] == 100
    assert ev["model without the circuit"][1] <= 60

    # the report card, as run_checks gave it
    verdicts = {m.group(1): m.group(2) for m in re.finditer(
        r"^(\w+)\s+[\d.]+\s+[\d.]+\s+(PASS|FLAG)\b", _text(_cells(nb, "checks")[0]), re.M)}
    assert {"necessity", "sufficiency", "random_baseline", "node_roles", "attention"} <= set(verdicts)
    assert all(verdicts[c] == "PASS" for c in ("necessity", "sufficiency", "random_baseline", "node_roles"))
    assert verdicts["attention"] == "FLAG"  # the head is kept by its value channel only: the check says so

    # every plot cell drew a figure
    for cell in _cells(nb, "plot"):
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source[:60]

    # saved where `report` looks, with its checks, in the published schema; nothing else written
    saved = json.loads((run_dir / "circuits" / "single_double_quote" / "circuit.json").read_text())
    assert not schema_errors(saved)
    assert {n["id"] for n in saved["nodes"] if n["site"] not in ("embed", "logit")} == QUOTE_PATH
    assert saved["checks"]["necessity"]["verdict"] == "pass"
    assert list(cwd.iterdir()) == []
