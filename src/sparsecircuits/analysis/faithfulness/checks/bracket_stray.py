"""bracket_stray (bracket_counting only): an unclosed ``[`` in a comment before the list
makes the model fail, a failure the paper predicts from its circuit; a faithful circuit
fails the same way.  The value is |circuit accuracy - model accuracy| on such prompts."""
from __future__ import annotations

from ..context import VARIANT_PAIRS, CheckContext, result
from ..registry import register

PROBE_MAX_GAP = 0.15


@register("bracket_stray", order=80, tasks=("bracket_counting",))
def check_bracket_stray(ctx: CheckContext) -> dict | None:
    from ...variants import bracket_stray_items

    r = ctx.probe(bracket_stray_items(VARIANT_PAIRS, ctx.seed))
    if r is None:
        return None
    base = ctx.circuit_eval(ctx.test)["accuracy"], ctx.model_eval(ctx.test)["accuracy"]
    gap = abs(r["circuit_accuracy"] - r["model_accuracy"])
    return result(gap, PROBE_MAX_GAP, gap <= PROBE_MAX_GAP,
                  f"stray '[' in a comment: model acc {r['model_accuracy']:.0%}, circuit {r['circuit_accuracy']:.0%} "
                  f"(without it: model {base[1]:.0%}, circuit {base[0]:.0%})",
                  {**r, "test_circuit_accuracy": base[0], "test_model_accuracy": base[1]})
