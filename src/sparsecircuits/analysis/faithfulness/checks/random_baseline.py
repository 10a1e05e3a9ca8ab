"""random_baseline: the circuit must beat random circuits of the same composition.

Random node sets with as many nodes as the circuit at every site (``run_checks(n_random=
...)`` draws, 20 by default), each calibrated on train items the way the circuit was;
the threshold is their 5th-percentile test loss, and the circuit's must be below it.
"""
from __future__ import annotations

import math

import torch

from ....circuits.nodes import NodeSet
from ..context import CheckContext, result
from ..registry import register

RANDOM_DRAWS = 20
RANDOM_PERCENTILE = 5.0


def random_keeps(nodes: NodeSet, keep: torch.Tensor, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """``draws`` random keep vectors with as many nodes as ``keep`` at every site."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        r = torch.zeros(nodes.n, dtype=torch.bool)
        for s in nodes.sites:
            k = int(keep[s.start:s.stop].sum())
            if k:
                r[s.start + torch.randperm(s.width, generator=g)[:k]] = True
        out.append(r)
    return out


@register("random_baseline", order=40)
def check_random_baseline(ctx: CheckContext) -> dict:
    real = ctx.circuit_eval(ctx.test)["loss"]
    draws = ctx.options.get("n_random", RANDOM_DRAWS)
    losses = [ctx.fitted_loss(k)[0] for k in random_keeps(ctx.nodes, ctx.keep, draws, ctx.seed)]
    t = torch.tensor([x if math.isfinite(x) else 1e9 for x in losses], dtype=torch.float64)
    p = float(torch.quantile(t, RANDOM_PERCENTILE / 100))
    med = float(t.median())
    return result(real, p, real < p,
                  f"circuit {real:.3f} vs {len(losses)} random circuits of the same composition: "
                  f"5th percentile {p:.3f}, median {med:.3f}, best {float(t.min()):.3f}",
                  {"random_losses": losses, "median": med})
