"""The frontier sweep end to end on the smoke grid, and the matched-loss ratio."""
from __future__ import annotations

import json
import math

import pytest

from sparsecircuits.analysis.frontier import (
    GRIDS,
    density_label,
    grid_points,
    matched_ratio,
    point_name,
    ratio_lines,
    summarize,
)
from sparsecircuits.cli import main


def _files(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_data_dir):
    out = tmp_path_factory.mktemp("frontier") / "fr"
    rc = main(["frontier", "--grid", "smoke", "--out", str(out), "--data", str(tiny_data_dir), "--no-progress"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_smoke_grid_writes_frontier_json_and_plots(smoke):
    res = json.loads((smoke / "frontier.json").read_text())
    g = GRIDS["smoke"]
    assert res["grid"] == "smoke" and res["tasks"] == g["tasks"] and res["targets"] == sorted(g["targets"])
    assert len(res["models"]) == len(g["widths"]) * len(g["densities"])
    assert res["edge_count"] == "weights"  # the paper's count: nonzero weights between kept nodes
    for m in res["models"]:
        assert {"name", "density", "width", "nonzeros", "val_loss", "tasks", "geomean"} <= set(m)
        assert m["training"] == "trained" and math.isfinite(m["val_loss"])
        assert (smoke / m["name"] / "model.safetensors").is_file()
        task = m["tasks"]["single_double_quote"]
        assert set(task["targets"]) == {"0.3", "1.4"}
        for t in task["targets"].values():
            assert {"nodes", "edges", "met"} <= set(t)
            assert (t["nodes"] is None) == (not t["met"])
    dense = [m for m in res["models"] if m["density"] == 1.0]
    sparse = [m for m in res["models"] if m["density"] < 1.0]
    assert all(m["nonzeros"] == m["sparse_params"] for m in dense)
    assert all(m["nonzeros"] < 0.3 * m["sparse_params"] for m in sparse)  # density 1/4
    s07 = res["summary"]["1.4"]
    # untrained toy models: the target 1.4 (just above chance, 2 ln 2 per pair) is met by empty circuits,
    # which the summary sets aside as trivial; any non-empty ones give a dense/sparse ratio
    if s07["trivial_tasks"] == ["single_double_quote"]:
        assert s07["dense_over_sparse"] == {} and all(m["geomean"]["1.4"]["edges"] is None for m in res["models"])
    else:
        assert "1/4" in s07["dense_over_sparse"]
    assert res["summary"]["0.3"]["dense_over_sparse"] == {}  # out of reach for every model
    for name in ("frontier_edges.png", "frontier_nodes.png"):
        data = (smoke / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.slow
def test_second_call_reuses_models_and_circuits(smoke, tiny_data_dir, capsys):
    before = _files(smoke)
    rc = main(["frontier", "--grid", "smoke", "--out", str(smoke), "--data", str(tiny_data_dir), "--no-progress"])
    assert rc == 0
    after = _files(smoke)
    assert set(after) == set(before)  # no new files
    changed = {p for p in after if after[p] != before[p]}
    assert changed <= {p for p in after if p.name.startswith("frontier")}  # only the summary is rewritten
    res = json.loads((smoke / "frontier.json").read_text())
    assert all(m["training"] == "reused" for m in res["models"])
    assert all(t["cached"] for m in res["models"] for t in m["tasks"].values())
    assert "frontier: 4 models" in capsys.readouterr().out


@pytest.mark.slow
def test_interrupted_model_resumes_from_checkpoint(smoke, tiny_data_dir):
    name = grid_points("smoke")[0].name
    (smoke / name / "model.safetensors").unlink()
    rc = main(["frontier", "--grid", "smoke", "--out", str(smoke), "--data", str(tiny_data_dir), "--no-progress"])
    assert rc == 0
    res = json.loads((smoke / "frontier.json").read_text())
    how = {m["name"]: m["training"] for m in res["models"]}
    assert how[name] == "resumed" and (smoke / name / "model.safetensors").is_file()
    assert sum(v == "reused" for v in how.values()) == len(how) - 1


@pytest.mark.slow
def test_check_command_on_a_smoke_run(smoke, capsys):
    run_dir = smoke / grid_points("smoke")[1].name
    rc = main(["check", str(run_dir), "--task", "single_double_quote", "--checks",
               "necessity,sufficiency,node_roles,sufficiency_shifted", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "necessity" in out and "checks pass" in out
    obj = json.loads((run_dir / "circuits" / "single_double_quote" / "circuit.json").read_text())
    assert set(obj["checks"]) == {"necessity", "sufficiency", "node_roles", "sufficiency_shifted"}
    for r in obj["checks"].values():
        assert r["verdict"] in ("pass", "flag") and isinstance(r["threshold"], float)
    assert obj["nodes"] is not None and obj["schema_version"] == 1  # the circuit itself is untouched
    rc = main(["check", str(run_dir), "--task", "bracket_counting", "--no-progress"])
    assert rc == 2 and "no circuit for task bracket_counting" in capsys.readouterr().err
    obj["task"] = "mine"  # a circuit of a user task needs the examples it was pruned on
    (run_dir / "circuits" / "mine").mkdir()
    (run_dir / "circuits" / "mine" / "circuit.json").write_text(json.dumps(obj))
    rc = main(["check", str(run_dir), "--task", "mine", "--no-progress"])
    assert rc == 2 and "--tasks-file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--grid", "smoke", "--tasks", "nope"], "unknown task"),
    (["--grid", "smoke", "--targets", "a,b"], "--targets"),
    (["--grid", "smoke"], "needs --data"),
    (["--grid", "smoke", "--steps", "0"], "steps must be >= 1"),
])
def test_frontier_bad_input(tmp_path, capsys, argv, msg):
    rc = main(["frontier", "--out", str(tmp_path / "x")] + argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_matched_ratio_on_synthetic_curves():
    # log-size linear in loss; sparse circuits 16x smaller at every loss
    dense = [(3.0, 1600.0), (2.0, 6400.0), (2.5, 3200.0)]
    sparse = [(3.5, 50.0), (2.5, 200.0)]
    r = matched_ratio(dense, sparse)
    assert r["ratio"] == pytest.approx(16.0, rel=1e-6) and not r["extrapolated"]
    assert r["loss_range"] == [2.5, 3.0]
    # no overlap: the dense curve is extended by its fitted line
    r = matched_ratio(dense, [(3.5, 50.0), (4.0, 25.0)])
    assert r["extrapolated"] and r["ratio"] == pytest.approx(16.0, rel=1e-6)
    # a ratio that varies along the curve: geometric mean over the shared range
    r = matched_ratio([(1.0, 100.0), (2.0, 100.0)], [(1.0, 10.0), (2.0, 1.0)])
    assert r["ratio"] == pytest.approx(10 ** 1.5, rel=1e-6)  # 10x at loss 1, 100x at loss 2
    assert matched_ratio([], sparse)["ratio"] is None
    assert matched_ratio([(1.0, 5.0)], [(2.0, 5.0)])["ratio"] is None


def test_summarize_uses_common_tasks():
    def model(density, loss, sizes):
        return {"density": density, "val_loss": loss, "tasks": {
            t: {"targets": {"0.15": {"edges": e, "nodes": e, "met": e is not None}}} for t, e in sizes.items()}}

    models = [model(1.0, 3.0, {"a": 1600, "b": 160}), model(1.0, 2.0, {"a": 6400, "b": 640}),
              model(0.25, 3.0, {"a": 100, "b": None}), model(0.25, 2.0, {"a": 400, "b": 40})]
    s = summarize(models, ["a", "b"], [0.15])
    assert s["0.15"]["common_tasks"] == ["a"]  # b missed the target in one model
    assert s["0.15"]["dense_over_sparse"]["1/4"]["edges"]["ratio"] == pytest.approx(16.0)
    assert models[0]["geomean"]["0.15"]["edges"] == pytest.approx(1600)
    # a task every model solves with an empty circuit is set aside, not counted as size 1
    for m in models:
        m["tasks"]["c"] = {"targets": {"0.15": {"edges": 0, "nodes": 0, "met": True}}}
    s = summarize(models, ["a", "b", "c"], [0.15])
    assert s["0.15"]["trivial_tasks"] == ["c"] and s["0.15"]["common_tasks"] == ["a"]
    assert s["0.15"]["dense_over_sparse"]["1/4"]["edges"]["ratio"] == pytest.approx(16.0)


def test_summarize_per_task_ratios_when_models_learned_different_tasks():
    def model(density, loss, sizes):
        return {"density": density, "val_loss": loss, "tasks": {
            t: {"targets": {"0.3": {"edges": e, "nodes": e, "met": e is not None}}} for t, e in sizes.items()}}

    # task "a" is 4x smaller in sparse models, "b" 100x; no task is met by every model
    models = [model(1.0, 3.0, {"a": 400, "b": None}), model(1.0, 2.0, {"a": None, "b": 10000}),
              model(0.25, 3.0, {"a": 100, "b": None}), model(0.25, 2.0, {"a": 100, "b": 100})]
    s = summarize(models, ["a", "b"], [0.3])["0.3"]
    assert s["common_tasks"] == [] and s["mixed_tasks"] is True
    a, b = s["by_task"]["a"]["1/4"]["edges"], s["by_task"]["b"]["1/4"]["edges"]
    assert a["ratio"] == pytest.approx(4.0) and a["loss_range"] == [3.0, 3.0] and not a["extrapolated"]
    assert b["ratio"] == pytest.approx(100.0) and b["loss_range"] == [2.0, 2.0]
    lines = ratio_lines({"summary": {"0.3": s}})
    assert any("target 0.3, a: dense/sparse(1/4)" in line and "edges 4.00x" in line for line in lines)
    assert any("no ratio over tasks" in line for line in lines)
    assert s["dense_over_sparse"] == {}  # sizes of different tasks are not compared


def test_names():
    assert density_label(1.0) == "dense" and density_label(0.0625) == "1/16" and density_label(0.3) == "0.3"
    assert point_name(64, 0.25) == "w64-s4" and point_name(128, 1.0) == "w128-dense"
    names = [p.name for p in grid_points("cpu")]
    assert len(names) == len(set(names)) == 6
    sets = grid_points("smoke", steps=40)[0].sets
    assert "train.steps=40" in sets and "train.checkpoint_every=10" in sets
