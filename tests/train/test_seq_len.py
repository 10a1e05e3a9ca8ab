"""train.seq_len: training windows shorter than the model's context."""
from __future__ import annotations

import json

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.config import build_config
from sparsecircuits.errors import UserError
from sparsecircuits.train.trainer import Trainer

from .conftest import train_args


def test_windows_have_seq_len_tokens_and_the_model_keeps_its_context(tiny_data, tmp_path, monkeypatch):
    cfg = build_config("cpu-tiny", sets=[f"data.data_dir={tiny_data}", "train.seq_len=24", "train.steps=3",
                                         "train.threads=1"])
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    shapes = []
    real = tr.shards.get_batch
    monkeypatch.setattr(tr.shards, "get_batch", lambda *a, **k: shapes.append(a[2]) or real(*a, **k))
    tr.train_step()
    assert shapes == [24]
    assert tr.tokens_seen == cfg.train.batch_size * 24
    assert tr.model.cfg.block_size == 96
    assert tr.model(torch.zeros(1, 96, dtype=torch.long)).shape[1] == 96  # the full context still runs


def test_a_run_records_tokens_of_seq_len(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--set", "train.seq_len=32", "--set", "train.steps=10")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["tokens"] == 10 * 8 * 32


def test_seq_len_longer_than_the_context_is_refused():
    with pytest.raises(UserError, match="seq_len"):
        build_config("cpu-tiny", sets=["train.seq_len=97"])
    assert build_config("cpu-tiny").seq_len == 96
