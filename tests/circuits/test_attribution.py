"""Attribution pruning on the hand-built model: the same circuit as the learned masks."""
import pytest
import torch

from circuit_fixtures import TOY_CIRCUIT, toy_examples
from sparsecircuits.circuits import prune
from sparsecircuits.circuits.attribution import attribution_scores
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.prune import _resolve_task
from sparsecircuits.config import PruneSettings
from sparsecircuits.errors import UserError

FAST = dict(progress=False, threads=1)


def test_attribution_recovers_the_known_circuit(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", **FAST)
    assert set(c.node_ids) == TOY_CIRCUIT
    m = c.metrics
    assert m["method"] == "attribution" and m["target_met"] and m["n_nodes"] == 3 and m["n_edges"] == 2
    assert m["circuit_loss"] <= 0.15 and m["circuit_accuracy"] == 1.0
    assert set(c.settings["attribution"]) == TOY_CIRCUIT
    # the same file shape as the learned pruner's, and the same circuit
    learned = prune(toy_run, toy_examples(64), ablation="zero", steps=60, lr=3e-2, k_coefs=[1e-2], **FAST)
    assert learned.metrics["method"] == "learned" and learned.node_ids == c.node_ids
    assert set(c.to_json()) == set(learned.to_json())
    assert set(c.metrics) - {"curve"} <= set(learned.metrics)
    # reproducible: the same seed gives the same file, bit for bit
    again = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", **FAST)
    strip = lambda j: {**j, "metrics": {k: v for k, v in j["metrics"].items() if k not in ("seconds", "timings")}}  # noqa: E731
    assert strip(again.to_json()) == strip(c.to_json())


def test_scores_are_gradient_times_activation_minus_ablation_value(toy_run):
    s = PruneSettings()
    data = _resolve_task(toy_run, toy_examples(32), None, s, 0)
    nodes_n = MaskedModel(toy_run.model).nodes.n
    base = torch.randn(nodes_n, generator=torch.Generator().manual_seed(0))
    masked = MaskedModel(toy_run.model, base)
    scores = attribution_scores(masked, data.train, batch_size=7)  # chunking must not matter
    assert torch.allclose(scores, attribution_scores(masked, data.train, batch_size=64), atol=1e-6)
    # first order: the score predicts the loss change of a small step of one mask towards ablation
    from sparsecircuits.circuits.circuit import circuit_diffs
    from sparsecircuits.tasks import diff_loss

    full = diff_loss(circuit_diffs(masked, torch.ones(nodes_n), data.train))
    i = int(scores.abs().argmax())
    m = torch.ones(nodes_n)
    m[i] = 1 - 1e-3
    step = diff_loss(circuit_diffs(masked, m, data.train)) - full
    assert step == pytest.approx(-1e-3 * float(scores[i]), rel=0.05)


def test_unknown_method_is_a_user_error(toy_run):
    with pytest.raises(UserError, match="method"):
        prune(toy_run, toy_examples(16), method="magic", **FAST)


def test_prune_method_flag_writes_an_attribution_circuit(toy_run_dir, tmp_path, capsys):
    import json

    from sparsecircuits.cli import main
    from sparsecircuits.tasks.base import write_jsonl_examples

    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    base = ["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--ablation", "zero", "--no-progress",
            "--threads", "1"]
    assert main(base + ["--method", "attribution"]) == 0
    # beside the learned circuit's folder, never over it
    obj = json.loads((toy_run_dir / "circuits" / "toy@attribution" / "circuit.json").read_text())
    assert not (toy_run_dir / "circuits" / "toy").exists()
    assert obj["metrics"]["method"] == "attribution"
    assert {n["id"] for n in obj["nodes"] if n["site"] not in ("embed", "logit")} == TOY_CIRCUIT
    capsys.readouterr()
    assert main(base + ["--method", "attribution", "--search", "2"]) == 2
    assert "--search" in capsys.readouterr().err


def test_all_tasks_by_attribution_leave_the_learned_summary_alone(toy_run_dir, capsys):
    from sparsecircuits.cli import main

    summary = toy_run_dir / "circuits" / "summary.json"
    assert main(["prune", str(toy_run_dir), "--all-tasks", "--no-progress", "--ablation", "zero"]) == 0
    before = summary.read_bytes()
    assert main(["prune", str(toy_run_dir), "--all-tasks", "--no-progress", "--ablation", "zero",
                 "--method", "attribution"]) == 0
    assert summary.read_bytes() == before
    assert "not saved: summary.json is the learned circuits'" in capsys.readouterr().out
