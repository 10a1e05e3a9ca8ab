"""sufficiency_shifted: the circuit on shifted variants of the test items (longer prompts,
other names, other nesting, a prefix of other code; ``analysis/variants.py``).

Per variant the excess is the circuit's loss minus max(target, the full model's loss on
that variant), so a variant the model itself finds hard is not held against the circuit;
the value is the worst excess.  ``run_checks(variants=...)`` replaces the variants.
"""
from __future__ import annotations

import math

from ....tasks.base import PROMPTS_PER_PAIR, TaskItem
from ..context import VARIANT_PAIRS, CheckContext, encode_items, result
from ..registry import register

SHIFT_MAX_EXCESS = PROMPTS_PER_PAIR * 0.1  # 0.2 nats per pair


def _variants(ctx: CheckContext) -> dict[str, list[TaskItem]]:
    if ctx.options.get("variants") is not None:
        return dict(ctx.options["variants"])
    from ...variants import variant_items

    return variant_items(ctx.task_name, ctx.test_items, VARIANT_PAIRS, seed=ctx.seed)


@register("sufficiency_shifted", order=30)
def check_sufficiency_shifted(ctx: CheckContext) -> dict | None:
    rows, worst, worst_name = [], -math.inf, ""
    for name, items in _variants(ctx).items():
        batch, dropped = encode_items(ctx.run, items, ctx.task_name)
        if batch is None:
            rows.append({"variant": name, "skipped": f"no prompt fits ({dropped} dropped)"})
            continue
        c, m = ctx.circuit_eval(batch), ctx.model_eval(batch)
        excess = c["loss"] - max(ctx.target, m["loss"])
        rows.append({"variant": name, "circuit_loss": c["loss"], "circuit_accuracy": c["accuracy"],
                     "model_loss": m["loss"], "model_accuracy": m["accuracy"], "excess": excess,
                     "n": c["n"], "dropped_pairs": dropped})
        if excess > worst:
            worst, worst_name = excess, name
    scored = [r for r in rows if "excess" in r]
    if not scored:
        return None
    parts = ", ".join(f"{r['variant']} {r['circuit_loss']:.2f}/{r['model_loss']:.2f}" for r in scored)
    return result(worst, SHIFT_MAX_EXCESS, worst <= SHIFT_MAX_EXCESS,
                  f"worst: {worst_name} ({worst:+.3f} nats over the allowance); "
                  f"circuit/model loss per variant: {parts}", rows)
