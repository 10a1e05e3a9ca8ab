"""Pruning at long context: `prune --context-tokens N` and the ContextTask it prunes on."""
from __future__ import annotations

import json
import pickle

import pytest

from sparsecircuits.cli import main
from sparsecircuits.tasks import flatten, get_task
from sparsecircuits.tasks.context import context_task, val_context, with_code_context
from tiny_runs import write_untrained_run

N = 100
FAST = ["--steps", "4", "--k-coefs", "1e-2", "--threads", "1", "--no-progress", "--force", "--set", "n_train=12",
        "--set", "n_test=8", "--set", "curve_points=0", "--set", "batch_pairs=8", "--set", "n_probe=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_data_dir):
    """An untrained one-layer GPT with the tiny data's tokenizer, its data dir recorded in its config."""
    return write_untrained_run(tmp_path_factory.mktemp("ctx_run"), tiny_data_dir, record_data=True)


@pytest.fixture(scope="module")
def run(run_dir):
    from sparsecircuits.run import load_run

    return load_run(run_dir)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_context_task_puts_shared_code_before_each_pair_within_budget(run):
    task = context_task(run, "for_while", N, seed=3)
    plain = get_task("for_while")
    for split in ("train", "test"):
        items, short = task.generate(6, seed=3, split=split), plain.generate(6, seed=3, split=split)
        assert len(items) == 6
        longer = 0
        for item, base in zip(items, short):
            for ex, b in ((item.a, base.a), (item.b, base.b)):
                assert ex.prompt.endswith(b.prompt) and (ex.correct, ex.incorrect) == (b.correct, b.incorrect)
                assert len(_ids(run.tokenizer, ex.prompt)) <= N
            code_a = item.a.prompt[: len(item.a.prompt) - len(base.a.prompt)]
            assert code_a == item.b.prompt[: len(item.b.prompt) - len(base.b.prompt)]  # the same code for both
            longer += bool(code_a)
        assert longer >= 4  # most pairs get code (a snippet can be too long to fit at all)
    # the test split's code is the code tasks eval --context-tokens gives the same items
    want = with_code_context(plain.examples(6, seed=3, split="test"), run.tokenizer,
                             val_context(run, n_tokens=N, seed=3), N)
    assert flatten(task.generate(6, seed=3, split="test")) == want
    # train items are drawn apart from test items: pair i does not get the same code in both
    train = [it.a.prompt for it in task.generate(6, seed=3, split="train")]
    test = [it.a.prompt for it in task.generate(6, seed=3, split="test")]
    assert sum(a.split("\n")[0] == b.split("\n")[0] for a, b in zip(train, test)) <= 1
    # search workers get a pickled copy: the same items
    assert pickle.loads(pickle.dumps(task)).generate(6, seed=3, split="train") == task.generate(6, seed=3,
                                                                                                 split="train")


def test_prune_context_tokens_writes_a_circuit_beside_the_plain_one(run_dir, tiny_data_dir, capsys):
    base = ["prune", str(run_dir), "--task", "for_while", *FAST]
    assert main(base + ["--context-tokens", str(N), "--data", str(tiny_data_dir)]) == 0
    assert f"for_while@ctx{N}" in capsys.readouterr().out
    assert not (run_dir / "circuits" / "for_while").exists()  # the short-prompt circuit is left alone
    long = json.loads((run_dir / "circuits" / f"for_while@ctx{N}" / "circuit.json").read_text())
    assert long["task"] == "for_while" and long["metrics"]["context_tokens"] == N
    assert main(base) == 0
    short = json.loads((run_dir / "circuits" / "for_while" / "circuit.json").read_text())
    assert "context_tokens" not in short["metrics"]
    # the same items behind code: the full model scores them differently
    assert long["metrics"]["full_loss"] != pytest.approx(short["metrics"]["full_loss"])
    assert long["metrics"]["settings"]["n_test_examples"] == short["metrics"]["settings"]["n_test_examples"] == 16


def test_library_prune_takes_a_context_task(run):
    from sparsecircuits.circuits import prune

    fast = dict(steps=4, k_coefs=[1e-2], threads=1, progress=False, force=True, n_train=12, n_test=8,
                curve_points=0, batch_pairs=8, n_probe=8)
    c = prune(run, context_task(run, "for_while", N), **fast)
    plain = prune(run, "for_while", **fast)
    assert c.task == plain.task == "for_while"
    assert c.metrics["full_loss"] != pytest.approx(plain.metrics["full_loss"])


@pytest.mark.parametrize("args, message", [
    (["--context-tokens", "0"], ">= 1"),
    (["--context-tokens", "500"], "128"),
    (["--data", "somewhere"], "--data goes with --context-tokens"),
    (["--context-tokens", "64", "--method", "attribution"], "learned masks"),
])
def test_prune_context_bad_inputs_exit_2(run_dir, tiny_data_dir, capsys, args, message):
    assert main(["prune", str(run_dir), "--task", "for_while", *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
