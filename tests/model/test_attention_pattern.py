"""Attention.pattern: the model's own pattern, for all heads, some heads or some channels."""
import math

import pytest
import torch

from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT


def make(sink: bool) -> GPT:
    cfg = ModelConfig(vocab_size=61, n_layer=1, d_model=32, n_head=2, d_head=8, d_mlp=64, block_size=16,
                      attn_sink=sink)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    if sink:
        with torch.no_grad():
            model.blocks[0].attn.sink_logit.copy_(torch.tensor([0.7, -1.3]))
    return model


@pytest.mark.parametrize("sink", [True, False])
@torch.no_grad()
def test_pattern_is_the_models_and_picks_heads_with_their_sinks(sink):
    model = make(sink)
    x = torch.randint(0, 61, (3, 10), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(x)
    attn = model.blocks[0].attn
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]  # (B, T, H, Dh)
    full = attn.pattern(q, k)
    assert torch.equal(full, cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(attn.pattern(q[:, :, [1]], k[:, :, [1]], heads=[1]), full[:, [1]])
    if sink:  # the sink takes a share, so a row sums to less than one
        assert bool((full.sum(-1) < 1).all())


@torch.no_grad()
def test_a_channel_subset_scores_at_the_heads_scale():
    model = make(True)
    attn = model.blocks[0].attn
    torch.manual_seed(2)
    q, k = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8)
    ch = [1, 4, 6]
    got = attn.pattern(q[:, :, [0]][..., ch], k[:, :, [0]][..., ch], heads=[0])[0, 0]  # (T, T)
    scores = (q[0, :, 0, ch] @ k[0, :, 0, ch].T) / math.sqrt(8)  # scale of the whole head (Dh 8)
    for t in range(5):
        row = torch.cat([scores[t, :t + 1], torch.tensor([0.7])]).softmax(-1)[:-1]
        assert torch.allclose(got[t, :t + 1], row, atol=1e-6, rtol=0)
        assert bool((got[t, t + 1:] == 0).all())  # causal
