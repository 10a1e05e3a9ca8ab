"""Text and small HTML pieces of the report: escaping, numbers, tables, cards, config.

Every value shown comes from a run's files and is untrusted, so each helper that puts a
value into HTML escapes it here; callers pass already-escaped HTML only where a name says
so (``rows`` of ``_table``, the values of ``_cards``).
"""
from __future__ import annotations

import html
import json
from typing import Any, Iterable

from ..io import to_jsonable
from .values import _num


def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)



def _si(x: float | None) -> str:
    if x is None:
        return "\u2013"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.4g}"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "\u2013"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    v = _num(x)
    if v is None:
        return "\u2013" if isinstance(x, float) else str(x)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _loss(x: Any) -> str:
    v = _num(x)
    return "\u2013" if v is None else f"{v:.3f}"


def _pct(x: Any) -> str:
    v = _num(x)
    return "\u2013" if v is None else f"{100 * v:.1f}%"


def _table(headers: list[str], rows: list[list[str]], numeric: Iterable[int] = (), cls: str = "data") -> str:
    """A table; ``rows`` hold already-escaped HTML cells."""
    numeric = set(numeric)
    num = ' class="num"'
    head = "".join(f"<th{num if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{num if i in numeric else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cards(items: list[tuple[str, str, str]]) -> str:
    """Summary cards: (label, escaped value HTML, extra class)."""
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card {_e(c)}\"><div class=\"card-label\">{_e(k)}</div><div class=\"card-value\">{v}</div></div>"
        for k, v, c in items) + "</div>"


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, obj)]


def _value_html(v: Any) -> str:
    if isinstance(v, str):
        return f"<code>{_e(v)}</code>"
    if isinstance(v, (list, dict)):
        return f"<code>{_e(json.dumps(to_jsonable(v), ensure_ascii=False))}</code>"
    return _e(_fmt(v) if isinstance(v, float) else ("null" if v is None else v))


def _config_tables(config: dict) -> str:
    """Config as one key/value table per top-level section."""
    scalars = [(k, v) for k, v in config.items() if not isinstance(v, dict)]
    sections = [(k, v) for k, v in config.items() if isinstance(v, dict)]
    blocks = []
    if scalars:
        blocks.append(("run", scalars))
    for k, v in sections:
        blocks.append((k, _flatten(v)))
    out = []
    for title, rows in blocks:
        out.append(f"<details class=\"config\" open><summary>{_e(title)}</summary>"
                   + _table(["key", "value"], [[f"<code>{_e(k)}</code>", _value_html(v)] for k, v in rows],
                            cls="data kv") + "</details>")
    return "<div class=\"config-grid\">" + "".join(out) + "</div>"
