"""timeline: the circuit of every kept training step, and each node's persistence."""
from __future__ import annotations

import json

import pytest
import torch
from analysis_models import QUOTE_PATH, learned_model, save_learned_run

from sparsecircuits.analysis.timeline import _persistence
from sparsecircuits.circuit_sizes import jaccard
from sparsecircuits.cli import main
from sparsecircuits.data.tokenizer import load_tokenizer
from sparsecircuits.rundir import RunDir
from sparsecircuits.train.kept import write_weights

TASK = "single_double_quote"
# tiny pruning: the cpu-tiny model knows no task, so its steps are pruned only when forced
CHEAP = ["--steps", "4", "--k-coefs", "0.01", "--set", "n_train=16", "--set", "n_test=8", "--set",
         "size_targets=1.0", "--target-loss", "1.0", "--threads", "1", "--no-progress"]


def test_jaccard_and_persistence_by_hand():
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard([], []) is None
    rows = [{"step": 10, "pruned": False, "nodes": []},
            {"step": 20, "pruned": True, "nodes": ["a", "b"]},
            {"step": 30, "pruned": True, "nodes": ["b", "c"]},
            {"step": 40, "pruned": True, "nodes": ["b", "c", "d"]}]
    nodes = {n["id"]: n for n in _persistence(rows)}
    assert nodes["b"]["steps"] == [20, 30, 40] and nodes["b"]["persistence"] == 1.0
    assert nodes["a"]["persistence"] == pytest.approx(1 / 3) and not nodes["a"]["in_last"]
    assert nodes["c"]["first"] == 30 and nodes["c"]["in_last"]
    assert [n["id"] for n in _persistence(rows)] == ["b", "c", "a", "d"]
    numbered = [{"step": 1, "pruned": True, "nodes": ["h:10", "h:9", "g:2"]}]
    assert [n["id"] for n in _persistence(numbered)] == ["g:2", "h:9", "h:10"]


@pytest.fixture(scope="module")
def kept_run(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline") / "run"
    assert main(["train", "--preset", "cpu-tiny", "--data", str(tiny_data_dir), "--out", str(out), "--no-progress",
                 "--set", "train.threads=1", "--set", "train.keep_checkpoints=3"]) == 0
    return out


def test_the_known_circuit_persists_from_the_step_that_learned_it(tiny_data_dir, tmp_path, capsys):
    """Three kept steps of the hand-built model that learned quotes: at step 10 its quote
    readout is still zero (not learned), at 20 and 30 it is the whole model."""
    out = save_learned_run(tmp_path / "run", tiny_data_dir)
    rd = RunDir(out)
    model = learned_model(load_tokenizer(tiny_data_dir / "tokenizer.json"))
    write_weights(rd.kept(20).weights, model.state_dict(), 20)
    write_weights(rd.kept(30).weights, model.state_dict(), 30)
    with torch.no_grad():
        model.lm_head.weight[:, 3] = 0.0  # no readout of the quote type yet
    write_weights(rd.kept(10).weights, model.state_dict(), 10)
    assert main(["timeline", str(out), "--task", TASK, "--steps", "40", "--k-coefs", "0.003,0.01", "--threads", "1",
                 "--no-progress"]) == 0
    record = json.loads(rd.timeline(TASK).read_text())
    early, mid, late = record["steps"]
    assert not early["pruned"] and early["full_accuracy"] < 0.8 and not early["learned"]
    assert mid["pruned"] and late["pruned"] and mid["learned"] and record["first_learned_step"] == 20
    assert QUOTE_PATH <= set(mid["nodes"]) and mid["target_met"] and not mid["forced"]
    assert late["nodes"] == mid["nodes"] and late["jaccard_previous"] == 1.0 == mid["jaccard_last"]
    persist = {n["id"]: n for n in record["nodes"]}
    assert all(persist[n]["persistence"] == 1.0 and persist[n]["steps"] == [20, 30] for n in QUOTE_PATH)
    assert "2 of 3 kept steps pruned" in capsys.readouterr().out


def test_unlearned_steps_get_their_accuracy_only(kept_run, capsys):
    assert main(["timeline", str(kept_run), "--task", TASK, *CHEAP]) == 0
    record = json.loads(RunDir(kept_run).timeline(TASK).read_text())
    assert [r["step"] for r in record["steps"]] == [13, 26, 40]
    assert all(not r["pruned"] and 0 <= r["full_accuracy"] < 0.8 for r in record["steps"])
    assert record["nodes"] == [] and record["first_learned_step"] is None
    assert not any((RunDir(kept_run).kept(s).path / "circuits").exists() for s in (13, 26, 40))
    assert "0 of 3 kept steps pruned" in capsys.readouterr().out


def test_timeline_prunes_every_kept_step(kept_run, capsys):
    rd = RunDir(kept_run)
    assert main(["timeline", str(kept_run), "--task", TASK, "--force", *CHEAP]) == 0
    record = json.loads(rd.timeline(TASK).read_text())
    rows = record["steps"]
    assert [r["step"] for r in rows] == [13, 26, 40] and all(r["pruned"] and r["forced"] for r in rows)
    for r in rows:
        circuit = json.loads(rd.kept(r["step"]).circuit(TASK).read_text())
        ids = {n["id"] for n in circuit["nodes"] if n["site"] not in ("embed", "logit")}
        assert set(r["nodes"]) == ids and r["n_nodes"] == len(ids) == circuit["metrics"]["n_nodes"]
        assert r["n_edges"] == circuit["metrics"]["n_edges"]
        assert r["tokens"] == r["step"] * 8 * 96  # batch 8 x seq 96, from metrics.jsonl
        assert (rd.kept(r["step"]).path / "node_means.safetensors").is_file()  # each step's own means
    assert rows[0]["jaccard_previous"] is None and rows[-1]["jaccard_last"] == 1.0
    assert rows[1]["jaccard_previous"] == pytest.approx(jaccard(rows[1]["nodes"], rows[0]["nodes"]))
    for node in record["nodes"]:
        kept_at = [r["step"] for r in rows if node["id"] in r["nodes"]]
        assert node["steps"] == kept_at and node["persistence"] == pytest.approx(len(kept_at) / 3)
    assert not rd.circuits.exists()  # the final model's circuits are not touched
    capsys.readouterr()

    # again: every step's circuit is reused, and the timeline is the same
    assert main(["timeline", str(kept_run), "--task", TASK, "--force", *CHEAP]) == 0
    again = json.loads(rd.timeline(TASK).read_text())
    assert all(r["cached"] for r in again["steps"])
    assert [r["nodes"] for r in again["steps"]] == [r["nodes"] for r in rows]


def test_bad_input_is_one_line(kept_run, tmp_path, capsys):
    assert main(["timeline", str(kept_run), "--task", TASK, "--at", "13,14", *CHEAP]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint at step 14" in err
    assert main(["timeline", str(kept_run), "--task", "no_such_task"]) == 2
    assert "unknown task" in capsys.readouterr().err
    bare = tmp_path / "bare"
    (bare).mkdir()
    (bare / "config.json").write_text((kept_run / "config.json").read_text())
    assert main(["timeline", str(bare), "--task", TASK]) == 2
    assert "keep_checkpoints" in capsys.readouterr().err
