"""The run directory's owner: file round trips, the one freshness rule, damaged files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sparsecircuits.circuit_sizes import EDGE_COUNT
from sparsecircuits.config import build_config
from sparsecircuits.errors import UserError
from sparsecircuits.rundir import CACHE_KEYS, RunDir, circuit_key, recorded_key

SETTINGS = {"target_loss": 0.15, "ablation": "mean", "steps": 60, "k_coefs": [1e-3, 3e-3, 1e-2],
            "n_train": 256, "n_test": 128, "lr": 1e-2}


def _circuit_json(task="t", seed=0, edge_count=EDGE_COUNT, **settings) -> dict:
    return {"schema_version": 1, "task": task, "nodes": [], "links": [],
            "metrics": {"seed": seed, "edge_count": edge_count, "settings": {**SETTINGS, **settings}}}


def _write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _age(path, seconds: float) -> None:
    """Set ``path``'s mtime ``seconds`` before now (negative: after)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_layout_paths(tmp_path):
    r = RunDir(tmp_path)
    assert r.config == tmp_path / "config.json" and r.weights == tmp_path / "model.safetensors"
    assert r.circuit("quote") == tmp_path / "circuits" / "quote" / "circuit.json"
    assert r.summary == tmp_path / "circuits" / "summary.json"
    assert r.search("quote") == tmp_path / "circuits" / "quote" / "search.json"
    assert r.control("nonsense_name_when").parts[-3:] == ("controls", "nonsense_name_when", "circuit.json")
    assert r.steer("quote", "blocks.0.hook_attn_in:3") == tmp_path / "steer" / "quote" / "blocks.0.hook_attn_in_3"
    assert r.bridge_weights.name == "bridges.safetensors" and r.imported.name == "imported_from.json"
    assert not r.is_run() and r.circuit_dirs() == []
    _write(r.circuit("b"), {})
    _write(r.circuit("a"), {})
    (r.circuits / "empty").mkdir()
    _write(r.control("c"), {})
    assert [d.name for d in r.circuit_dirs()] == ["a", "b"]  # no empty folder, no control


def test_config_round_trip(tmp_path):
    r = RunDir(tmp_path)
    cfg = build_config("cpu-tiny", sets=["train.steps=7"])
    r.write_config(cfg)
    assert r.is_run() and r.read_config().to_dict() == cfg.to_dict()


def test_metrics_append_read_and_rewind(tmp_path):
    r = RunDir(tmp_path)
    assert r.read_metrics() == ([], 0)
    r.start_metrics()
    for step in (1, 2, 3):
        r.append_metrics({"step": step, "loss": 1.0 / step, "val_loss": None if step < 3 else 0.5})
    with open(r.metrics, "a") as fh:
        fh.write('{"step": 4, "lo')  # a kill mid-write
    rows, bad = r.read_metrics()
    assert [x["step"] for x in rows] == [1, 2, 3] and bad == 1 and rows[2]["val_loss"] == 0.5
    r.rewind_metrics(2)
    assert r.metrics.read_text() == "".join(json.dumps({"step": s, "loss": 1.0 / s, "val_loss": None}) + "\n"
                                            for s in (1, 2))
    _age(r.metrics, 5)
    mtime = r.metrics.stat().st_mtime_ns
    r.rewind_metrics(2)  # nothing to drop: the file is left alone
    assert r.metrics.stat().st_mtime_ns == mtime


def test_metrics_non_object_lines_count_as_unreadable(tmp_path):
    r = RunDir(tmp_path)
    r.metrics.write_text('{"step": 1}\n[1, 2]\n\n"text"\n{"step": 2}\n')
    rows, bad = r.read_metrics()
    assert rows == [{"step": 1}, {"step": 2}] and bad == 2


