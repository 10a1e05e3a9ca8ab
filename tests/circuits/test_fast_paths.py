"""The fast paths of pruning and evaluation give what the plain paths give.

* a boolean mask skips the work feeding sites it ablates whole (``circuits/skip.py``):
  the logits are the plain hooked forward's, bit for bit, for every ablation;
* R masks in one pass (a mask (R, n)) give each mask's own logits and mask gradients;
* the k_coef sweep optimised together gives each k_coef's separate run;
* AbsTopK by the C kernel (``circuits/frozen.py``) gives the same logits and mask
  gradients as the model's own op.
"""
from __future__ import annotations

import pytest
import torch
from circuit_fixtures import random_model, toy_examples

from sparsecircuits.circuits.frozen import kernel_sites
from sparsecircuits.circuits.masking import MaskedModel, Resample, heaviside_ste
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.circuits.prune import _frozen, _resolve_task, optimise_tau, optimise_taus
from sparsecircuits.circuits.skip import dead_sites, skippable
from sparsecircuits.config import PruneSettings
from sparsecircuits.model import native
from sparsecircuits.sites import hook_name


def _tokens(model, b=6, t=10, seed=1):
    return torch.randint(0, model.cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def _keeps(ns: NodeSet) -> dict[str, torch.Tensor]:
    """Keep vectors that leave every pattern of dead sites: none, everything, single sites,
    whole sublayers, random sparse and dense sets."""
    g = torch.Generator().manual_seed(0)
    out = {"none": torch.zeros(ns.n, dtype=torch.bool), "all": torch.ones(ns.n, dtype=torch.bool),
           "sparse": torch.rand(ns.n, generator=g) < 0.03, "dense": torch.rand(ns.n, generator=g) < 0.5}
    for kind in ("attn_in", "q", "v", "attn_out", "mlp_in", "neuron", "mlp_out"):
        keep = torch.zeros(ns.n, dtype=torch.bool)
        s = ns.site(hook_name(0, kind))
        keep[s.start] = True
        out[f"only {kind}"] = keep
    no_attn = torch.rand(ns.n, generator=g) < 0.5
    for layer in range(ns.n_layer):
        s = ns.site(hook_name(layer, "attn_out"))
        no_attn[s.start:s.stop] = False
    out["no attention output"] = no_attn
    no_qkv = torch.ones(ns.n, dtype=torch.bool)
    for kind in ("q", "k", "v", "neuron"):
        s = ns.site(hook_name(1, kind))
        no_qkv[s.start:s.stop] = False
    out["no q, k, v or neurons in block 1"] = no_qkv
    return out


@pytest.mark.parametrize("ablation", ["mean", "zero", "resample"])
def test_skipping_ablated_work_gives_the_same_logits_bit_for_bit(ablation):
    model = random_model()
    ns = NodeSet.from_model(model)
    baseline = {"mean": torch.randn(ns.n, generator=torch.Generator().manual_seed(3)), "zero": None,
                "resample": Resample()}[ablation]
    masked = MaskedModel(model, baseline, ns)
    x = _tokens(model)
    last = torch.tensor([9, 3, 0, 5, 7, 9])
    for name, keep in _keeps(ns).items():
        assert bool(skippable(model, ns, keep)) == (name not in ("all", "dense")), name
        for lp in (None, last):
            got = masked(x, keep, last_pos=lp)
            sources = None
            if ablation == "resample":
                from sparsecircuits.circuits.masking import resample_sources

                sources = resample_sources(model, ns, x, lp)
            # the masked model runs the last block at last_pos only, except under resample ablation
            plain = model.run_with_hooks(x, fwd_hooks=masked.hooks(keep, sources), last_pos=lp,
                                         last_only=sources is None)
            assert torch.equal(got, plain), name
    # the model is left as it was
    assert model(x).equal(masked(x, None))
    assert all(type(b.attn).__name__ == "Attention" for b in model.blocks)


def test_dead_sites_and_no_skipping_with_hooks_attached():
    model = random_model()
    ns = NodeSet.from_model(model)
    keep = _keeps(ns)["only neuron"]
    assert hook_name(0, "neuron") not in dead_sites(ns, keep)
    assert len(dead_sites(ns, keep)) == len(ns.sites) - 1
    assert skippable(model, ns, keep)
    # a cache of an activation must see the real one: with other hooks attached, nothing is skipped
    with model.hooks([("blocks.0.hook_attn_in", lambda x, hook: None)]):
        assert skippable(model, ns, keep) == []


def test_a_batch_of_masks_gives_each_masks_logits_and_gradients():
    model = random_model()
    for p in model.parameters():
        p.requires_grad_(False)
    ns = NodeSet.from_model(model)
    masked = MaskedModel(model, torch.randn(ns.n, generator=torch.Generator().manual_seed(3)), ns)
    x, last = _tokens(model), torch.tensor([9, 3, 0, 5, 7, 9])
    tau = torch.randn(3, ns.n, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    m = heaviside_ste(tau)  # (3, n)
    together = masked(x, m, last_pos=last)  # (3, B, V)
    together.pow(2).sum().backward()
    grad_together = tau.grad.clone()
    tau.grad = None
    for r in range(3):
        alone = masked(x, heaviside_ste(tau[r]), last_pos=last)  # (B, V)
        alone.pow(2).sum().backward()
        assert torch.allclose(together[r], alone, atol=1e-5, rtol=0)
    assert torch.allclose(grad_together, tau.grad, atol=1e-5, rtol=1e-5)
    # boolean masks too, with the sites no mask keeps skipped
    keeps = torch.stack([_keeps(ns)["sparse"], _keeps(ns)["only q"]])
    both = masked(x, keeps)
    for r in range(2):
        assert torch.allclose(both[r], masked(x, keeps[r]), atol=1e-5, rtol=0)


def test_the_k_coef_sweep_optimised_together_equals_separate_runs(toy_run):
    # nodes start near 0 and move fast, so the runs share their masks for a step or two, then part
    s = PruneSettings(steps=8, batch_pairs=8, length_buckets=2, tie_qk=True, grad_clip=0.05, lr=0.05,
                      tau_init_mean=0.06, curve_every=1)
    data = _resolve_task(toy_run, toy_examples(32), None, s, 0)
    masked = MaskedModel(toy_run.model, torch.full((NodeSet.from_model(toy_run.model).n,), 0.3))
    k_coefs = [1e-3, 3e-2, 1e-1]
    with _frozen(toy_run.model):
        together = optimise_taus(masked, data, k_coefs, s, seed=0)
        apart = [optimise_tau(masked, data, k, s, seed=0) for k in k_coefs]
    for (tau_t, curve_t), (tau_a, curve_a) in zip(together, apart):
        assert torch.allclose(tau_t, tau_a, atol=1e-6, rtol=0)
        assert [c["n_open"] for c in curve_t] == [c["n_open"] for c in curve_a]
        assert [c["loss"] for c in curve_t] == pytest.approx([c["loss"] for c in curve_a], abs=1e-6)
    opened = [[c["n_open"] for c in curve] for _, curve in together]
    assert opened[0][0] == opened[2][0] and opened[0] != opened[2]  # shared masks first, then apart


@pytest.mark.skipif(native.library() is None, reason="the C kernels cannot be built here")
def test_abstopk_by_the_kernel_gives_the_same_logits_and_mask_gradients():
    model = random_model(afrac=0.25, d_model=32, d_mlp=64)
    ns = NodeSet.from_model(model)
    masked = MaskedModel(model, torch.randn(ns.n, generator=torch.Generator().manual_seed(3)), ns)
    x = _tokens(model)

    def run():
        tau = torch.randn(ns.n, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
        with _frozen(model):
            out = masked(x, heaviside_ste(tau))
            out.pow(2).sum().backward()
        return out.detach(), tau.grad

    plain, grad_plain = run()
    from sparsecircuits.model.sparse_linear import frozen_plan

    with kernel_sites(model):
        assert frozen_plan(model) is not None
        with kernel_sites(model):  # nested: left to the outer block
            pass
        assert frozen_plan(model) is not None
        fast, grad_fast = run()
    assert frozen_plan(model) is None and all(p.requires_grad for p in model.parameters())
    assert torch.equal(plain, fast) and torch.equal(grad_plain, grad_fast)
