"""Tied query/key masks (``prune --tie-qk``): ``q_j`` and ``k_j`` of one head are one node pair.

Why: an attention score sums ``q_j * k_j`` over the channels ``j`` of a head, so a query
channel without its key channel (or the reverse) leaves a product with one factor at its
ablation value.  The paper says in retrospect that q and k channels should have shared
masks; with ``tie_qk`` they do.  Everything here works on a *tie index*: a long vector
(n,) giving each node the flat index of its unit's representative, the q node for a key
channel and the node itself for every other node.  Then

* pruning reads its masks as ``tau[tie]`` (one parameter for the pair, its gradient the
  sum of both nodes' gradients),
* a node ranking keeps each pair together (``adjacent``), and a kept set always holds
  both or neither (``close``),
* attribution scores of a pair are summed (``unit_sum``): the first-order effect of
  ablating the shared mask.

The penalty still counts both nodes, as the circuit's node count does.
"""
from __future__ import annotations

import torch

from .nodes import NodeSet


def qk_tie(nodes: NodeSet) -> torch.Tensor:
    """The tie index (n,) long: every ``k`` node points at the ``q`` node of the same layer,
    head and channel (the sites have equal widths and the same ``head * d_head + c`` order)."""
    tie = torch.arange(nodes.n)
    by_layer = {}
    for s in nodes.sites:
        by_layer.setdefault(s.layer, {})[s.kind] = s
    for sites in by_layer.values():
        q, k = sites["q"], sites["k"]
        tie[k.start:k.stop] = torch.arange(q.start, q.stop)
    return tie


def close(keep: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """``keep`` (n,) bool with every unit kept whole: a pair with one member kept gets both."""
    units = torch.zeros_like(keep)
    units[tie[keep]] = True  # (n,) the representatives of kept units
    return units[tie]


def unit_sum(values: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """Per-node values (n,) summed over each unit and given to all its members (n,)."""
    totals = torch.zeros_like(values).index_add_(0, tie, values)
    return totals[tie]


def adjacent(order: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """A ranking (n,) of node indices rearranged so that each unit's members follow one
    another, at the place of the unit's best-ranked member; otherwise the order is kept.

    Then the top ``K`` nodes split at most one pair, and closing them (``close``) is the
    top ``K + 1``: every kept set of a ranking is a prefix of it.
    """
    n = order.numel()
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)  # (n,) position of each node
    unit_rank = torch.full((n,), n, dtype=torch.long).scatter_reduce_(0, tie, rank, reduce="amin")  # (n,)
    key = unit_rank[tie] * n + rank  # (n,) unit first, then the member's own place
    return torch.argsort(key)
