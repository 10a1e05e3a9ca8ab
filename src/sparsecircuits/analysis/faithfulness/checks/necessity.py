"""necessity: the full model with only the circuit's nodes ablated must be near chance.

The value is that model's loss on the test items after its own best scale and shift
(fitted on train items), so a leftover signal cannot hide behind a bad calibration.
"""
from __future__ import annotations

import math

from ....tasks.base import PROMPTS_PER_PAIR
from ..context import CheckContext, result
from ..registry import register

NECESSITY_MIN_LOSS = PROMPTS_PER_PAIR * 0.6  # 1.2 nats per pair: 87% of chance (2 ln 2)


@register("necessity", order=10)
def check_necessity(ctx: CheckContext) -> dict:
    keep = ~ctx.keep  # ablate only the circuit's nodes
    loss, acc, raw = ctx.fitted_loss(keep)
    full = ctx.model_eval(ctx.test)
    return result(loss, NECESSITY_MIN_LOSS, loss >= NECESSITY_MIN_LOSS,
                  f"circuit ablated: loss {loss:.3f} (acc {acc:.0%}) after refit, raw loss {raw['raw_loss']:.3f} "
                  f"(acc {raw['raw_accuracy']:.0%}); full model {full['loss']:.3f} (acc {full['accuracy']:.0%}); "
                  f"chance {PROMPTS_PER_PAIR * math.log(2):.3f}",
                  {"calibrated_accuracy": acc, **raw, "full_loss": full["loss"], "full_accuracy": full["accuracy"]})
