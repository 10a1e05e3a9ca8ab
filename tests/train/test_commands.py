"""`eval` and `sample` on a finished tiny run."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparsecircuits.cli import main
from sparsecircuits.config import build_config
from sparsecircuits.data.shards import TokenShards

from .conftest import metrics, snapshot


@pytest.fixture
def run_copy(reference_run, tmp_path) -> Path:
    """A copy of the reference run, for commands that write into the run directory."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    return run


def test_eval_json(run_copy, reference_run, capsys):
    assert main(["eval", str(run_copy), "--batches", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    saved = json.loads((run_copy / "eval.json").read_text())  # what the report shows
    assert saved["val_loss"] == out["val_loss"] and "tensors" not in saved
    assert set(saved["measures"]["activation_density"]) == set(out["measures"]["activation_density"])
    # the same weights on the same windows as the last evaluation during training
    assert out["val_loss"] == pytest.approx(metrics(reference_run)[-1]["val_loss"], rel=1e-5)
    vocab = build_config("cpu-tiny").data.vocab_size
    assert out["val_loss"] < math.log(vocab) - 0.5  # well below a uniform guess
    # the baseline by hand: val tokens under add-one-smoothed unigram frequencies of train
    shards = TokenShards(json.loads((reference_run / "config.json").read_text())["data"]["data_dir"])
    counts = np.bincount(np.asarray(shards.train), minlength=vocab) + 1.0
    by_hand = float(-np.log(counts / counts.sum())[np.asarray(shards.val)].mean())
    assert out["unigram_loss"] == pytest.approx(by_hand, rel=1e-9)
    assert out["nonzero_frac"] == pytest.approx(build_config("cpu-tiny").train.density, abs=1e-3)
    assert out["nonzero"] < out["sparse_numel"]
    names = {r["name"] for r in out["tensors"]}
    assert "lm_head.weight" in names and "blocks.0.mlp.c_fc.weight" in names


def test_eval_table(run_copy, capsys):
    assert main(["eval", str(run_copy), "--batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "unigram baseline" in out and "blocks.1.attn.c_attn.weight" in out
    assert "residual kurtosis" in out and "activation density" in out


def test_sample_is_seeded(reference_run, capsys):
    args = ["sample", str(reference_run), "--prompt", "def ", "--tokens", "12", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("def ") and len(first) > len("def \n")


def test_sample_greedy(reference_run, capsys):
    assert main(["sample", str(reference_run), "--prompt", "import ", "--tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("import ")


@pytest.mark.parametrize("args, needle", [
    (["sample", "RUN", "--tokens", "0"], "--tokens"),
    (["sample", "RUN", "--top-k", "-1"], "--top-k"),
    (["sample", "RUN", "--prompt", ""], "empty"),
    (["eval", "RUN", "--batches", "0"], "--batches"),
    (["sample", "MISSING"], "not found"),
    (["eval", "MISSING"], "not found"),
])
def test_bad_command_input(reference_run, tmp_path, capsys, args, needle):
    args = [str(reference_run) if a == "RUN" else str(tmp_path / "nope") if a == "MISSING" else a for a in args]
    before = snapshot(reference_run)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert snapshot(reference_run) == before


def test_eval_with_missing_data_dir(reference_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["data_dir"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data directory" in err[0]
