"""attention: the circuit's heads should attend where the model's do.

For every head with a kept q/k/v node, the total-variation distance between the
circuit's and the full model's attention at each test prompt's last position (the
sink's share counted), averaged over prompts; a head is flagged above 0.25, or when it
is kept with value nodes only (its pattern is then frozen by the ablation).  The value
is the flagged fraction, which must be 0.
"""
from __future__ import annotations

from typing import Callable

import torch

from ....circuits.nodes import NodeSet
from ..context import CheckContext, result
from ..registry import register

ATTN_MAX_TV = 0.25
ATTN_MAX_FLAGGED = 0.0


def circuit_heads(nodes: NodeSet, keep: torch.Tensor) -> dict[tuple[int, int], set[str]]:
    """``{(layer, head): {"q", "k", "v"} kinds kept}`` for heads with any kept q/k/v node."""
    out: dict[tuple[int, int], set[str]] = {}
    for s in nodes.sites:
        if s.kind not in ("q", "k", "v"):
            continue
        for i in keep[s.start:s.stop].nonzero().flatten().tolist():
            out.setdefault((s.layer, s.head(i)), set()).add(s.kind)
    return out


def _last_query(width: int) -> Callable:
    """Reducer: each prompt's last query row of an attention pattern (B, H, T, T) -> (B, H, width),
    zero-padded to the whole batch's width (chunks are trimmed to their own longest prompt)."""

    def reduce(act: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(act.shape[0], device=act.device)
        row = act[rows, :, last_pos]  # (B, H, T)
        return torch.nn.functional.pad(row, (0, width - row.shape[-1]))

    return reduce


@register("attention", order=70)
def check_attention(ctx: CheckContext) -> dict:
    heads = circuit_heads(ctx.nodes, ctx.keep)
    if not heads:
        return result(0.0, ATTN_MAX_FLAGGED, True, "the circuit keeps no attention q/k/v node", {})
    batch = ctx.test
    layers = sorted({layer for layer, _ in heads})
    reducers = {f"blocks.{layer}.attn.hook_pattern": _last_query(batch.tokens.shape[1]) for layer in layers}
    full = ctx.collect(batch, reducers, None)
    circ = ctx.collect(batch, reducers, ctx.keep)
    per_head, flagged = {}, []
    for layer in layers:
        name = f"blocks.{layer}.attn.hook_pattern"
        p, q = full[name], circ[name]  # (N, H, T)
        sink_gap = ((1 - p.sum(-1)) - (1 - q.sum(-1))).abs()  # (N, H): the sink's share
        tv = (0.5 * ((p - q).abs().sum(-1) + sink_gap)).mean(0)  # (H,)
        for (lay, h), kinds in sorted(heads.items()):
            if lay != layer:
                continue
            values_only = kinds == {"v"}
            d = float(tv[h])
            bad = values_only or d > ATTN_MAX_TV
            hid = f"blocks.{layer}.attn.head{h}"
            per_head[hid] = {"tv": round(d, 4), "kinds": sorted(kinds), "values_only": values_only, "flag": bad}
            if bad:
                flagged.append(hid)
    frac = len(flagged) / len(per_head)
    shown = [h for h in per_head if per_head[h]["flag"]] or list(per_head)
    parts = ", ".join(f"{h} tv={per_head[h]['tv']:.2f}{' v-only' if per_head[h]['values_only'] else ''}"
                      for h in shown[:8]) + (", ..." if len(shown) > 8 else "")
    return result(frac, ATTN_MAX_FLAGGED, frac <= ATTN_MAX_FLAGGED,
                  f"{len(flagged)}/{len(per_head)} heads flagged: {parts}", per_head)
