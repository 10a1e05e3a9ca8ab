"""prune --checkpoint STEP: the circuit of one training step's weights, kept apart from the final one."""
from __future__ import annotations

import json

import torch
from circuit_fixtures import TOY_CIRCUIT, toy_examples, toy_model
from safetensors.torch import load_file

from sparsecircuits.cli import main
from sparsecircuits.rundir import RunDir
from sparsecircuits.tasks.base import write_jsonl_examples
from sparsecircuits.train.checkpoint import pack_state, save_checkpoint
from sparsecircuits.train.kept import write_weights

# the toy model with its neuron moved from 0 to 2: the circuit of an "earlier step"
EARLY_CIRCUIT = {"blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:2", "blocks.0.hook_mlp_out:1"}
PRUNE = ["--ablation", "zero", "--steps", "80", "--k-coefs", "0.01", "--set", "lr=0.01", "--no-progress", "--threads", "1"]


def early_model():
    model = toy_model()
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[[0, 2]] = mlp.c_fc.weight[[2, 0]].clone()
        mlp.c_proj.weight[:, [0, 2]] = mlp.c_proj.weight[:, [2, 0]].clone()
    return model


def _nodes(path) -> set[str]:
    data = json.loads(path.read_text())
    return {n["id"] for n in data["nodes"] if n["site"] not in ("embed", "logit")}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_checkpoint_circuit_never_replaces_the_final_one(toy_run_dir, tmp_path, capsys):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    rd = RunDir(toy_run_dir)
    write_weights(rd.kept(5).weights, early_model().state_dict(), 5)
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), *PRUNE]) == 0
    final = rd.circuit("toy")
    before = final.read_bytes()
    assert _nodes(final) == TOY_CIRCUIT

    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--checkpoint", "5", *PRUNE]) == 0
    out = capsys.readouterr().out
    early = rd.kept(5).circuit("toy")
    assert str(early) in out
    assert _nodes(early) == EARLY_CIRCUIT  # pruned on the step's weights ...
    assert final.read_bytes() == before  # ... and the final circuit is untouched
    assert json.loads(early.read_text())["model"]["run"] == str(rd.kept(5).path)


def test_a_resumable_checkpoint_serves_too(toy_run_dir, tmp_path):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    model = early_model()
    opt = torch.optim.AdamW(model.parameters())
    rd = RunDir(toy_run_dir)
    save_checkpoint(rd.checkpoints, 7, pack_state(model, opt), {"tokens": 0})
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--checkpoint", "7", *PRUNE]) == 0
    copied = load_file(str(rd.kept(7).weights))  # its weights copied out, without the optimiser's state
    assert copied.keys() == model.state_dict().keys()
    assert all(torch.equal(copied[k], v) for k, v in model.state_dict().items())
    assert _nodes(rd.kept(7).circuit("toy")) == EARLY_CIRCUIT
    assert not rd.circuit("toy").exists()


def test_a_step_without_weights_is_one_line_and_writes_nothing(toy_run_dir, tmp_path, capsys):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(16))
    rd = RunDir(toy_run_dir)
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--checkpoint", "3", *PRUNE]) == 2
    err = _one_error_line(capsys)
    assert "no checkpoint at step 3" in err and "keep_checkpoints" in err
    write_weights(rd.kept(10).weights, toy_model().state_dict(), 10)
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--checkpoint", "3", *PRUNE]) == 2
    assert "steps with weights: 10" in _one_error_line(capsys)
    assert not rd.kept(3).path.exists() and not rd.circuits.exists()
