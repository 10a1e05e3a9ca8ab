"""The fused attention and RMSNorm kernels: the plain ops' values and gradients, hooks unchanged.

The reference below is the model written out op by op (mask-multiply AbsTopK, scores with
a masked_fill, the sink as a concatenated column before the softmax), reading the model's
own parameters, so logits and every parameter gradient can be compared directly.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from sparsecircuits.config import ACTIVATION_SITES, ModelConfig
from sparsecircuits.model.gpt import GPT, abstopk, topk_width
from sparsecircuits.model.kernels import causal_attention, rms_norm

V = 61


# -- reference ---------------------------------------------------------------------------
def ref_abstopk(x, k):
    """The k largest magnitudes by a full sort, kept by multiplying with a 0/1 mask."""
    if k >= x.shape[-1]:
        return x
    idx = x.abs().argsort(-1, descending=True)[..., :k]
    return x * torch.zeros_like(x).scatter_(-1, idx, 1.0)


def ref_rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def ref_attention(q, k, v, sink):
    """q, k, v (B, T, H, Dh) -> z (B, T, H, Dh), pattern (B, H, T, T)."""
    B, T, H, Dh = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(Dh))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    if sink is not None:
        col = sink.view(1, H, 1, 1).expand(B, H, T, 1).to(scores.dtype)
        pattern = torch.softmax(torch.cat([scores, col], -1), -1)[..., :T]
    else:
        pattern = torch.softmax(scores, -1)
    return (pattern @ v).transpose(1, 2), pattern


def ref_forward(m: GPT, tokens: torch.Tensor):
    """Logits (B, T, V) and the attention activations, computed op by op from m's parameters."""
    cfg = m.cfg
    assert cfg.residual_activation == "identity" and not cfg.pos_emb and not cfg.bigram_table
    B, T = tokens.shape
    H, Dh, inner = cfg.n_head, cfg.d_head, cfg.n_head * cfg.d_head

    def sparse(x, site):
        on = site in cfg.afrac_sites and cfg.afrac < 1.0
        return ref_abstopk(x, topk_width(cfg.afrac, x.shape[-1])) if on else x

    acts = {}
    x = m.wte.weight[tokens]  # (B, T, D)
    for i, b in enumerate(m.blocks):
        a = b.attn
        h = sparse(ref_rms(x, b.ln_1.weight, cfg.norm_eps), "attn_in")
        q, k, v = F.linear(h, a.c_attn.weight, a.c_attn.bias).split(inner, -1)
        q, k, v = (sparse(t, s).view(B, T, H, Dh) for t, s in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")))
        z, pattern = ref_attention(q, k, v, a.sink_logit)
        for name, t in (("q", q), ("k", k), ("v", v), ("pattern", pattern), ("z", z)):
            acts[f"blocks.{i}.attn.hook_{name}"] = t.detach()
        x = x + sparse(F.linear(z.reshape(B, T, inner), a.c_proj.weight, a.c_proj.bias), "attn_out")
        h = sparse(ref_rms(x, b.ln_2.weight, cfg.norm_eps), "mlp_in")
        post = sparse(F.gelu(F.linear(h, b.mlp.c_fc.weight, b.mlp.c_fc.bias)), "mlp_neuron")
        x = x + sparse(F.linear(post, b.mlp.c_proj.weight, b.mlp.c_proj.bias), "mlp_out")
    return F.linear(ref_rms(x, m.ln_final.norm.weight, cfg.norm_eps), m.lm_head.weight), acts


# -- helpers -----------------------------------------------------------------------------
def random_model(dtype, seed=0, **kw) -> GPT:
    """A tiny model whose norm gains and sink logits are random too (they start at 1 and 0)."""
    base = dict(vocab_size=V, n_layer=2, d_model=32, n_head=2, d_head=8, d_mlp=64, block_size=16)
    base.update(kw)
    torch.manual_seed(seed)
    m = GPT(ModelConfig(**base)).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln_" in name or "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("sink_logit"):
                p.copy_(torch.randn_like(p))
            else:
                p.mul_(10)  # larger activations: attention patterns far from uniform
    return m


def tokens(B=3, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def loss_and_grads(m, logits, y):
    m.zero_grad(set_to_none=True)
    F.cross_entropy(logits.flatten(0, 1).double(), y.flatten()).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


TOL = {torch.float32: (1e-6, 1e-5), torch.float64: (1e-12, 1e-10)}  # logits, grads: relative to the largest


# -- whole model -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sink", [True, False])
@pytest.mark.parametrize("afrac", [0.25, 1.0])
@pytest.mark.parametrize("d_head", [8, 16])  # 1/sqrt(16) is a power of two, 1/sqrt(8) is not
def test_logits_and_gradients_match_the_op_by_op_model(dtype, sink, afrac, d_head):
    m = random_model(dtype, attn_sink=sink, afrac=afrac, d_head=d_head)
    x, y = tokens()
    logits_ref, _ = ref_forward(m, x)
    grads_ref = loss_and_grads(m, logits_ref, y)
    logits = m(x)
    grads = loss_and_grads(m, logits, y)
    atol, rtol = TOL[dtype]
    assert logits.dtype == dtype
    assert (logits - logits_ref).abs().max() <= atol * logits_ref.abs().max()
    assert grads.keys() == grads_ref.keys()
    if sink:
        assert grads["blocks.0.attn.sink_logit"].abs().min() > 0
    for name, g in grads.items():
        scale = grads_ref[name].abs().max()
        assert scale > 0, name
        assert (g - grads_ref[name]).abs().max() <= rtol * scale, name


@pytest.mark.parametrize("sink", [True, False])
def test_run_with_cache_returns_the_reference_activations(sink):
    m = random_model(torch.float32, attn_sink=sink)
    x, _ = tokens()
    _, acts = ref_forward(m, x)
    logits_all, cache = m.run_with_cache(x)  # a hook on every pattern: the op-by-op path
    logits_some, some = m.run_with_cache(x, names_filter=lambda n: "hook_pattern" not in n)  # fused path
    assert torch.allclose(logits_all, logits_some, rtol=0, atol=1e-6)
    for name, want in acts.items():
        assert torch.allclose(cache[name], want, rtol=0, atol=1e-6), name
        if "pattern" not in name:
            assert torch.allclose(some[name], want, rtol=0, atol=1e-6), name
            assert some[name].shape == cache[name].shape
    assert "blocks.0.attn.hook_pattern" not in some


def test_a_hook_that_edits_the_pattern_still_takes_effect():
    m = random_model(torch.float32)
    x, _ = tokens()
    seen = {}

    def keep_z(z, hook):
        seen[hook.name] = z

    m.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda p, hook: torch.zeros_like(p)),
                                   ("blocks.0.attn.hook_z", keep_z)])
    assert torch.equal(seen["blocks.0.attn.hook_z"], torch.zeros(3, 12, 2, 8))


