"""`sparsecircuits demo` end to end on a tiny preset: every stage's output, then reuse."""
from __future__ import annotations

import json

import pytest

from sparsecircuits.cli import main
from sparsecircuits.pipeline import ALWAYS, choose_tasks


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from sparsecircuits.data.build import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("demo_data") / "data")


def _demo(out, data):
    return main(["demo", "--preset", "cpu-tiny", "--data", str(data), "--out", str(out), "--n", "16",
                 "--extra-tasks", "1", "--force-paper-tasks", "--prune-steps", "4", "--prune-items", "16", "--set", "train.steps=6",
                 "--set", "train.eval_every=3", "--set", "train.checkpoint_every=3"])


def test_choose_tasks_prunes_the_learned_ones_the_papers_two_first():
    scores = [{"task": "a", "accuracy": 0.9, "loss": 0.3}, {"task": "b", "accuracy": 0.95, "loss": 0.2},
              {"task": "c", "accuracy": 0.79, "loss": 0.1}, {"task": ALWAYS[0], "accuracy": 0.5, "loss": 0.7},
              {"task": ALWAYS[1], "accuracy": 0.85, "loss": 0.4}, {"task": "d", "accuracy": 0.95, "loss": 0.1}]
    assert choose_tasks(scores, 2) == [ALWAYS[1], "d", "b"]  # ALWAYS[0] is at 50%: left out
    assert choose_tasks(scores, 0) == [ALWAYS[1]]
    assert choose_tasks(scores, 9) == [ALWAYS[1], "d", "b", "a"]  # c is below 80%
    assert choose_tasks(scores) == [ALWAYS[1], "d", "b", "a"]  # every learned task by default
    assert choose_tasks(scores, force_paper=True) == [*ALWAYS, "d", "b", "a"]  # both, learned or not


@pytest.mark.slow
def test_demo_builds_every_stage_then_reuses_them(tmp_path, tiny_data, capsys):
    out = tmp_path / "demo"
    assert _demo(out, tiny_data) == 0
    first = capsys.readouterr().out
    index = out / "report" / "index.html"
    assert index.is_file() and str(index.resolve()) in first
    assert (out / "model.safetensors").is_file()
    scores = json.loads((out / "tasks.json").read_text())["tasks"]
    assert len(scores) == 20
    for task in ALWAYS:  # a 6-step model learns nothing: both are pruned anyway, marked forced
        circuit = json.loads((out / "circuits" / task / "circuit.json").read_text())
        assert circuit["forced"] is True and circuit["details"]
        assert (out / "report" / f"circuit-{task}.html").is_file() and f"circuit-{task}.html" in index.read_text()
    assert [f"[{i}/6]" in first for i in range(1, 7)] == [True] * 6

    stamps = {p: p.stat().st_mtime_ns for p in (out / "model.safetensors",
                                                 *sorted((out / "circuits").glob("*/circuit.json")))}
    assert _demo(out, tiny_data) == 0
    second = capsys.readouterr().out
    assert "model.safetensors exists, reusing it" in second
    assert second.count("circuit.json exists, reusing it") == len(stamps) - 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_demo_with_a_missing_data_dir_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.bin" in err[0]
    assert not out.exists()


def test_the_demo_prunes_in_worker_processes_exactly_as_in_one(tmp_path, tiny_data, capsys):
    """Two tasks pruned two at a time in spawned workers give the circuits one process gives."""
    import torch

    from sparsecircuits.pipeline import DemoSettings, _Clock, _prune
    from sparsecircuits.run import load_run
    from tiny_runs import write_untrained_run

    tasks = ["single_double_quote", "while_return_true"]
    circuits = {}
    for jobs in (1, 2):
        out = write_untrained_run(tmp_path / f"jobs{jobs}", tiny_data, record_data=True)
        s = DemoSettings(out=out, jobs=jobs, prune_steps=3, prune_items=16)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the workers' thread count, so both sides round alike
        try:
            _prune(load_run(out), s, tasks, {t: 0.5 for t in tasks}, _Clock())
        finally:
            torch.set_num_threads(threads)
        circuits[jobs] = {t: json.loads((out / "circuits" / t / "circuit.json").read_text()) for t in tasks}
        said = capsys.readouterr().out
        assert ("2 tasks, 2 at a time in worker processes" in said) == (jobs == 2)
        assert all(f"    {t}: " in said for t in tasks)
    for t in tasks:
        one, two = circuits[1][t], circuits[2][t]
        assert one["forced"] is True and two["forced"] is True  # 50%: pruned anyway
        assert one["details"] and two["details"]  # each worker details its own circuit
        assert [n["id"] for n in one["nodes"]] == [n["id"] for n in two["nodes"]]
        assert one["metrics"]["n_edges"] == two["metrics"]["n_edges"]
        assert one["metrics"]["circuit_loss"] == pytest.approx(two["metrics"]["circuit_loss"], abs=1e-6)


def test_demo_with_no_jobs_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--jobs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs must be >= 1" in err[0]
    assert not out.exists()
