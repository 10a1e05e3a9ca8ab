import json

import pytest

from circuit_fixtures import TOY_CIRCUIT, toy_examples
from sparsecircuits.circuits import Circuit
from sparsecircuits.cli import main
from sparsecircuits.circuit_sizes import geometric_mean
from sparsecircuits.errors import UserError
from sparsecircuits.tasks.base import write_jsonl_examples


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_prune_cli_writes_a_circuit_and_prints_a_summary(toy_run_dir, tmp_path, capsys):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    rc = main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--ablation", "zero", "--steps", "80",
               "--k-coefs", "0.01", "--no-progress", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("toy: ") and "nodes" in out[0] and "edges" in out[0]
    path = toy_run_dir / "circuits" / "toy" / "circuit.json"
    obj = json.loads(path.read_text())
    assert obj["schema_version"] == 1 and obj["task"] == "toy" and obj["forced"] is False
    assert set(obj["model"]) == {"run", "n_layer", "d_model", "n_head", "d_head", "d_mlp", "vocab_size"}
    assert {"full_loss", "full_accuracy", "circuit_loss", "circuit_accuracy", "n_nodes", "n_edges",
            "n_edges_with_io", "target_loss", "ablation", "curve", "size_vs_target", "calibration", "settings",
            "seed", "seconds"} <= set(obj["metrics"])
    for node in obj["nodes"]:
        assert set(node) == {"id", "hook", "index", "layer", "site", "head", "token", "mask"}
    assert {n["id"] for n in obj["nodes"] if n["site"] not in ("embed", "logit")} == TOY_CIRCUIT
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_bad_input_exits_2_with_one_line(toy_run_dir, tmp_path, capsys):
    assert main(["prune", str(tmp_path / "nope"), "--task", "single_double_quote"]) == 2
    assert "not found" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["prune", str(tmp_path / "empty"), "--task", "single_double_quote"]) == 2
    assert "not a run directory" in _one_error_line(capsys)
    assert main(["prune", str(toy_run_dir), "--task", "no_such_task"]) == 2
    assert "unknown task" in _one_error_line(capsys)
    assert main(["prune", str(toy_run_dir)]) == 2
    _one_error_line(capsys)
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in _one_error_line(capsys)
    assert main(["prune", str(toy_run_dir), "--task", "single_double_quote", "--steps", "0"]) == 2
    _one_error_line(capsys)
    assert main(["prune", str(toy_run_dir), "--task", "single_double_quote", "--k-coefs", "a,b"]) == 2
    _one_error_line(capsys)


def test_unlearned_task_on_the_cli_names_the_accuracy(toy_run_dir, tmp_path, capsys):
    from sparsecircuits.tasks.base import TaskExample

    wrong = [TaskExample(e.prompt, e.incorrect, e.correct) for e in toy_examples(16)]
    write_jsonl_examples(tmp_path / "w.jsonl", wrong)
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tmp_path / "w.jsonl"), "--no-progress"]) == 2
    assert "accurate" in _one_error_line(capsys)
    assert not (toy_run_dir / "circuits").exists()


def test_all_tasks_skips_what_the_model_cannot_do(toy_run_dir, capsys):
    # the toy model's vocabulary has none of the task answers: every task is skipped with a note
    assert main(["prune", str(toy_run_dir), "--all-tasks", "--no-progress", "--ablation", "zero"]) == 0
    captured = capsys.readouterr()
    summary = json.loads((toy_run_dir / "circuits" / "summary.json").read_text())
    assert summary["tasks"] == [] and len(summary["skipped"]) == 20
    assert summary["geomean_edges"] is None
    assert "skipping single_double_quote" in captured.err
    assert "geometric mean of edges n/a" in captured.out


def test_geometric_mean_of_edges():
    assert geometric_mean([4, 9]) == pytest.approx(6.0)
    assert geometric_mean([0, 1]) == pytest.approx(1.0)  # floored at 1
    assert geometric_mean([]) is None


@pytest.mark.parametrize("content, match", [
    ("not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"schema_version": 2}', "schema_version"),
    ('{"schema_version": 1, "model": {}, "task": "t", "metrics": {}, "nodes": [], "links": []}', "model.n_layer"),
])
def test_malformed_circuit_files_are_user_errors(tmp_path, content, match):
    p = tmp_path / "circuit.json"
    p.write_text(content)
    with pytest.raises(UserError, match=match):
        Circuit.load(p)


def test_circuit_with_a_dangling_link_or_bad_node_is_rejected(tmp_path):
    base = {"schema_version": 1, "task": "t", "forced": False, "metrics": {},
            "model": {"run": "r", "n_layer": 1, "d_model": 4, "n_head": 1, "d_head": 2, "d_mlp": 4, "vocab_size": 6},
            "nodes": [{"id": "blocks.0.hook_mlp_in:0", "site": "mlp_in"}], "links": []}
    c = Circuit.from_json(base)
    assert c.node_ids == ["blocks.0.hook_mlp_in:0"]
    bad_link = dict(base, links=[{"source": "blocks.0.hook_mlp_in:0", "target": "x", "weight": 1.0}])
    with pytest.raises(UserError, match="links"):
        Circuit.from_json(bad_link)
    bad_node = dict(base, nodes=[{"id": "blocks.0.hook_mlp_in:9", "site": "mlp_in"}])
    with pytest.raises(UserError, match="out of range"):
        Circuit.from_json(bad_node)
