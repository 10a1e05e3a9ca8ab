"""The model: shapes, AbsTopK sites, hook behaviour, causality, sink and bigram options."""
import pytest
import torch

from sparsecircuits.config import ACTIVATION_SITES, ModelConfig
from sparsecircuits.model.gpt import GPT, abstopk, topk_width


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=61, n_layer=2, d_model=32, n_head=2, d_head=8, d_mlp=64, block_size=16)
    base.update(kw)
    return ModelConfig(**base)


def make(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_cfg(**kw)).eval()


def tokens(B=3, T=12, V=61, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logit_shape_and_param_names():
    m = make()
    out = m(tokens())
    assert out.shape == (3, 12, 61)
    names = dict(m.named_parameters())
    assert names["blocks.0.attn.c_attn.weight"].shape == (3 * 2 * 8, 32)
    assert names["blocks.1.mlp.c_fc.weight"].shape == (64, 32)
    assert "blocks.0.attn.sink_logit" in names and "wpe.weight" not in names


def test_abstopk_keeps_largest_magnitudes():
    x = torch.tensor([[3.0, -5.0, 1.0, 0.5], [-0.1, 0.2, -0.3, 0.4]])
    y = abstopk(x, 2)
    assert torch.equal(y, torch.tensor([[3.0, -5.0, 0.0, 0.0], [0.0, 0.0, -0.3, 0.4]]))


SITE_HOOKS = {
    "attn_in": ("blocks.{i}.hook_attn_in", 32),
    "attn_q": ("blocks.{i}.attn.hook_q", 16),
    "attn_k": ("blocks.{i}.attn.hook_k", 16),
    "attn_v": ("blocks.{i}.attn.hook_v", 16),
    "attn_out": ("blocks.{i}.hook_attn_out", 32),
    "mlp_in": ("blocks.{i}.hook_mlp_in", 32),
    "mlp_neuron": ("blocks.{i}.mlp.hook_post", 64),
    "mlp_out": ("blocks.{i}.hook_mlp_out", 32),
}


@pytest.mark.parametrize("site", ACTIVATION_SITES)
def test_each_site_keeps_exactly_k_per_token_and_only_when_enabled(site):
    hook, width = SITE_HOOKS[site]
    on = make(afrac=0.25, afrac_sites=[site])
    off = make(afrac=0.25, afrac_sites=[s for s in ACTIVATION_SITES if s != site])
    k = topk_width(0.25, width)
    for model, expect_k in ((on, k), (off, None)):
        _, cache = model.run_with_cache(tokens())
        for i in range(2):
            act = cache[hook.format(i=i)]
            flat = act.reshape(act.shape[0], act.shape[1], -1)  # (B, T, width)
            nz = (flat != 0).sum(-1)
            if expect_k is None:
                assert (nz > k).all()
            else:
                assert (nz == expect_k).all()


def test_hooks_see_post_sparsity_values_and_edits_propagate():
    m = make(afrac=0.25)
    t = tokens()
    base = m(t)
    seen = {}

    def grab(x, hook):
        seen["x"] = x.clone()

    m.run_with_hooks(t, fwd_hooks=[("blocks.0.mlp.hook_post", grab)])
    assert ((seen["x"] != 0).sum(-1) == topk_width(0.25, 64)).all()

    active = int(seen["x"][0, -1].abs().argmax())

    def ablate(x, hook):
        x = x.clone()
        x[..., active] = 0.0
        return x

    edited = m.run_with_hooks(t, fwd_hooks=[("blocks.0.mlp.hook_post", ablate)])
    assert not torch.allclose(edited, base)
    assert all(not hp._fns for hp in m.hook_points().values())  # nothing left behind
    assert torch.equal(m(t), base)


def test_hooks_removed_even_when_forward_raises():
    m = make()

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        m.run_with_hooks(tokens(), fwd_hooks=[("blocks.1.hook_resid_post", boom)])
    assert all(not hp._fns for hp in m.hook_points().values())


def test_unknown_hook_name_is_an_error():
    with pytest.raises(KeyError):
        make().run_with_hooks(tokens(), fwd_hooks=[("blocks.9.hook_nope", lambda x, h: None)])


def test_run_with_cache_names_filter_and_transformerlens_names():
    m = make()
    _, cache = m.run_with_cache(tokens(), names_filter=lambda n: n.endswith("hook_pattern"))
    assert sorted(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    names = set(m.hook_points())
    for n in ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_in", "blocks.0.attn.hook_z",
              "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out",
              "blocks.0.hook_resid_post", "ln_final.hook_normalized"]:
        assert n in names


@pytest.mark.parametrize("opts", [{}, {"pos_emb": True}, {"attn_sink": False}, {"bigram_table": True}])
def test_causality(opts):
    m = make(**opts)
    if opts.get("bigram_table"):
        torch.nn.init.normal_(m.bigram_table)
    t = tokens(B=2, T=10)
    t2 = t.clone()
    t2[:, 6] = (t2[:, 6] + 1) % 61
    a, b = m(t), m(t2)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_sink_takes_attention_mass_and_its_logit_controls_it():
    m = make(attn_sink=True)
    _, cache = m.run_with_cache(tokens(), names_filter="blocks.0.attn.hook_pattern")
    mass = cache["blocks.0.attn.hook_pattern"].sum(-1)  # (B, H, T), < 1: the rest went to the sink
    assert (mass < 1).all()
    with torch.no_grad():
        m.blocks[0].attn.sink_logit.fill_(-1e4)
    _, cache = m.run_with_cache(tokens(), names_filter="blocks.0.attn.hook_pattern")
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(3, 2, 12), atol=1e-5)

    nosink = make(attn_sink=False)
    _, cache = nosink.run_with_cache(tokens(), names_filter="blocks.0.attn.hook_pattern")
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(3, 2, 12), atol=1e-5)


def test_bigram_table_adds_the_current_tokens_row():
    m = make(bigram_table=True)
    t = tokens()
    base = m(t)
    with torch.no_grad():
        m.bigram_table[t[0, 3], 7] = 5.0
    out = m(t)
    diff = out - base
    assert torch.allclose(diff[0, 3, 7], torch.tensor(5.0))
    changed = diff.abs() > 0
    assert changed.sum() == (t == t[0, 3]).sum()  # only positions holding that token, column 7


def test_positional_embedding_makes_position_matter():
    same = torch.full((1, 8), 5)
    no_pos = make(pos_emb=False, attn_sink=False, afrac=1.0)
    out = no_pos(same)
    # identical tokens and no positions: every position sees the same context average
    assert torch.allclose(out[0, 0], out[0, -1], atol=1e-5)
    with_pos = make(pos_emb=True, attn_sink=False, afrac=1.0)
    out = with_pos(same)
    assert not torch.allclose(out[0, 0], out[0, -1], atol=1e-4)


def test_gpt2_init_scales():
    m = GPT(tiny_cfg(n_layer=8, d_model=256, d_mlp=1024, n_head=4, d_head=16))
    assert abs(m.blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert abs(m.blocks[0].mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0005
