"""`prune --force`, `--target-loss` and `--seed` on the command line reach the circuit."""
from __future__ import annotations

import json

import pytest
from circuit_fixtures import TOY_CIRCUIT, toy_examples

from sparsecircuits.cli import main
from sparsecircuits.run import load_run
from sparsecircuits.tasks.base import TaskExample, write_jsonl_examples

FAST = ["--ablation", "zero", "--steps", "60", "--k-coefs", "0.01", "--no-progress", "--threads", "1"]
VOLATILE = ("seconds", "timings")  # wall-clock numbers, the only fields allowed to differ


def _prune(run_dir, tasks, *extra) -> int:
    return main(["prune", str(run_dir), "--tasks-file", str(tasks), *FAST, *extra])


def _circuit(run_dir, name="toy") -> dict:
    return json.loads((run_dir / "circuits" / name / "circuit.json").read_text())


def _stable(obj: dict) -> dict:
    obj = json.loads(json.dumps(obj))
    for key in VOLATILE:
        obj["metrics"].pop(key, None)
    return obj


def test_force_prunes_an_unlearned_task_and_marks_it(toy_run_dir, tmp_path, capsys):
    wrong = tmp_path / "wrong.jsonl"  # every answer swapped: the model is 0% accurate
    write_jsonl_examples(wrong, [TaskExample(e.prompt, e.incorrect, e.correct) for e in toy_examples(32)])
    assert _prune(toy_run_dir, wrong) == 2
    assert "accurate" in capsys.readouterr().err
    assert _prune(toy_run_dir, wrong, "--force") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("wrong (forced): ")
    obj = _circuit(toy_run_dir, "wrong")
    assert obj["forced"] is True and obj["metrics"]["full_accuracy"] == 0.0


def test_target_loss_reaches_the_circuit(toy_run_dir, tmp_path, capsys):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    assert _prune(toy_run_dir, tasks, "--target-loss", "0.02") == 0
    m = _circuit(toy_run_dir)["metrics"]
    assert m["target_loss"] == 0.02 and m["settings"]["target_loss"] == 0.02
    assert m["target_met"] and m["circuit_train_loss"] <= 0.02
    assert 0.02 in [r["target_loss"] for r in m["size_vs_target"]]
    assert main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--target-loss", "0", "--no-progress"]) == 2
    assert "target loss" in capsys.readouterr().err


def test_seed_reaches_the_circuit_and_reproduces_it(toy_run_dir, tmp_path):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    runs = {}
    for tag, seed in (("a", "3"), ("b", "3"), ("c", "0")):
        assert _prune(toy_run_dir, tasks, "--seed", seed, "--name", f"toy_{tag}") == 0
        runs[tag] = _circuit(toy_run_dir, f"toy_{tag}")
    assert runs["a"]["metrics"]["seed"] == 3 and runs["c"]["metrics"]["seed"] == 0
    for obj in runs.values():  # (a short schedule may keep some idle nodes beside it)
        assert TOY_CIRCUIT <= {n["id"] for n in obj["nodes"] if n["site"] not in ("embed", "logit")}
    a, b, c = (_stable(runs[k]) for k in "abc")
    a.pop("task"), b.pop("task"), c.pop("task")
    assert a == b  # the same seed: the same circuit file, curve and losses included
    # another seed: another initial tau and other batches, so another optimisation path
    assert a["metrics"]["curve"] != c["metrics"]["curve"]


def test_the_cli_and_the_library_agree_on_a_seeded_circuit(toy_run_dir, tmp_path):
    from sparsecircuits.circuits import prune

    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    assert _prune(toy_run_dir, tasks, "--seed", "5", "--target-loss", "0.1") == 0
    lib = prune(load_run(toy_run_dir), toy_examples(48), name="toy", target_loss=0.1, ablation="zero", steps=60,
                k_coefs=[0.01], seed=5, progress=False, threads=1)
    got = _stable(_circuit(toy_run_dir))
    want = _stable(lib.to_json())
    for obj in (got, want):
        obj["metrics"]["settings"].pop("threads", None)
        obj.pop("model", None)  # the run path is spelled differently
    assert got == want


@pytest.mark.parametrize("flag, value", [("--seed", "x"), ("--target-loss", "abc")])
def test_bad_option_values_exit_2(toy_run_dir, tmp_path, flag, value, capsys):
    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(8))
    with pytest.raises(SystemExit) as exc:
        main(["prune", str(toy_run_dir), "--tasks-file", str(tasks), flag, value])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
