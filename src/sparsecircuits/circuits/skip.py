"""Skipping the work a hard mask throws away.

Under a boolean keep vector, a site none of whose nodes is kept leaves its hook with the
ablation values alone (the node means, zeros, or the partner's activations), whatever the
model computed there.  So everything that only feeds such a site can be left out of the
forward pass: the AbsTopK in front of it, and when a whole sublayer's output is ablated,
the sublayer itself.  Small circuits ablate most sites, which makes their evaluations (the
bisection's smaller sizes, the loss-vs-size curves, random circuits of the same
composition in the checks, the node details) several times cheaper, with the very same
logits: the hooks still write the ablation values, only the discarded inputs change.

Per block, where ``dead(kind)`` means no node of that site is kept:

* ``attn_out`` dead: ``ln_1``, the AbsTopK at ``attn_in`` and the whole attention are
  skipped; the hook writes the ablation values.  Likewise ``mlp_out`` and the MLP.
* otherwise, ``attn_in`` (``mlp_in``) dead: its norm and AbsTopK are skipped;
  ``q``, ``k``, ``v`` (``neuron``) dead: their AbsTopK is skipped, and with all three
  dead ``c_attn`` too (``c_fc`` for the neurons).

This is done by swapping those modules for stand-ins for the length of one forward pass
(``skipping``), which only ``MaskedModel`` does, and only when no one else has hooks
attached (a cache of an activation the stand-ins would change must see the real one).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..sites import hook_name
from .nodes import NodeSet

Swap = tuple[nn.Module, str, nn.Module]  # (parent, attribute, stand-in)


class _Zeros(nn.Module):
    """Stand-in for a linear layer whose output is never read: zeros (..., width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.width)


_IDENTITY = nn.Identity()


def dead_sites(nodes: NodeSet, keep: torch.Tensor) -> set[str]:
    """Hook names of the sites where ``keep`` (n,) bool keeps no node."""
    live = [bool(keep[s.start:s.stop].any()) for s in nodes.sites]
    return {s.hook for s, on in zip(nodes.sites, live) if not on}


def skippable(model: nn.Module, nodes: NodeSet, keep: torch.Tensor) -> list[Swap]:
    """The module swaps that leave out what ``keep`` (n,) bool discards (see the module
    docstring); [] for a model that is not a ``GPT`` or that has hooks attached."""
    from ..model.gpt import GPT

    if not isinstance(model, GPT) or any(hp._fns for hp in model.hook_points().values()):
        return []
    dead = dead_sites(nodes, keep)
    swaps: list[Swap] = []
    for layer, block in enumerate(model.blocks):
        def d(kind: str) -> bool:
            return hook_name(layer, kind) in dead

        attn, mlp = block.attn, block.mlp
        if d("attn_out"):
            swaps += [(block, "ln_1", _IDENTITY), (block, "sparse_attn_in", _IDENTITY), (block, "attn", _IDENTITY),
                      (block, "sparse_attn_out", _IDENTITY)]
        else:
            if d("attn_in"):
                swaps += [(block, "ln_1", _IDENTITY), (block, "sparse_attn_in", _IDENTITY)]
            if d("q") and d("k") and d("v"):
                swaps.append((attn, "c_attn", _Zeros(attn.c_attn.out_features)))
            swaps += [(attn, f"sparse_{kind}", _IDENTITY) for kind in ("q", "k", "v") if d(kind)]
        if d("mlp_out"):
            swaps += [(block, "ln_2", _IDENTITY), (block, "sparse_mlp_in", _IDENTITY), (block, "mlp", _IDENTITY),
                      (block, "sparse_mlp_out", _IDENTITY)]
        else:
            if d("mlp_in"):
                swaps += [(block, "ln_2", _IDENTITY), (block, "sparse_mlp_in", _IDENTITY)]
            if d("neuron"):
                swaps += [(mlp, "c_fc", _Zeros(mlp.c_fc.out_features)), (mlp, "sparse_neuron", _IDENTITY)]
    return swaps


@contextmanager
def skipping(swaps: list[Swap]) -> Iterator[None]:
    """Put the stand-ins in place for the body of the ``with``; the originals come back
    afterwards, also on an exception."""
    originals = [(parent, attr, getattr(parent, attr)) for parent, attr, _ in swaps]
    try:
        for parent, attr, stand_in in swaps:
            setattr(parent, attr, stand_in)
        yield
    finally:
        for parent, attr, original in reversed(originals):
            setattr(parent, attr, original)
