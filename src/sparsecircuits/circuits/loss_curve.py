"""Faithfulness against size: a circuit's loss as its nodes are added in rank order.

A pruned circuit of ``k`` nodes is the top ``k`` of a ranking: the learned masks
(``tau``) or the attribution scores.  Its loss-vs-size curve is the loss of the top ``K``
of that ranking for ``K`` from 0 to ``k``, the curve OpenAI's viewer draws for its released
circuits; it shows whether a few nodes carry the task and the rest polish it, or nothing
works until the last node is in.  The curve of the other ranking over the same sizes is
the comparison: for a learned circuit, how well the attribution order (one gradient, no
optimisation) does with as many nodes.

Every point is measured as the circuit's own ``circuit_loss`` is: the calibration fitted
on the train items for that node set, the loss on the held-out items.  So the curve of the
circuit's own ranking ends exactly at its ``circuit_loss``.  Sizes are every ``K`` when the
circuit is small and ``curve_points`` sizes evenly spaced in ``log(1 + K)`` otherwise, so
the first nodes, where the loss moves most, are all seen.

Stored as ``metrics["loss_vs_size"] = {"learned": [...], "attribution": [...]}``, each a
list of ``{"n_nodes", "n_edges", "loss", "accuracy", "train_loss"}`` by increasing size
(only the attribution curve for an attribution circuit).
"""
from __future__ import annotations

import numpy as np

from ..config import PruneSettings
from ..tasks.base import score_diffs
from .attribution import attribution_order, attribution_scores
from .graph import count_edges
from .prune import _Context, _frozen, _heldout_diff, _Prober


def curve_sizes(k: int, points: int) -> list[int]:
    """At most ``points`` sizes from 0 to ``k`` inclusive: all of them when they fit, else
    spaced evenly in ``log(1 + K)`` (0 and ``k`` always in)."""
    if points <= 0:
        return []
    if k + 1 <= points:
        return list(range(k + 1))
    sizes = np.unique(np.rint(np.geomspace(1, k + 1, points)).astype(np.int64) - 1)
    return [int(x) for x in sizes]


def order_curve(ctx: _Context, s: PruneSettings, prober: _Prober, sizes: list[int]) -> list[dict]:
    """The top-``K`` circuit of ``prober``'s ranking at each size: held-out loss and accuracy
    (calibrated on the train items), train loss and edge count."""
    rows, seen = [], set()
    for k in sizes:
        k = prober.size(k)  # a tied q/k pair is never split
        if k in seen:
            continue
        seen.add(k)
        heldout = score_diffs(_heldout_diff(ctx, prober, k, s))  # (N,) -> loss, accuracy
        rows.append({"n_nodes": k, "n_edges": count_edges(ctx.model, ctx.nodes, prober.keep(k)),
                     "loss": heldout["loss"], "accuracy": heldout["accuracy"], "train_loss": prober.loss(k)})
    return rows


def loss_vs_size(ctx: _Context, s: PruneSettings, best: dict) -> dict[str, list[dict]]:
    """The chosen candidate's curve in its own ranking and, for learned masks, the
    attribution ranking's curve over the same sizes; {} when ``s.curve_points`` is 0."""
    sizes = curve_sizes(best["k"], s.curve_points)
    if not sizes or best["k"] == 0:  # the empty circuit: one point, its own circuit_loss
        return {}
    own = "attribution" if best.get("tau") is None else "learned"
    curves = {own: order_curve(ctx, s, best["prober"], sizes)}
    if own == "learned":
        with _frozen(ctx.model):
            scores = attribution_scores(ctx.masked, ctx.probe, s.eval_batch)  # (n,)
        prober = _Prober(ctx.masked, attribution_order(ctx.nodes, scores, s.tie_qk), ctx.probe, s,
                         ctx.order_free)
        curves["attribution"] = order_curve(ctx, s, prober, sizes)
    return curves

