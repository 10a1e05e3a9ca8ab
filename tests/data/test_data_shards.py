"""Token shards: deterministic random windows, ranks split one global batch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparsecircuits.data.shards import TokenShards
from sparsecircuits.errors import UserError


@pytest.fixture(scope="module")
def shards(tiny_data) -> TokenShards:
    return TokenShards(tiny_data)


def test_shards_match_meta(shards, tiny_data):
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert len(shards.train) == meta["train_tokens"] and len(shards.val) == meta["val_tokens"]
    assert shards.train.dtype == np.uint16
    assert shards.vocab_size == 512
    assert int(shards.train.max()) < shards.vocab_size


def test_files_are_joined_by_one_eot(shards, tiny_data):
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert int((shards.train == shards.eot_id).sum()) == meta["train_files"] - 1
    assert int((shards.val == shards.eot_id).sum()) == meta["val_files"] - 1
    assert shards.train[0] != shards.eot_id and shards.train[-1] != shards.eot_id


def test_batch_shapes_and_shift(shards):
    x, y = shards.get_batch("train", batch_size=4, block_size=16, step=0, seed=0)
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.long
    assert x.is_contiguous() and y.is_contiguous()  # callers may .view(-1)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_batch_rows_are_windows_of_the_split(shards):
    x, y = shards.get_batch("val", batch_size=3, block_size=8, step=5, seed=2)
    data = torch.from_numpy(shards.val.astype(np.int64))
    windows = data.unfold(0, 9, 1)  # (N-8, 9): every window of 9 tokens
    for row in torch.cat([x, y[:, -1:]], dim=1):
        assert (windows == row).all(dim=1).any()


def test_batches_are_deterministic_per_seed_step_and_split(shards):
    args = dict(batch_size=4, block_size=16)
    a = shards.get_batch("train", step=3, seed=7, **args)
    b = shards.get_batch("train", step=3, seed=7, **args)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], shards.get_batch("train", step=4, seed=7, **args)[0])
    assert not torch.equal(a[0], shards.get_batch("train", step=3, seed=8, **args)[0])
    assert not torch.equal(a[0], shards.get_batch("val", step=3, seed=7, **args)[0])


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_the_global_batch(shards, world_size):
    full_x, full_y = shards.get_batch("train", batch_size=8, block_size=16, step=11, seed=3)
    per = 8 // world_size
    parts = [
        shards.get_batch("train", batch_size=per, block_size=16, step=11, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert torch.equal(torch.cat([p[0] for p in parts]), full_x)
    assert torch.equal(torch.cat([p[1] for p in parts]), full_y)


def test_bad_rank_and_oversized_block(shards):
    with pytest.raises(ValueError):
        shards.get_batch("train", 2, 8, step=0, seed=0, rank=2, world_size=2)
    with pytest.raises(UserError, match="too few"):
        shards.get_batch("val", 2, len(shards.val), step=0, seed=0)
    with pytest.raises(ValueError):
        shards.get_batch("test", 2, 8, step=0, seed=0)


def test_val_windows_are_deterministic_and_cover_the_split(shards):
    T = 64
    every = list(shards.iter_val_windows(T, batch_size=8))
    xs = torch.cat([x for x, _ in every])
    available = (len(shards.val) - 1) // T
    assert xs.shape == (available, T)
    assert torch.equal(xs[0], torch.from_numpy(shards.val[:T].astype(np.int64)))
    assert torch.equal(xs[1], torch.from_numpy(shards.val[T : 2 * T].astype(np.int64)))
    some = list(shards.iter_val_windows(T, max_windows=5, batch_size=2))
    assert [x.shape[0] for x, _ in some] == [2, 2, 1]
    picked = torch.cat([x for x, _ in some])
    assert torch.equal(picked[0], xs[0]) and torch.equal(picked[-1], xs[-1])  # spread over all of val
    again = torch.cat([x for x, _ in shards.iter_val_windows(T, max_windows=5, batch_size=2)])
    assert torch.equal(picked, again)
    assert list(shards.iter_val_windows(T, max_windows=0)) == []


def test_incomplete_data_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a complete data dir"):
        TokenShards(tmp_path)
