"""The last block at the last positions only (``GPT.forward(last_pos=..., last_only=...)``)."""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT


def _model(seed: int = 0, **overrides) -> GPT:
    cfg = dict(vocab_size=50, n_layer=3, d_model=16, n_head=2, d_head=4, d_mlp=32, block_size=12, afrac=0.5)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**cfg)).eval()
    with torch.no_grad():  # biases, tables and sinks away from their zero init, so they count
        for name, p in model.named_parameters():
            if name in ("final_logits_bias", "bigram_table") or name.endswith(("sink_logit", ".bias")):
                p.normal_(0, 0.5)
    return model


def _inputs(model: GPT, B: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = model.cfg.block_size
    tokens = torch.randint(0, model.cfg.vocab_size, (B, T), generator=g)
    last = torch.tensor([T - 1, 0, 3, 7, T - 1, 5])[:B]
    return tokens, last


VARIANTS = {
    "default": {},
    "no sink": {"attn_sink": False},
    "bigram, bias, positions": {"bigram_table": True, "final_logits_bias": True, "pos_emb": True, "bias": True},
    "relu sublayers": {"residual_activation": "relu_sublayer"},
    "one layer": {"n_layer": 1},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trimmed_logits_match_the_full_pass(variant):
    model = _model(**VARIANTS[variant])
    tokens, last = _inputs(model)
    with torch.no_grad():
        full = model(tokens)  # (B, T, V)
        want = full[torch.arange(len(last)), last]  # (B, V)
        trimmed = model(tokens, last_pos=last, last_only=True)
        untrimmed = model(tokens, last_pos=last, last_only=False)
    assert trimmed.shape == want.shape == (6, model.cfg.vocab_size)
    assert torch.equal(untrimmed, want)
    torch.testing.assert_close(trimmed, want, rtol=1e-5, atol=1e-5)
    # a row's later tokens are padding: its logits are those of the prompt cut at last_pos
    cut = model(tokens[3:4, :last[3] + 1])[0, -1]
    torch.testing.assert_close(trimmed[3], cut, rtol=1e-5, atol=1e-5)


def test_by_default_trimmed_only_without_hooks_on_the_last_block():
    model = _model()
    tokens, last = _inputs(model)
    shapes = {}

    def record(x, hook):
        shapes[hook.name] = tuple(x.shape)

    names = ["blocks.2.attn.hook_q", "blocks.2.attn.hook_k", "blocks.2.hook_mlp_out", "blocks.1.hook_mlp_out"]
    model.run_with_hooks(tokens, fwd_hooks=[(names, record)], last_pos=last)
    assert shapes["blocks.2.attn.hook_q"] == (6, 12, 2, 4)  # hooked: the full pass
    assert shapes["blocks.2.hook_mlp_out"] == (6, 12, 16)
    shapes.clear()
    model.run_with_hooks(tokens, fwd_hooks=[(names, record)], last_pos=last, last_only=True)
    assert shapes["blocks.2.attn.hook_q"] == (6, 1, 2, 4)  # one query per row
    assert shapes["blocks.2.attn.hook_k"] == (6, 12, 2, 4)  # keys for every position
    assert shapes["blocks.2.hook_mlp_out"] == (6, 1, 16)
    assert shapes["blocks.1.hook_mlp_out"] == (6, 12, 16)  # earlier blocks untouched
    shapes.clear()
    model.run_with_hooks(tokens, fwd_hooks=[(["blocks.1.hook_mlp_out"], record)], last_pos=last)
    assert shapes["blocks.1.hook_mlp_out"] == (6, 12, 16)  # a hook on another block does not stop it


def test_a_pattern_hook_on_the_last_block_gets_the_full_pass_even_when_asked():
    model = _model()
    tokens, last = _inputs(model)
    seen = []
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.attn.hook_pattern", lambda x, hook: seen.append(x.shape))],
                         last_pos=last, last_only=True)
    assert seen == [torch.Size([6, 2, 12, 12])]


def test_mask_gradients_match_the_full_pass():
    model = _model(1)
    for p in model.parameters():
        p.requires_grad_(False)
    masked = MaskedModel(model, torch.randn(MaskedModel(model).nodes.n, generator=torch.Generator().manual_seed(2)))
    tokens, last = _inputs(model)
    grads = []
    for trim in (False, True):
        m = torch.rand(masked.nodes.n, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
        out = model.run_with_hooks(tokens, fwd_hooks=masked.hooks(m), last_pos=last, last_only=trim)  # (B, V)
        (out[:, 7] - out[:, 3]).pow(2).sum().backward()
        grads.append(m.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_the_masked_model_trims_and_agrees_with_the_plain_model():
    model = _model(2)
    masked = MaskedModel(model)
    tokens, last = _inputs(model)
    keep = torch.ones(masked.nodes.n, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(masked(tokens, keep, last_pos=last), model(tokens, last_pos=last))