def test_tasks_summary_eval_round_trips(tmp_path):
    r = RunDir(tmp_path)
    assert r.read_tasks() == {} and r.read_summary() is None and r.read_eval() is None
    scores = [{"task": "a", "accuracy": 0.9, "loss": 0.1, "n": 10},
              {"task": "b", "accuracy": 0.4, "loss": float("nan"), "n": 10}]
    r.write_tasks(scores, split="test", n=10)
    raw = json.loads(r.tasks.read_text())
    assert raw["split"] == "test" and raw["n"] == 10
    assert r.read_tasks() == {"a": scores[0], "b": {**scores[1], "loss": None}}  # JSON has no nan
    summary = {"geomean_edges": 6.0, "tasks": [{"task": "a"}]}
    assert r.write_summary(summary) == r.summary and r.read_summary() == summary
    r.write_eval({"val_loss": 2.5, "measures": {"kurtosis": 3.0}})
    assert r.read_eval() == {"val_loss": 2.5, "measures": {"kurtosis": 3.0}}
    r.write_search("a", {"trials": [1, 2]})
    assert json.loads(r.search("a").read_text()) == {"trials": [1, 2]}


@pytest.mark.parametrize("name,text", [("tasks", "{not json"), ("tasks", "[1, 2]"), ("tasks", '{"tasks": 3}'),
                                       ("summary", "\xff\xfe"), ("eval", "null"), ("config", "{")])
def test_damaged_files_are_one_user_error(tmp_path, name, text):
    r = RunDir(tmp_path)
    path = getattr(r, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    read = {"tasks": r.read_tasks, "summary": r.read_summary, "eval": r.read_eval, "config": r.read_config}[name]
    with pytest.raises(UserError) as err:
        read()
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_read_circuit_missing_and_damaged(tmp_path):
    r = RunDir(tmp_path)
    with pytest.raises(UserError, match="not found"):
        r.read_circuit("a")
    r.circuit("a").parent.mkdir(parents=True)
    r.circuit("a").write_text('{"task": ')
    with pytest.raises(UserError, match="not valid JSON"):
        r.read_circuit("a")
    _write(r.circuit("a"), _circuit_json("a"))
    assert r.read_circuit("a")["task"] == "a"


def test_circuit_key_names_every_cache_key():
    key = circuit_key("a", 3, SETTINGS)
    assert tuple(key) == CACHE_KEYS and key["seed"] == 3 and key["edge_count"] == EDGE_COUNT
    assert "lr" not in key  # optimiser knobs outside the key do not invalidate a cache
    assert recorded_key(_circuit_json("a", seed=3)) == key
    with pytest.raises(ValueError, match="steps"):
        circuit_key("a", 0, {k: v for k, v in SETTINGS.items() if k != "steps"})


def test_fresh_circuit_rule(tmp_path):
    r = RunDir(tmp_path)
    r.weights.write_bytes(b"w")
    path = r.circuit("a")
    want = circuit_key("a", 0, SETTINGS)
    assert r.fresh_circuit(path, want) is None  # nothing cached
    _write(path, _circuit_json("a"))
    assert r.fresh_circuit(path, want)["task"] == "a"
    for differs in (circuit_key("b", 0, SETTINGS), circuit_key("a", 1, SETTINGS),
                    circuit_key("a", 0, {**SETTINGS, "steps": 61}),
                    circuit_key("a", 0, {**SETTINGS, "k_coefs": [1e-2]}),
                    circuit_key("a", 0, {**SETTINGS, "ablation": "zero"}),
                    circuit_key("a", 0, {**SETTINGS, "target_loss": 0.1})):
        assert r.fresh_circuit(path, differs) is None
    assert r.fresh_circuit(path, circuit_key("a", 0, {**SETTINGS, "lr": 3e-3})) is not None
    _write(path, _circuit_json("a", edge_count="recomputed"))  # counted another way
    assert r.fresh_circuit(path, want) is None
    _write(path, _circuit_json("a"))
    _age(path, 10)  # pruned before the weights were written: an earlier model's circuit
    assert r.fresh_circuit(path, want) is None
    _age(path, -20)
    assert r.fresh_circuit(path, want) is not None
    path.write_text("{damaged")
    assert r.fresh_circuit(path, want) is None


def test_no_torch_import():
    code = "import sys, sparsecircuits.rundir; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
