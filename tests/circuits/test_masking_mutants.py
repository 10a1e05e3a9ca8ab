"""Masking properties the main tests leave open (found by benchmarks/mutation.py).

The hooks keep an activation's dtype and device whatever the mask, baseline or
resample sources were made with (bfloat16 activations under autocast; a GPU, played here
by the meta device); soft masks are never short-cut, so a closed site keeps its mask
gradient; node means are accumulated in double; the evaluation windows, the mean cache's
freshness rules and the error messages are pinned exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from circuit_fixtures import random_model, write_token_shards
from sparsecircuits.circuits.masking import (
    MaskedModel,
    Resample,
    ablation_baseline,
    compute_node_means,
    heaviside_ste,
    node_means,
    val_tokens,
    val_windows,
)
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.data.build import default_data_dir
from sparsecircuits.errors import UserError

B, T = 2, 3  # rows and positions of the hand-made activations


def _activation(site, ns: NodeSet, rows: int = B, meta: bool = False) -> torch.Tensor:
    """A hook's activation: (rows, T, width), or (rows, T, H, Dh) at q/k/v; on the meta device, shape only."""
    shape = (rows, T, ns.n_head, ns.d_head) if site.d_head else (rows, T, site.width)
    if meta:
        return torch.empty(shape, device="meta")
    return torch.randn(shape, generator=torch.Generator().manual_seed(site.start))


def _setups(ns: NodeSet):
    """(name, MaskedModel args, mask, sources, rows): every way a hook gets its mask and ablation value."""
    g = torch.Generator().manual_seed(0)
    model = random_model()
    means = torch.randn(ns.n, generator=g)
    keep = torch.rand(ns.n, generator=g) < 0.5
    soft = torch.rand(ns.n, generator=g)
    two = torch.rand(2, ns.n, generator=g) < 0.5
    sources = {s.hook: _activation(s, ns) * 3 for s in ns.sites}
    return [
        ("mean, hard", (model, means, ns), keep, None, B),
        ("mean, soft", (model, means, ns), soft, None, B),
        ("zero, hard", (model, None, ns), keep, None, B),
        ("zero, soft", (model, None, ns), soft, None, B),
        ("resample, hard", (model, Resample(), ns), keep, sources, B),
        ("resample, soft", (model, Resample(), ns), soft, sources, B),
        ("mean, two masks", (model, means, ns), two, None, 2 * B),
        ("zero, two soft masks", (model, None, ns), two.float(), None, 2 * B),
    ]


@pytest.mark.parametrize("case", range(8))
def test_a_hook_returns_the_activations_dtype(case):
    ns = NodeSet.from_model(random_model())
    name, args, mask, sources, rows = _setups(ns)[case]
    hooks = dict(MaskedModel(*args).hooks(mask, sources))
    for site in ns.sites:
        x = _activation(site, ns, rows)
        ref = hooks[site.hook](x, None)  # float32 throughout
        got = hooks[site.hook](x.bfloat16(), None)
        assert got.dtype == torch.bfloat16 and got.shape == x.shape, (name, site.hook)
        assert torch.allclose(got.float(), ref, atol=0.1, rtol=0.02), (name, site.hook)


@pytest.mark.parametrize("case", range(8))
def test_a_hook_returns_the_activations_device(case):
    ns = NodeSet.from_model(random_model())
    name, args, mask, sources, rows = _setups(ns)[case]
    hooks = dict(MaskedModel(*args).hooks(mask, sources))
    for site in ns.sites:
        out = hooks[site.hook](_activation(site, ns, rows, meta=True), None)  # masks etc. on the CPU
        assert out.device.type == "meta", (name, site.hook)


def test_soft_masks_are_never_short_cut_so_closed_sites_keep_their_gradient():
    """Skipping is for boolean masks: a soft mask's closed node still needs ``x - mean``."""
    model = random_model()  # AbsTopK on: a skipped AbsTopK changes what a closed node sees
    for p in model.parameters():
        p.requires_grad_(False)
    ns = NodeSet.from_model(model)
    masked = MaskedModel(model, torch.randn(ns.n, generator=torch.Generator().manual_seed(1)), ns)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))  # (B, T)
    tau = torch.full((ns.n,), 0.5)
    closed = [ns.site(h) for h in ("blocks.0.hook_attn_out", "blocks.1.attn.hook_q", "blocks.1.hook_mlp_in")]
    for s in closed:
        tau[s.start:s.stop] = -0.5

    def grad(forward):
        t = tau.clone().requires_grad_(True)
        forward(heaviside_ste(t))[:, -1].logsumexp(-1).sum().backward()
        return t.grad

    plain = grad(lambda m: model.run_with_hooks(tokens, fwd_hooks=masked.hooks(m)))
    assert torch.equal(grad(lambda m: masked(tokens, m)), plain)
    for s in closed:
        assert plain[s.start:s.stop].abs().sum() > 0, s.hook


def test_the_straight_through_default_temperature_is_one():
    tau = torch.tensor([-0.5, 0.3, 2.0], requires_grad=True)
    heaviside_ste(tau).sum().backward()
    s = torch.sigmoid(tau.detach())
    assert torch.allclose(tau.grad, s * (1 - s))
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        heaviside_ste(tau, 0)


