"""Hybrid forwards and the loss terms, on hand-built tiny models."""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.bridges.model import BridgeSpec, Bridges, bridge_terms, kl_from, location_names, nmse

from bridge_fixtures import tiny_gpt, tokens, twin_pair


def test_locations_are_every_sublayer_input_in_order():
    assert location_names(2) == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid",
                                 "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"]


def test_identity_bridges_every_hybrid_path_reproduces_the_logits_exactly():
    dense, sparse, bridges = twin_pair()
    x = tokens()
    want = dense(x)
    for i, name in enumerate(bridges.locations):
        br = bridges.bridges[i]
        _, cache = dense.run_with_cache(x, names_filter=name)
        enc = br.encode(cache[name])
        dec = br.decode(cache[name])
        assert torch.equal(enc, cache[name]) and torch.equal(dec, cache[name])
        assert torch.equal(sparse.run_with_hooks(x, [(name, lambda a, h: enc)]), want), name
        assert torch.equal(dense.run_with_hooks(x, [(name, lambda a, h: dec)]), want), name


def test_terms_are_zero_for_exact_bridges():
    dense, sparse, bridges = twin_pair()
    terms = bridge_terms(dense, sparse, bridges, tokens())
    assert len(terms.nmse_encoder) == len(terms.kl_sparse_to_dense) == 4
    for v in terms.nmse_encoder + terms.nmse_decoder + terms.kl_dense_to_sparse + terms.kl_sparse_to_dense:
        assert v.item() == 0.0
    assert terms.bridge_loss(bridges.spec).item() == 0.0


def test_terms_are_positive_for_another_model_or_a_perturbed_bridge():
    dense, sparse, bridges = twin_pair()
    with torch.no_grad():
        bridges.bridges[2].decoder.weight.mul_(0.5)  # only location 2's decoder is off
    terms = bridge_terms(dense, sparse, bridges, tokens())
    assert terms.nmse_decoder[2].item() > 0 and terms.kl_sparse_to_dense[2].item() > 0
    assert [t.item() for t in terms.nmse_encoder] == [0.0] * 4
    assert [t.item() for t in terms.kl_dense_to_sparse] == [0.0] * 4
    assert [terms.nmse_decoder[i].item() for i in (0, 1, 3)] == [0.0] * 3

    other = tiny_gpt(seed=5)
    terms = bridge_terms(dense, other, Bridges.identity(2, 16), tokens())
    for v in terms.nmse_encoder + terms.nmse_decoder + terms.kl_dense_to_sparse + terms.kl_sparse_to_dense:
        assert v.item() > 0


def test_nmse_and_kl_by_hand():
    t = torch.tensor([[3.0, 4.0]])
    assert nmse(torch.zeros_like(t), t).item() == 1.0
    assert abs(nmse(t * 1.5, t).item() - 0.25) < 1e-7
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p = torch.softmax(b, -1)
    want = (0.5 * torch.log(0.5 / p)).sum()
    assert abs(kl_from(a, b).item() - want.item()) < 1e-6
    assert kl_from(b, b).item() == 0.0


def test_nmse_denominator_is_a_constant_for_the_gradient():
    """Whatever the target, predicting zero scores 1; only the numerator may move the target,
    or the sparse model could lower its encoder term by growing its own residual stream."""
    t = torch.tensor([[3.0, 4.0]], requires_grad=True)
    nmse(torch.zeros(1, 2), t).backward()
    assert torch.allclose(t.grad, 2 * t.detach() / 25)


def test_encoder_abstopk_keeps_k_entries():
    b = Bridges(BridgeSpec(n_layer=1, d_dense=8, d_sparse=12, encoder_k=3))
    out = b.bridges[0].encode(torch.randn(5, 8))
    assert ((out != 0).sum(-1) == 3).all()


