"""``GPT.generate`` samples what the full forward pass's last-position logits give.

It runs without an autograd graph and unembeds only the last position; the tokens must be
those of the plain loop over ``model(ctx)[:, -1]``, greedy and sampled, also once the
context is longer than the model's window.
"""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT


def _plain(model: GPT, tokens: torch.Tensor, n: int, temperature: float, top_k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        logits = model(tokens[:, -model.cfg.block_size:])[:, -1, :]  # (B, V), every position unembedded
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens


@pytest.mark.parametrize("temperature,top_k", ((0.0, 0), (1.0, 0), (0.8, 5)))
def test_generate_gives_the_full_forwards_tokens_without_a_graph(temperature, top_k):
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=64, block_size=12,
                            bigram_table=True, final_logits_bias=True)).eval()
    start = torch.randint(0, 50, (3, 4), generator=torch.Generator().manual_seed(1))
    out = model.generate(start, 15, temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(2))
    assert out.shape == (3, 19) and not out.requires_grad
    with torch.no_grad():
        want = _plain(model, start, 15, temperature, top_k, seed=2)
    assert torch.equal(out, want)
