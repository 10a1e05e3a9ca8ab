"""Builders for the bridge tests: hand-built tiny models and the arguments of tiny runs."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import torch

from sparsecircuits.bridges.model import Bridges, BridgedRun
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT

FAST = ["--no-progress", "--set", "train.threads=1", "--set", "train.steps=4", "--set", "train.eval_every=2",
        "--set", "train.checkpoint_every=2", "--set", "train.log_every=2", "--set", "train.batch_size=4",
        "--set", "train.seq_len=32"]


def tiny_gpt(seed: int = 0, d_model: int = 16, n_layer: int = 2, afrac: float = 1.0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=n_layer, d_model=d_model, n_head=2, d_head=8, d_mlp=32, block_size=16,
                      vocab_size=40, afrac=afrac)
    model = GPT(cfg).eval()
    with torch.no_grad():  # norm gains away from 1, so a test that ignored them would fail
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight"):
                p.uniform_(0.5, 1.5)
    return model


def twin_pair(seed: int = 0) -> tuple[GPT, GPT, Bridges]:
    """Two copies of one model with identity bridges: every hybrid path is the model itself."""
    dense = tiny_gpt(seed)
    sparse = copy.deepcopy(dense)
    for p in dense.parameters():
        p.requires_grad_(False)
    return dense, sparse, Bridges.identity(dense.cfg.n_layer, dense.cfg.d_model)


def as_bridged(dense: GPT, sparse: GPT, bridges: Bridges) -> BridgedRun:
    return BridgedRun(SimpleNamespace(model=sparse, path=Path(".")), SimpleNamespace(model=dense, path=Path(".")),
                      bridges)


def tokens(seed: int = 1, batch: int = 3, length: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 40, (batch, length), generator=g)