def test_gradients_reach_bridges_and_sparse_weights_not_the_dense_model():
    dense = tiny_gpt(seed=0)
    for p in dense.parameters():
        p.requires_grad_(False)
    sparse = tiny_gpt(seed=1, d_model=24)
    bridges = Bridges(BridgeSpec(2, 16, 24, 6))
    terms = bridge_terms(dense, sparse, bridges, tokens())
    terms.bridge_loss(bridges.spec).backward()
    assert all(p.grad is None for p in dense.parameters())
    for name, p in bridges.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert sparse.blocks[1].attn.c_attn.weight.grad.abs().sum() > 0
    assert sparse.wte.weight.grad.abs().sum() > 0
    # the KL terms alone reach the decoders through the frozen dense model
    for p in list(bridges.parameters()) + list(sparse.parameters()):
        p.grad = None
    terms = bridge_terms(dense, sparse, bridges, tokens())
    sum(terms.kl_sparse_to_dense).backward()
    assert bridges.bridges[3].decoder.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in dense.parameters())


def test_bridges_alone_learn_to_translate_between_two_models():
    """Only the bridges train (both models frozen): every location's NMSE falls by more than half."""
    dense, sparse = tiny_gpt(seed=0), tiny_gpt(seed=1, d_model=24)
    for p in list(dense.parameters()) + list(sparse.parameters()):
        p.requires_grad_(False)
    torch.manual_seed(0)
    bridges = Bridges(BridgeSpec(2, 16, 24, 24))
    opt = torch.optim.Adam(bridges.parameters(), lr=1e-2)
    x = tokens(batch=8, length=16)
    first = None
    for _ in range(40):
        terms = bridge_terms(dense, sparse, bridges, x, hybrids=False)
        errs = torch.stack(terms.nmse_encoder + terms.nmse_decoder)  # (8,)
        first = errs.detach() if first is None else first
        opt.zero_grad()
        errs.sum().backward()
        opt.step()
    assert (errs.detach() < 0.5 * first).all(), (first, errs)


def test_drawn_hybrid_locations_estimate_the_full_kl_without_bias():
    """Sampling 1 of 4 locations: each draw runs that location's hybrids only and scales them
    by 4, so the mean over the four possible draws is the loss with every location."""
    from sparsecircuits.bridges.model import draw_locations

    dense, other = tiny_gpt(seed=0), tiny_gpt(seed=5)
    bridges = Bridges.identity(2, 16)
    x = tokens()
    full = bridge_terms(dense, other, bridges, x)
    assert full.kl_locations == [0, 1, 2, 3] and full.kl_scale == 1.0
    by_draw = []
    for i in range(4):
        gen = torch.Generator().manual_seed(next(s for s in range(100) if draw_locations(
            4, 1, torch.Generator().manual_seed(s)) == [i]))
        terms = bridge_terms(dense, other, bridges, x, sample=1, generator=gen)
        assert terms.kl_locations == [i] and terms.kl_scale == 4.0 and len(terms.kl_dense_to_sparse) == 1
        assert torch.allclose(terms.kl_sparse_to_dense[0], full.kl_sparse_to_dense[i])
        assert len(terms.nmse_encoder) == 4  # the NMSE terms are cheap: always every location
        by_draw.append(terms.bridge_loss(bridges.spec))
        assert terms.summary()["kl_dense_to_sparse"] == pytest.approx(4 * full.kl_dense_to_sparse[i].item())
    assert torch.stack(by_draw).mean().item() == pytest.approx(full.bridge_loss(bridges.spec).item(), rel=1e-5)


def test_draw_locations_takes_all_or_a_sorted_subset():
    from sparsecircuits.bridges.model import draw_locations
    from sparsecircuits.errors import UserError

    assert draw_locations(8, 0) == list(range(8)) == draw_locations(8, 9)
    seen = set()
    for s in range(20):
        got = draw_locations(8, 3, torch.Generator().manual_seed(s))
        assert len(set(got)) == 3 and got == sorted(got) and all(0 <= i < 8 for i in got)
        seen.add(tuple(got))
    assert len(seen) > 5  # the generator, not a fixed choice, picks them
    with pytest.raises(UserError):
        draw_locations(8, -1)
