"""GPT's partial forward (start_at_layer, stop_at_layer, last_pos) against the full forward."""
import pytest
import torch

from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT

OPTIONS = {
    "plain": {},
    "bigram_bias_pos": {"bigram_table": True, "final_logits_bias": True, "pos_emb": True},
    "relu_sublayer_no_sink": {"residual_activation": "relu_sublayer", "attn_sink": False, "afrac": 1.0},
}


def make(**kw) -> GPT:
    cfg = ModelConfig(vocab_size=61, n_layer=3, d_model=32, n_head=2, d_head=8, d_mlp=64, block_size=16, **kw)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():  # nonzero tables and sinks, so leaving them out would show
        for name, p in model.named_parameters():
            if name in ("bigram_table", "final_logits_bias") or name.endswith("sink_logit"):
                p.normal_(0.0, 0.5)
    return model


def tokens(B=4, T=12):
    return torch.randint(0, 61, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("opts", OPTIONS.values(), ids=list(OPTIONS))
@torch.no_grad()
def test_starting_at_any_layer_from_the_cached_residual_gives_the_full_logits(opts):
    model, x = make(**opts), tokens()
    full, cache = model.run_with_cache(x)
    for layer in range(model.cfg.n_layer):
        resid = cache[f"blocks.{layer}.hook_resid_pre"]  # (B, T, D)
        assert torch.equal(model(resid, start_at_layer=layer, tokens=x), full)


@pytest.mark.parametrize("opts", OPTIONS.values(), ids=list(OPTIONS))
@torch.no_grad()
def test_stopping_returns_the_residual_entering_that_layer(opts):
    model, x = make(**opts), tokens()
    _, cache = model.run_with_cache(x)
    n = model.cfg.n_layer
    assert torch.equal(model(x, stop_at_layer=0), cache["hook_embed"])
    for layer in range(1, n):
        assert torch.equal(model(x, stop_at_layer=layer), cache[f"blocks.{layer}.hook_resid_pre"])
    assert torch.equal(model(x, stop_at_layer=n), cache[f"blocks.{n - 1}.hook_resid_post"])
    assert torch.equal(model(x, stop_at_layer=-1), cache[f"blocks.{n - 1}.hook_resid_pre"])
    # a pass cut in two and resumed is the whole pass
    mid = model(x, stop_at_layer=2)
    assert torch.equal(model(mid, start_at_layer=2, tokens=x), model(x))
    assert torch.equal(model(model(x, stop_at_layer=1), start_at_layer=1, stop_at_layer=2), mid)


@pytest.mark.parametrize("opts", OPTIONS.values(), ids=list(OPTIONS))
@torch.no_grad()
def test_last_pos_gives_each_rows_logits_at_its_position(opts):
    model, x = make(**opts), tokens()
    last = torch.tensor([11, 0, 5, 7])
    rows = torch.arange(4)
    full = model(x)
    got = model(x, last_pos=last)  # (B, V)
    assert got.shape == (4, 61)
    assert torch.allclose(got, full[rows, last], atol=1e-6, rtol=0)
    resid = model(x, stop_at_layer=1)
    assert torch.equal(model(resid, start_at_layer=1, tokens=x, last_pos=last), got)


@torch.no_grad()
def test_a_partial_pass_runs_only_its_own_hooks():
    model, x = make(), tokens()
    _, cache = model.run_with_cache(model(x, stop_at_layer=2), start_at_layer=2)
    assert "hook_embed" not in cache and not any(k.startswith(("blocks.0.", "blocks.1.")) for k in cache)
    assert "blocks.2.attn.hook_q" in cache and "ln_final.hook_normalized" in cache
    _, cache = model.run_with_cache(x, stop_at_layer=1)
    assert "blocks.0.hook_mlp_out" in cache and not any(k.startswith(("blocks.1.", "ln_final")) for k in cache)


def test_a_bigram_model_started_midway_needs_the_tokens():
    model, x = make(bigram_table=True), tokens()
    resid = model(x, stop_at_layer=1)
    with pytest.raises(ValueError, match="tokens="):
        model(resid, start_at_layer=1)
    plain = make()
    plain(plain(x, stop_at_layer=1), start_at_layer=1)  # no table: the tokens are not needed