def test_bad_shapes_say_what_was_expected():
    model = random_model()
    ns = NodeSet.from_model(model)
    with pytest.raises(ValueError, match=rf"^baseline has shape \(3,\), expected \({ns.n},\)$"):
        MaskedModel(model, torch.zeros(3), ns)
    masked = MaskedModel(model, None, ns)
    for shape in ((ns.n + 1,), (2, 2, ns.n)):
        expected = rf"^mask has shape \({', '.join(map(str, shape))},?\), expected \({ns.n},\) or \(R, {ns.n}\)$"
        with pytest.raises(ValueError, match=expected):
            masked.hooks(torch.ones(shape, dtype=torch.bool))


def test_a_fixed_mask_is_the_masked_model_with_that_keep_vector():
    model = random_model()
    ns = NodeSet.from_model(model)
    masked = MaskedModel(model, torch.randn(ns.n, generator=torch.Generator().manual_seed(0)), ns)
    keep = torch.rand(ns.n, generator=torch.Generator().manual_seed(1)) < 0.5
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    assert torch.equal(masked.fixed(keep)(tokens), masked(tokens, keep))
    with pytest.raises(ValueError, match="^keep must be a boolean vector$"):
        masked.fixed(keep.float())
    assert repr(Resample()) == "Resample()"


def test_an_unknown_ablation_lists_the_known_ones():
    with pytest.raises(UserError, match=r"^unknown ablation 'noise'; expected one of: mean, zero, resample$"):
        ablation_baseline(None, "noise")


class _TokenValued(nn.Module):
    """Stands in for a GPT: every node's activation at a position is that position's token id."""

    def __init__(self, nodes: NodeSet) -> None:
        super().__init__()
        self.nodes = nodes
        self.anchor = nn.Parameter(torch.zeros(1))  # where the windows are sent

    def run_with_cache(self, tokens: torch.Tensor, names_filter):
        v = tokens.float()[..., None]  # (b, T, 1)
        return None, {s.hook: v.expand(*tokens.shape, s.width) for s in self.nodes.sites if s.hook in names_filter}


def test_node_means_are_summed_in_double():
    ns = NodeSet.from_model(random_model())
    windows = torch.tensor([[2 ** 24], [1], [1], [2]])  # (N, T=1); float32 would drop the 1s next to 2**24
    means = compute_node_means(_TokenValued(ns), windows, ns, batch_size=1)
    assert torch.equal(means, torch.full((ns.n,), (2 ** 24 + 4) / 4))
    one = compute_node_means(_TokenValued(ns), torch.tensor([[7]]), ns)  # a single position
    assert torch.equal(one, torch.full((ns.n,), 7.0))


def test_evaluation_windows_are_evenly_spaced_from_the_first_token():
    tokens = np.arange(10)
    assert val_windows(tokens, 5, 8).tolist() == [list(range(s, s + 8)) for s in (0, 1, 2)]  # only 3 starts
    assert val_windows(np.arange(5), 3, 8).tolist() == [[0, 1, 2, 3, 4]]  # shorter than the context
    assert val_windows(np.arange(2), 3, 8).tolist() == [[0, 1]]
    with pytest.raises(UserError, match="^the validation split has fewer than 2 tokens; cannot compute node means$"):
        val_windows(np.arange(1), 3, 8)


def test_a_run_without_data_looks_for_the_default_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSECIRCUITS_CACHE", str(tmp_path))

    class Imported:  # an imported model records no data
        data_dir = None

    expected = (f"mean ablation needs the run's validation tokens but {default_data_dir()} has no val.bin; "
                "rebuild the data or use --ablation zero")
    with pytest.raises(UserError) as err:
        val_tokens(Imported)
    assert str(err.value) == expected


def _fake_run(tmp_path):
    model = random_model()
    val = np.random.default_rng(0).integers(0, model.cfg.vocab_size, size=300).astype(np.uint16)
    (tmp_path / "run").mkdir()

    class FakeRun:
        path = tmp_path / "run"
        data_dir = write_token_shards(tmp_path / "data", val, model.cfg.vocab_size)

    FakeRun.model = model
    return FakeRun


def _rewrite_cache(path, change) -> None:
    """Replace the cached means by ``change(means)``, keeping the freshness metadata."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    save_file({k: change(v) for k, v in load_file(str(path)).items()}, str(path), metadata=meta)


def test_cache_false_never_reads_the_cache(tmp_path):
    run = _fake_run(tmp_path)
    means = node_means(run, n_windows=8)
    _rewrite_cache(run.path / "node_means.safetensors", lambda v: v * 2)
    assert torch.equal(node_means(run, n_windows=8), means * 2)  # the cache is read ...
    assert torch.equal(node_means(run, n_windows=8, cache=False), means)  # ... unless told not to


def test_a_cache_with_a_non_finite_mean_is_recomputed(tmp_path):
    run = _fake_run(tmp_path)
    means = node_means(run, n_windows=8)
    _rewrite_cache(run.path / "node_means.safetensors", lambda v: torch.full_like(v, float("nan")))
    assert torch.equal(node_means(run, n_windows=8), means)
