"""sufficiency: the circuit's calibrated loss on the held-out test items, within a margin
of the target it was pruned to."""
from __future__ import annotations

from ....tasks.base import PROMPTS_PER_PAIR
from ..context import CheckContext, result
from ..registry import register

SUFFICIENCY_MARGIN = PROMPTS_PER_PAIR * 0.05  # 0.1 nats per pair over the target


@register("sufficiency", order=20)
def check_sufficiency(ctx: CheckContext) -> dict:
    r = ctx.circuit_eval(ctx.test)
    full = ctx.model_eval(ctx.test)
    threshold = ctx.target + SUFFICIENCY_MARGIN
    return result(r["loss"], threshold, r["loss"] <= threshold,
                  f"circuit on {r['n']} held-out prompts: loss {r['loss']:.3f} (acc {r['accuracy']:.0%}); "
                  f"target {ctx.target:g}; full model {full['loss']:.3f}",
                  {"accuracy": r["accuracy"], "full_loss": full["loss"], "n": r["n"]})
