"""Stability across seeds: size spread, Jaccard overlap, the stable core and its own loss."""
import json

import pytest

from circuit_fixtures import TOY_CIRCUIT, toy_examples
from sparsecircuits.circuits import prune
from sparsecircuits.circuit_sizes import jaccard
from sparsecircuits.circuits.stability import prune_seeds, spread, summarise
from sparsecircuits.rundir import RunDir, stability_matches

FAST = dict(progress=False, threads=1)


def test_jaccard_and_spread_by_hand():
    assert summarise([{"a", "b"}, {"b", "c"}])["jaccard"]["mean"] == pytest.approx(1 / 3)
    assert summarise([set(), set()])["jaccard"]["min"] == 1.0  # two empty circuits agree
    assert summarise([{"a"}, set()])["jaccard"]["min"] == 0.0
    assert spread([1, 3]) == {"min": 1, "max": 3, "mean": 2.0, "std": 1.0}


def test_the_stable_core_of_identical_runs_is_the_whole_circuit():
    circuit = ["blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0", "blocks.0.hook_mlp_out:1"]
    s = summarise([circuit] * 5)
    assert set(s["core"]["nodes"]) == set(circuit)
    assert s["jaccard"] == {"mean": 1.0, "min": 1.0, "pairs": 10}


def test_core_is_the_nodes_kept_in_at_least_80_percent_of_runs():
    runs = [{"a", "b", "c"}, {"a", "b", "c"}, {"a", "b", "c"}, {"a", "b", "d"}, {"a"}]
    s = summarise(runs)
    assert s["core"]["min_runs"] == 4 and s["core"]["nodes"] == ["a", "b"]  # b: 4 of 5; c: 3 of 5
    assert s["kept_in"] == {"a": 5, "b": 4, "c": 3, "d": 1}
    pairs = [jaccard(x, y) for i, x in enumerate(runs) for y in runs[i + 1:]]
    assert s["jaccard"]["mean"] == pytest.approx(sum(pairs) / 10) and s["jaccard"]["min"] == pytest.approx(1 / 3)
    assert summarise([{"a"}])["jaccard"] == {"mean": None, "min": None, "pairs": 0}
    assert summarise(runs[:4])["core"]["min_runs"] == 4  # 80% of 4 is 3.2: at least 4 runs


def test_seed_runs_on_the_known_circuit_agree_and_the_core_is_that_circuit(toy_run):
    circuits, rec = prune_seeds(toy_run, toy_examples(64), 3, seed=4, ablation="zero", method="attribution", **FAST)
    assert [c.seed for c in circuits] == rec["seeds"] == [4, 5, 6]
    assert all(set(c.node_ids) == TOY_CIRCUIT for c in circuits)
    assert rec["jaccard"]["mean"] == 1.0 and rec["sizes"]["n_nodes"] == {"min": 3, "max": 3, "mean": 3.0, "std": 0.0}
    core = rec["core"]
    assert set(core["nodes"]) == TOY_CIRCUIT and core["n_nodes"] == 3 and core["n_edges"] == 2
    # the core is the first seed's circuit, on its items and calibration: the same loss exactly
    first = circuits[0].metrics
    assert core["loss"] == first["circuit_loss"] and core["accuracy"] == first["circuit_accuracy"]
    assert core["train_loss"] == first["circuit_train_loss"] and core["met_heldout"]
    assert rec["method"] == "attribution" and rec["ablation"] == "zero" and rec["tie_qk"] is False


def test_a_core_short_of_a_needed_node_is_scored_as_failing(toy_run):
    from sparsecircuits.circuits.stability import score_core

    c = prune(toy_run, toy_examples(64), ablation="zero", method="attribution", **FAST)
    partial = score_core(toy_run, toy_examples(64), c, sorted(TOY_CIRCUIT)[:2])
    assert partial["n_nodes"] == 2 and not partial["met_heldout"]
    assert partial["loss"] == pytest.approx(1.386, abs=0.05)  # without all three nodes, A and B look alike


def test_seeds_make_the_stability_record_reproducible(toy_run):
    kw = dict(ablation="zero", steps=20, lr=3e-2, k_coefs=[1e-2], **FAST)
    circuits, rec = prune_seeds(toy_run, toy_examples(64), 2, seed=0, **kw)
    _, again = prune_seeds(toy_run, toy_examples(64), 2, seed=0, **kw)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert json.dumps(strip(again)) == json.dumps(strip(rec))
    alone = prune(toy_run, toy_examples(64), seed=1, **kw)  # run 2 is exactly prune --seed 1
    assert alone.node_ids == circuits[1].node_ids == rec["runs"][1]["nodes"]
    assert alone.metrics["circuit_loss"] == rec["runs"][1]["circuit_loss"]


def test_prune_seeds_flag_writes_stability_json_beside_the_first_circuit(toy_run_dir, tmp_path, capsys):
    from sparsecircuits.cli import main
    from sparsecircuits.tasks.base import write_jsonl_examples

    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    base = ["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--ablation", "zero", "--no-progress",
            "--threads", "1", "--steps", "20", "--set", "lr=3e-2", "--k-coefs", "1e-2", "--seed", "3"]
    assert main(base + ["--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 seeds:" in out and "stable core" in out
    rd = RunDir(toy_run_dir)
    rec = rd.read_stability("toy")
    circuit = json.loads(rd.circuit("toy").read_text())
    assert rec["seeds"] == [3, 4] and circuit["metrics"]["seed"] == 3
    ids = [n["id"] for n in circuit["nodes"] if n["site"] not in ("embed", "logit")]
    assert stability_matches(rec, ids) and not stability_matches(rec, ids[1:])
    for bad, message in ((["--seeds", "1"], "--seeds must be >= 2"), (["--seeds", "2", "--search", "2"], "--search")):
        assert main(base + bad) == 2
        assert message in capsys.readouterr().err