def graph_nodes(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def test_training_takes_the_fused_path_and_autocast_the_op_by_op_one():
    m = random_model(torch.float32)
    x, y = tokens()
    fused = {"_CausalAttentionBackward", "_RMSNormBackward"}
    assert fused <= graph_nodes(m(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(x)
    assert not fused & graph_nodes(logits)
    F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()
    assert torch.isfinite(m.blocks[0].attn.sink_logit.grad).all()


# -- the kernels on their own ------------------------------------------------------------
@pytest.mark.parametrize("sink", [True, False])
@pytest.mark.parametrize("d_head", [3, 4])
def test_attention_gradcheck(sink, d_head):
    g = torch.Generator().manual_seed(0)
    B, T, H = 2, 5, 2
    q, k, v = (torch.randn(B, T, H, d_head, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    s = torch.randn(H, generator=g, dtype=torch.float64, requires_grad=True) if sink else None
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    bias = torch.zeros(T, T, dtype=torch.float64).masked_fill(~causal, float("-inf"))
    ins = (q, k, v) + ((s,) if sink else ())

    def fn(q, k, v, *s):
        return causal_attention(q, k, v, s[0] if s else None, bias, 1 / math.sqrt(d_head))

    assert torch.autograd.gradcheck(fn, ins)
    z_ref, _ = ref_attention(q, k, v, s)
    assert torch.allclose(fn(*ins), z_ref, rtol=0, atol=1e-13)


def test_attention_skips_gradients_nobody_needs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 2, 4, generator=g) for _ in range(3))
    v.requires_grad_()
    sink = torch.zeros(2)  # a frozen sink
    bias = torch.zeros(4, 4).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf"))
    causal_attention(q, k, v, sink, bias, 0.5).sum().backward()
    assert v.grad is not None and q.grad is None and sink.grad is None


def test_rms_norm_gradcheck_and_forward_equal_to_the_plain_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-5), (x, w))
    x32 = torch.randn(4, 7, 32, generator=g)
    w32 = torch.randn(32, generator=g)
    assert torch.equal(rms_norm(x32, w32, 1e-5), ref_rms(x32, w32, 1e-5))


# -- AbsTopK -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width,k", [(128, 32), (512, 128), (7, 1), (16, 15)])
def test_abstopk_keeps_exactly_the_k_largest_magnitudes(dtype, width, k):
    x = torch.randn(4, 9, width, generator=torch.Generator().manual_seed(width), dtype=dtype)
    y = abstopk(x, k)
    assert y.dtype == dtype
    assert ((y != 0).sum(-1) == k).all()
    assert torch.equal(y, ref_abstopk(x, k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_keeps_exactly_k_per_token_at_every_site(dtype):
    m = random_model(dtype, afrac=0.25)
    x, _ = tokens()
    _, cache = m.run_with_cache(x)
    hooks = {"attn_in": "hook_attn_in", "attn_q": "attn.hook_q", "attn_k": "attn.hook_k",
             "attn_v": "attn.hook_v", "attn_out": "hook_attn_out", "mlp_in": "hook_mlp_in",
             "mlp_neuron": "mlp.hook_post", "mlp_out": "hook_mlp_out"}
    assert set(hooks) == set(ACTIVATION_SITES)
    for site, hook in hooks.items():
        for i in range(2):
            act = cache[f"blocks.{i}.{hook}"]
            flat = act.reshape(*act.shape[:2], -1)  # (B, T, width)
            assert ((flat != 0).sum(-1) == topk_width(0.25, flat.shape[-1])).all(), site


# -- AbsTopK by the C kernel in training -------------------------------------------------
def _require_native():
    from sparsecircuits.model import native

    if native.library() is None:
        if os.environ.get("CI"):
            pytest.fail(f"the C kernels must build in CI: {native.unavailable_reason()}")
        pytest.skip(f"no C kernels: {native.unavailable_reason()}")


def _train(m, steps, monkeypatch=None):
    """A few AdamW steps on random tokens; the parameters after them."""
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for step in range(steps):
        x, y = tokens(seed=step)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def test_training_runs_abstopk_by_the_kernel_and_reaches_the_torch_ops_exact_weights(monkeypatch):
    """The kernel keeps the same entries as the torch op on every row (ties included), so a
    model trained with it has bit-for-bit the weights of one trained without."""
    _require_native()
    import sparsecircuits.model.gpt as gpt

    m = random_model(torch.float32)
    x, _ = tokens()
    assert "NativeAbsTopKBackward" in graph_nodes(m(x))
    with_kernel = _train(random_model(torch.float32), 4)
    monkeypatch.setattr(gpt, "site_abstopk", lambda x, k: None)  # the torch op everywhere
    plain = random_model(torch.float32)
    assert "NativeAbsTopKBackward" not in graph_nodes(plain(x))
    without = _train(plain, 4)
    for name, p in without.items():
        assert torch.equal(with_kernel[name], p), name
    assert not torch.equal(with_kernel["blocks.0.mlp.c_fc.weight"], random_model(torch.float32).blocks[0].mlp.c_fc.weight)


def test_the_kernel_stays_out_of_autocast_and_other_dtypes():
    _require_native()
    m = random_model(torch.float64)
    x, _ = tokens()
    assert "NativeAbsTopKBackward" not in graph_nodes(m(x))
    m32 = random_model(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "NativeAbsTopKBackward" not in graph_nodes(m32(x))
