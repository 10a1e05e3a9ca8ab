"""The steering edit: nothing at strength 0, the counterfactual patch at strength 1 with an exact bridge."""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.bridges.steer import (
    dense_direction,
    mean_residual_rms,
    parse_read_node,
    patched_sparse_logits,
    steered_logits,
)
from sparsecircuits.errors import UserError

from bridge_fixtures import as_bridged, tokens, twin_pair


def _setup(node: str):
    dense, sparse, bridges = twin_pair()
    br = as_bridged(dense, sparse, bridges)
    read, loc, ch = parse_read_node(node, 2, 16)
    presented, counter = tokens(seed=1), tokens(seed=2)
    ref = tokens(seed=3, batch=4)
    direction = dense_direction(br, read, loc, ch, mean_residual_rms(sparse, loc, ref),
                                mean_residual_rms(dense, loc, ref))
    return br, read, ch, presented, counter, direction


@pytest.mark.parametrize("node", ["blocks.1.hook_attn_in:3", "blocks.0.hook_mlp_in:11"])
def test_strength_zero_leaves_the_dense_logits_unchanged(node):
    br, read, ch, presented, counter, direction = _setup(node)
    assert torch.equal(steered_logits(br, presented, counter, read, ch, direction, 0.0), br.dense.model(presented))


@pytest.mark.parametrize("node", ["blocks.1.hook_attn_in:3", "blocks.0.hook_mlp_in:11"])
def test_strength_one_with_an_exact_bridge_patches_the_counterfactual_activation(node):
    br, read, ch, presented, counter, direction = _setup(node)
    one_hot = torch.zeros(16)
    one_hot[ch] = 1.0
    assert torch.allclose(direction, one_hot, atol=1e-6, rtol=0)  # identity bridge, same scale
    _, cc = br.dense.model.run_with_cache(counter, names_filter=read)

    def patch(x, hook):
        x = x.clone()
        x[..., ch] = cc[read][..., ch]
        return x

    patched = br.dense.model.run_with_hooks(presented, [(read, patch)])
    steered = steered_logits(br, presented, counter, read, ch, direction, 1.0)
    assert not torch.allclose(patched, br.dense.model(presented), atol=1e-4)  # the patch does something
    assert torch.allclose(steered, patched, atol=1e-5, rtol=1e-5)
    half = steered_logits(br, presented, counter, read, ch, direction, 0.5)
    assert not torch.allclose(half, patched, atol=1e-4)
    # the twin is a copy of the dense model here: its own patch is the same patch
    assert torch.allclose(patched_sparse_logits(br, presented, counter, read, ch), patched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("node", ["blocks.0.hook_resid_pre:1", "blocks.0.attn.hook_q:1", "blocks.0.hook_attn_in",
                                  "blocks.2.hook_attn_in:1", "blocks.0.hook_mlp_in:16", "garbage"])
def test_only_residual_reads_of_this_model_are_nodes(node):
    with pytest.raises(UserError):
        parse_read_node(node, n_layer=2, d_model=16)
