"""`sparsecircuits export --format attribution-graph`: circuit-tracer / Neuronpedia graph JSON.

The schema is docs/attribution_graph.schema.json, derived from the pydantic models in
circuit_tracer/frontend/graph_models.py (github.com/safety-research/circuit-tracer)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.run import load_run

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "attribution_graph.schema.json").read_text())


def _export(run, out, *extra) -> int:
    return main(["export", str(run), "--task", "toy", "--format", "attribution-graph", "--out", str(out), *extra])


def test_export_meets_the_viewers_schema_and_keeps_the_circuit(toy_circuit_run, tmp_path, capsys):
    run, _ = toy_circuit_run
    out = tmp_path / "graph.json"
    assert _export(run, out, "--prompt", "x x A", "--correct", " P") == 0
    assert "nodes" in capsys.readouterr().out
    graph = json.loads(out.read_text())
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(graph, SCHEMA)

    circuit = json.loads((run / "circuits" / "toy" / "circuit.json").read_text())
    internal = [n for n in circuit["nodes"] if n["site"] not in ("embed", "logit")]
    feats = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert len(feats) == len(internal) == 3
    # all at the last of the 3 prompt positions, MLP sites on row 2*0+1
    assert {(n["layer"], n["ctx_idx"]) for n in feats} == {("1", 2)}
    loaded = load_run(run)
    _, cache = loaded.model.run_with_cache(torch.tensor([loaded.encode("x x A")]))
    neuron = next(n for n in feats if "hook_post:0" in n["clerp"])
    assert neuron["activation"] == pytest.approx(float(cache["blocks.0.mlp.hook_post"][0, 2, 0]))
    assert neuron["activation"] > 1.0  # "A" fires the neuron
    ids = {n["node_id"] for n in graph["nodes"]}
    assert len(ids) == len(graph["nodes"])
    assert all(lk["source"] in ids and lk["target"] in ids for lk in graph["links"])
    weights = {(lk["source"], lk["target"]): lk["weight"] for lk in graph["links"]}
    gid = {n["clerp"].split("(")[-1].rstrip(")"): n["node_id"] for n in feats}
    assert weights[(gid["blocks.0.hook_mlp_in:0"], gid["blocks.0.mlp.hook_post:0"])] == pytest.approx(5.0)
    targets = [n for n in graph["nodes"] if n.get("is_target_logit")]
    assert len(targets) == 1 and targets[0]["feature"] == 4 and 0.5 < targets[0]["token_prob"] <= 1.0  # "P"
    assert len(graph["metadata"]["prompt_tokens"]) == 3 and graph["metadata"]["prompt"] == "x x A"


def test_export_errors_are_one_line(toy_circuit_run, tmp_path, capsys):
    run, _ = toy_circuit_run
    assert main(["export", str(run), "--task", "missing", "--out", str(tmp_path / "g.json")]) == 2
    assert "prune" in capsys.readouterr().err
    assert _export(run, tmp_path / "g.json") == 2  # a custom task has no default prompt
    assert "unknown task" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()
