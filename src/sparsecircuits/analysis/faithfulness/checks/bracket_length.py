"""bracket_length (bracket_counting only): the largest gap between circuit and model
accuracy over list lengths 2..32 (the table in ``data``); a faithful circuit tracks where
the model starts to miscount."""
from __future__ import annotations

from ..context import VARIANT_PAIRS, CheckContext, result
from ..registry import register
from .bracket_stray import PROBE_MAX_GAP

BRACKET_LENGTHS = (2, 4, 6, 8, 12, 16, 24, 32)


@register("bracket_length", order=90, tasks=("bracket_counting",))
def check_bracket_length(ctx: CheckContext) -> dict | None:
    from ...variants import bracket_length_items

    rows = []
    for length in BRACKET_LENGTHS:
        r = ctx.probe(bracket_length_items(length, VARIANT_PAIRS // 2, ctx.seed))
        if r is not None and r["n"]:
            rows.append({"length": length, **r})
    if not rows:
        return None
    gaps = [abs(r["circuit_accuracy"] - r["model_accuracy"]) for r in rows]
    table = " ".join(f"{r['length']}:{r['model_accuracy']:.0%}/{r['circuit_accuracy']:.0%}" for r in rows)
    return result(max(gaps), PROBE_MAX_GAP, max(gaps) <= PROBE_MAX_GAP,
                  f"accuracy by list length, model/circuit: {table}", rows)
