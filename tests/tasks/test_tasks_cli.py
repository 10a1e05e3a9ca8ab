"""`sparsecircuits tasks list|show|eval`."""
from __future__ import annotations

import json

import pytest

from sparsecircuits.cli import main
from sparsecircuits.tasks import TASKS
from tiny_runs import write_untrained_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_data_dir):
    """A real (untrained) run directory: config, tokenizer and weights of a tiny GPT."""
    return write_untrained_run(tmp_path_factory.mktemp("tasks_run"), tiny_data_dir)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparsecircuits: error:")
    assert "Traceback" not in err
    return err


def test_list(capsys):
    assert main(["tasks", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 20
    assert [ln.split()[0] for ln in lines] == list(TASKS)
    assert main(["tasks", "list", "--controls"]) == 0
    assert "nonsense_name_when" in capsys.readouterr().out


def test_show(capsys, tiny_data_dir):
    assert main(["tasks", "show", "var_swap", "--n", "3", "--seed", "1", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- pair") == 6 and "correct ' " in out
    assert "3 pairs of var_swap (train split, seed 1)" in out
    assert main(["tasks", "show", "for_while", "--n", "2", "--tokenizer", str(tiny_data_dir)]) == 0
    assert "tokens]" in capsys.readouterr().out


def test_show_is_deterministic(capsys):
    """The same pairs here and in another process with another hash seed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    argv = ["tasks", "show", "bracket_counting", "--n", "4"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "4 pairs of bracket_counting" in first
    seed = os.environ.get("PYTHONHASHSEED", "")
    env = dict(os.environ, PYTHONHASHSEED=str(int(seed) + 1) if seed.isdigit() else "12345",
               PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    other = subprocess.run([sys.executable, "-m", "sparsecircuits", *argv], env=env, capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert other.stdout == first


@pytest.mark.parametrize(
    "argv",
    [
        ["tasks", "show", "no_such_task"],
        ["tasks", "show", "for_while", "--n", "0"],
        ["tasks", "show", "for_while", "--tokenizer", "/nonexistent/tokenizer.json"],
        ["tasks"],
    ],
)
def test_show_bad_input_exit_2(capsys, argv):
    assert main(argv) == 2
    _one_error_line(capsys)


def test_eval_table_and_json(capsys, run_dir):
    assert main(["tasks", "eval", str(run_dir), "--tasks", "for_while,bracket_counting", "--n", "10"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split() == ["task", "accuracy", "loss", "n"]
    assert [ln.split()[0] for ln in out[1:3]] == ["for_while", "bracket_counting"]
    assert all(ln.split()[3] == "20" for ln in out[1:3])
    assert "2 tasks" in out[-1] and "mean accuracy" in out[-1]

    assert main(["tasks", "eval", str(run_dir), "--tasks", "for_while,bracket_counting", "--n", "10",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in data["results"]] == ["for_while", "bracket_counting"]
    for r in data["results"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0 and r["n"] == 20
    assert data["summary"]["tasks"] == 2


def test_eval_matches_library_call(capsys, run_dir):
    from sparsecircuits import load_run
    from sparsecircuits.tasks import encode_examples, evaluate_task

    assert main(["tasks", "eval", str(run_dir), "--tasks", "var_if", "--n", "8", "--seed", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["results"][0]
    run = load_run(run_dir)
    exs = TASKS["var_if"].examples(8, seed=3, split="test")
    ref = evaluate_task(run.model, encode_examples(run.tokenizer, exs))
    assert got["loss"] == pytest.approx(ref["loss"]) and got["accuracy"] == ref["accuracy"]


def test_eval_all_tasks_and_controls(capsys, run_dir):
    assert main(["tasks", "eval", str(run_dir), "--n", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in data["results"]] == list(TASKS)
    assert main(["tasks", "eval", str(run_dir), "--tasks", "nonsense_name_when", "--n", "2"]) == 0


def test_eval_tasks_file(capsys, run_dir, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "for item", "correct": " in", "incorrect": ":"}\n\n'
                 '{"prompt": "while item", "correct": ":", "incorrect": " in"}\n')
    assert main(["tasks", "eval", str(run_dir), "--tasks-file", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["task"], r["n"]) for r in data["results"]] == [("mine", 2)]
    assert main(["tasks", "eval", str(run_dir), "--tasks", "for_while", "--tasks-file", str(f),
                 "--n", "3", "--json"]) == 0
    assert [r["task"] for r in json.loads(capsys.readouterr().out)["results"]] == ["for_while", "mine"]


def test_eval_bad_inputs_exit_2(capsys, run_dir, tmp_path):
    assert main(["tasks", "eval", str(run_dir), "--tasks", "for_while,nope"]) == 2
    assert "nope" in _one_error_line(capsys)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "for item", "correct": " in", "incorrect": ":"}\n{"prompt": "x"}\n')
    assert main(["tasks", "eval", str(run_dir), "--tasks-file", str(bad)]) == 2
    assert ":2:" in _one_error_line(capsys)

    multi = tmp_path / "multi.jsonl"
    multi.write_text('{"prompt": "for item", "correct": " in the garden", "incorrect": ":"}\n')
    assert main(["tasks", "eval", str(run_dir), "--tasks-file", str(multi)]) == 2
    err = _one_error_line(capsys)
    assert "multi" in err and repr(" in the garden") in err

    assert main(["tasks", "eval", str(tmp_path / "no_run")]) == 2
    _one_error_line(capsys)

    assert main(["tasks", "eval", str(run_dir), "--n", "0"]) == 2
    _one_error_line(capsys)


def test_eval_prompt_longer_than_context(capsys, run_dir, tmp_path):
    f = tmp_path / "long.jsonl"
    f.write_text(json.dumps({"prompt": "x = 1\n" * 100 + "for item", "correct": " in", "incorrect": ":"}) + "\n")
    assert main(["tasks", "eval", str(run_dir), "--tasks-file", str(f)]) == 2
    assert "context" in _one_error_line(capsys)


def test_eval_with_code_context(capsys, run_dir, tiny_data_dir):
    argv = ["tasks", "eval", str(run_dir), "--tasks", "for_while,bracket_counting", "--n", "6",
            "--context-tokens", "100", "--data", str(tiny_data_dir)]
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for r in data["results"]:
        c = r["context"]
        assert c["tokens"] == 100 and c["n"] == r["n"] == 12
        assert r["prompt_tokens"] + 20 < c["prompt_tokens"] <= 100
        assert 0.0 <= c["accuracy"] <= 1.0 and c["loss"] > 0
    assert data["summary"]["context"]["tokens"] == 100
    # the short-context numbers are the ones without the option
    assert main(argv[:-4] + ["--json"]) == 0
    plain = json.loads(capsys.readouterr().out)["results"]
    assert [(p["loss"], p["accuracy"]) for p in plain] == [(r["loss"], r["accuracy"]) for r in data["results"]]
    assert all("context" not in p for p in plain)

    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split() == ["task", "accuracy", "loss", "n", "acc@100", "loss@100", "tokens"]
    assert "with up to 100 tokens of code context" in out[-1]


def test_eval_context_bad_inputs_exit_2(capsys, run_dir, tmp_path, tiny_data_dir):
    base = ["tasks", "eval", str(run_dir), "--tasks", "for_while", "--n", "2"]
    assert main(base + ["--context-tokens", "500", "--data", str(tiny_data_dir)]) == 2
    assert "128" in _one_error_line(capsys)  # longer than the model's context
    assert main(base + ["--context-tokens", "-1"]) == 2
    _one_error_line(capsys)
    assert main(base + ["--context-tokens", "64", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in _one_error_line(capsys)


def test_context_data_dir_defaults_to_the_runs(tmp_path):
    from types import SimpleNamespace

    from sparsecircuits.config import RunConfig
    from sparsecircuits.data.build import default_data_dir
    from sparsecircuits.tasks.context import run_data_dir

    cfg = RunConfig()
    run = SimpleNamespace(config=cfg)
    assert run_data_dir(run) == default_data_dir(cfg.data.vocab_size, cfg.data.simple_bytes)
    cfg.data.data_dir = str(tmp_path)
    assert run_data_dir(run) == tmp_path
    assert run_data_dir(run, tmp_path / "other") == tmp_path / "other"
