"""Fixtures for the task-suite tests: the project's tokenizer on a small stdlib subset,
and a tiny causal stand-in model whose logits are cheap and exactly reproducible."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from sparsecircuits.data.build import build_tiny_data

    out = tmp_path_factory.mktemp("tasks_tiny_data")
    return build_tiny_data(out) or out


@pytest.fixture(scope="session")
def tokenizer(tiny_data_dir):
    from sparsecircuits.data.tokenizer import load_tokenizer

    return load_tokenizer(tiny_data_dir / "tokenizer.json")


class CausalBag(torch.nn.Module):
    """logits[t] = W @ mean(embed(tokens[: t + 1])): causal, so padding after a
    position never changes its logits, and any bug in position bookkeeping shows."""

    def __init__(self, vocab_size: int, d: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(vocab_size, d, generator=g))
        self.unembed = torch.nn.Parameter(torch.randn(vocab_size, d, generator=g))
        self.calls: list[tuple[int, int]] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(tokens.shape))
        x = self.embed[tokens]  # (B, T, d)
        counts = torch.arange(1, tokens.shape[1] + 1, dtype=x.dtype)[None, :, None]  # (1, T, 1)
        h = x.cumsum(dim=1) / counts  # (B, T, d)
        return h @ self.unembed.T  # (B, T, V)


@pytest.fixture
def bag_model(tokenizer):
    return CausalBag(tokenizer.get_vocab_size())
