import numpy as np
import pytest
import torch

from circuit_fixtures import random_model, write_token_shards
from sparsecircuits.circuits.masking import (
    MaskedModel,
    ablate_only,
    compute_node_means,
    heaviside_ste,
    node_means,
    val_windows,
)
from sparsecircuits.circuits.nodes import NodeSet


def _tokens(model, b=4, t=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, (b, t), generator=g)


def test_keeping_every_node_reproduces_the_logits_exactly():
    model = random_model()
    x = _tokens(model)
    ns = NodeSet.from_model(model)
    means = torch.randn(ns.n, generator=torch.Generator().manual_seed(0))
    masked = MaskedModel(model, means, ns)
    ref = model(x)
    assert torch.equal(masked(x, torch.ones(ns.n, dtype=torch.bool)), ref)
    # the differentiable path with every tau open is exact too
    tau = torch.full((ns.n,), 0.3, requires_grad=True)
    assert torch.equal(masked(x, heaviside_ste(tau)), ref)
    # last-position-only logits are the same numbers
    last = torch.tensor([9, 3, 0, 5])
    rows = torch.arange(4)
    assert torch.allclose(masked(x, None, last_pos=last), ref[rows, last], atol=1e-6, rtol=0)


def test_last_position_logits_with_a_bigram_table():
    model = random_model(bigram_table=True)
    with torch.no_grad():
        model.bigram_table.normal_(generator=torch.Generator().manual_seed(0))
    x = _tokens(model)
    last = torch.tensor([2, 9, 4, 0])
    got = MaskedModel(model)(x, None, last_pos=last)
    assert torch.allclose(got, model(x)[torch.arange(4), last], atol=1e-5, rtol=0)


def test_mean_ablating_every_node_equals_the_all_means_forward():
    model = random_model(afrac=1.0, attn_sink=False)
    ns = NodeSet.from_model(model)
    means = torch.randn(ns.n, generator=torch.Generator().manual_seed(0))
    x = _tokens(model)
    got = MaskedModel(model, means, ns)(x, torch.zeros(ns.n, dtype=torch.bool))
    # by hand: every residual write is its mean, so the stream is embedding + sum of means
    resid = model.wte.weight[x]  # (B, T, D)
    for i in range(model.cfg.n_layer):
        for kind in ("attn_out", "mlp_out"):
            s = ns.site(f"blocks.{i}.hook_{kind}")
            resid = resid + means[s.start:s.stop]
    expected = model.lm_head(model.ln_final.norm(resid))
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    # and it no longer depends on anything but the current token
    x2 = x.clone()
    x2[:, :-1] = (x2[:, :-1] + 1) % model.cfg.vocab_size
    got2 = MaskedModel(model, means, ns)(x2, torch.zeros(ns.n, dtype=torch.bool))
    assert torch.allclose(got[:, -1], got2[:, -1], atol=1e-6)


def test_zero_ablation_of_a_neuron_matches_a_hand_written_hook():
    model = random_model()
    ns = NodeSet.from_model(model)
    x = _tokens(model)
    keep = ablate_only(ns, ["blocks.1.mlp.hook_post:5", "blocks.0.attn.hook_k:6"])
    assert int((~keep).sum()) == 2

    def zero(t, hook):
        t = t.clone()
        if hook.name.endswith("hook_post"):
            t[..., 5] = 0
        else:  # k is (B, T, H, Dh): flat channel 6 = head 1, channel 2 (d_head 4)
            t[..., 1, 2] = 0
        return t

    ref = model.run_with_hooks(x, fwd_hooks=[("blocks.1.mlp.hook_post", zero), ("blocks.0.attn.hook_k", zero)])
    assert torch.equal(MaskedModel(model, None, ns)(x, keep), ref)
    assert not torch.equal(ref, model(x))


def test_ste_forward_is_heaviside_and_backward_is_sigmoid_derivative():
    tau = torch.tensor([-0.5, 0.0, 0.2, 1.0], requires_grad=True)
    for temp in (1.0, 0.5):
        m = heaviside_ste(tau, temp)
        assert m.tolist() == [0.0, 0.0, 1.0, 1.0]  # closed at exactly 0
        (g,) = torch.autograd.grad((m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum(), tau)
        s = torch.sigmoid(tau.detach() / temp)
        assert torch.allclose(g, torch.tensor([1.0, 2.0, 3.0, 4.0]) * s * (1 - s) / temp)


def test_surrogate_gradient_reaches_tau_through_the_model():
    model = random_model()
    for p in model.parameters():
        p.requires_grad_(False)
    ns = NodeSet.from_model(model)
    tau = torch.full((ns.n,), 0.1, requires_grad=True)
    logits = MaskedModel(model, torch.zeros(ns.n), ns)(_tokens(model), heaviside_ste(tau))
    logits[:, -1, 3].sum().backward()
    assert tau.grad is not None
    assert (tau.grad != 0).sum() > ns.n // 4  # most nodes influence the logit
    # gradient reaches every kind of site
    for s in ns.sites:
        assert tau.grad[s.start:s.stop].abs().sum() > 0, s.hook


def test_node_means_average_over_all_positions_and_are_cached(tmp_path):
    model = random_model()
    ns = NodeSet.from_model(model)
    rng = np.random.default_rng(0)
    val = rng.integers(0, model.cfg.vocab_size, size=500).astype(np.uint16)
    windows = val_windows(val, 20, model.cfg.block_size)
    assert windows.shape == (20, model.cfg.block_size)
    means = compute_node_means(model, windows, ns, batch_size=7)
    _, cache = model.run_with_cache(windows)
    s = ns.site("blocks.1.attn.hook_v")
    assert torch.allclose(means[s.start:s.stop], cache[s.hook].reshape(-1, s.width).mean(0), atol=1e-5)

    data = write_token_shards(tmp_path / "data", val, model.cfg.vocab_size)
    (tmp_path / "run").mkdir()

    class FakeRun:
        path = tmp_path / "run"
        data_dir = data  # the run's config records its data

    FakeRun.model = model
    m1 = node_means(FakeRun, n_windows=20)
    assert (tmp_path / "run" / "node_means.safetensors").is_file()
    assert torch.allclose(m1, means, atol=1e-5)
    (data / "val.bin").unlink()  # the cache is used now: no data needed
    assert torch.equal(node_means(FakeRun, n_windows=20), m1)
    from sparsecircuits.errors import UserError

    with pytest.raises(UserError, match="val"):
        node_means(FakeRun, n_windows=30)  # a different setting is not served from the cache
