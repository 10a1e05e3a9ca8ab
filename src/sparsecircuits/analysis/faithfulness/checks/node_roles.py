"""node_roles: a kept node should mean in the circuit what it means in the full model.

For every kept node, its activation at every position of the test prompts in the circuit
and in the full model; a node is flagged when the two correlate below 0.5 (Pearson) or
point opposite ways (cosine < 0).  The value is the flagged fraction.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..context import CheckContext, result
from ..registry import register

ROLE_MIN_CORR = 0.5
ROLE_MAX_FLAGGED = 0.1


def _kept_at_positions(idx: torch.Tensor) -> Callable:
    """Reducer: the kept channels ``idx`` at every real (non-padding) position -> (n_pos, k)."""

    def reduce(act: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
        B, T = act.shape[:2]
        valid = torch.arange(T, device=act.device)[None, :] <= last_pos[:, None]  # (B, T)
        return act.reshape(B, T, -1)[valid][:, idx.to(act.device)]  # q/k/v (B, T, H, Dh) flattened to H*Dh

    return reduce


def role_correlations(full: torch.Tensor, circ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: Pearson correlation and cosine of circuit vs full activations (N, k) -> (k,), (k,).

    A node that is constant in the full model has no correlation to speak of: it counts
    as 1 when the circuit holds it at (about) the same value, else 0.
    """
    full, circ = full.double(), circ.double()
    fc, cc = full - full.mean(0), circ - circ.mean(0)
    sf, sc = fc.norm(dim=0), cc.norm(dim=0)
    scale = full.abs().amax(0).clamp_min(1e-12)
    const_f = sf <= 1e-6 * scale * math.sqrt(max(full.shape[0], 1))
    const_c = sc <= 1e-6 * circ.abs().amax(0).clamp_min(1e-12) * math.sqrt(max(circ.shape[0], 1))
    corr = (fc * cc).sum(0) / (sf * sc).clamp_min(1e-30)
    corr = torch.where(const_c & ~const_f, torch.zeros_like(corr), corr)
    same = (full.mean(0) - circ.mean(0)).abs() <= 0.1 * full.mean(0).abs() + 1e-6
    corr = torch.where(const_f, torch.where(const_c & same, 1.0, 0.0).to(corr), corr)
    nf, nc = full.norm(dim=0), circ.norm(dim=0)
    cos = (full * circ).sum(0) / (nf * nc).clamp_min(1e-30)
    cos = torch.where((nf == 0) & (nc == 0), torch.ones_like(cos), cos)
    return corr.float().clamp(-1, 1), cos.float().clamp(-1, 1)


@register("node_roles", order=60)
def check_node_roles(ctx: CheckContext) -> dict:
    batch = ctx.test
    sites = [s for s in ctx.nodes.sites if bool(ctx.keep[s.start:s.stop].any())]
    if not sites:
        return result(0.0, ROLE_MAX_FLAGGED, True, "the circuit has no nodes", {})
    idxs = {s.hook: ctx.keep[s.start:s.stop].nonzero().flatten() for s in sites}
    reducers = {h: _kept_at_positions(i) for h, i in idxs.items()}
    full = ctx.collect(batch, reducers, None)
    circ = ctx.collect(batch, reducers, ctx.keep)
    per_node: dict[str, dict] = {}
    flagged = []
    for s in sites:
        idx = idxs[s.hook]
        corr, cos = role_correlations(full[s.hook], circ[s.hook])
        for j, i in enumerate(idx.tolist()):
            nid = f"{s.hook}:{i}"
            c, k = float(corr[j]), float(cos[j])
            bad = c < ROLE_MIN_CORR or k < 0
            per_node[nid] = {"corr": round(c, 4), "cosine": round(k, 4), "flag": bad}
            if bad:
                flagged.append((nid, c, k))
    frac = len(flagged) / max(len(per_node), 1)
    worst = ", ".join(f"{n} (r={c:.2f}{', flipped' if k < 0 else ''})"
                      for n, c, k in sorted(flagged, key=lambda x: x[1])[:5])
    detail = (f"{len(flagged)}/{len(per_node)} nodes change role in the circuit"
              + (f": {worst}" if flagged else f"; min correlation {min(v['corr'] for v in per_node.values()):.3f}"))
    return result(frac, ROLE_MAX_FLAGGED, frac <= ROLE_MAX_FLAGGED, detail, per_node)
