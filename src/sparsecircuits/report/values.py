"""Untrusted values from a run's JSON files, made safe for the report's pages and script.

Shared by the page writers (``format.py``, ``pages.py``, ``charts.py``) and the circuit
graph (``graph.py``): numbers that may be strings, NaN or booleans; tokens with invisible
whitespace; JSON that must not be able to end the ``<script>`` block it sits in.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..io import to_jsonable


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` only ever occur inside JSON strings, where ``\\u003c`` etc.
    mean the same thing, so ``</script>`` or ``<!--`` in a token cannot end the block.
    ``ensure_ascii`` also escapes U+2028/2029 and lone surrogates.
    """
    text = json.dumps(to_jsonable(obj), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def visible_token(tok: str, limit: int | None = None) -> str:
    """A token with its whitespace made visible, optionally shortened with an ellipsis."""
    out = tok.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5").replace("\r", "\u240d")
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 1)] + "\u2026"
    return out or "\u2205"


def _num(x: Any) -> float | None:
    """A finite float, or None for anything else (strings, booleans, NaN, infinities)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    v = _num(x)
    return int(v) if v is not None else None
