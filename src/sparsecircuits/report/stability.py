"""The circuit page's "stability across seeds" section, from ``stability.json`` (``prune --seeds``).

Everything in the record is read defensively (a hand-edited or older file shows what it
can); node ids and numbers are escaped like every other text on the page.
"""
from __future__ import annotations

from typing import Any

from .format import _cards, _e, _fmt, _loss, _pct, _table
from .values import _int, _num


def core_ids(record: dict | None) -> set[str]:
    """The stable core's node ids (empty without a record)."""
    core = (record or {}).get("core")
    nodes = core.get("nodes") if isinstance(core, dict) else None
    return {n for n in nodes if isinstance(n, str)} if isinstance(nodes, list) else set()


def _range(spread: Any) -> str:
    if not isinstance(spread, dict):
        return "\u2013"
    lo, hi, mean = _num(spread.get("min")), _num(spread.get("max")), _num(spread.get("mean"))
    if lo is None or hi is None:
        return "\u2013"
    text = _e(_fmt(lo)) if lo == hi else f"{_e(_fmt(lo))}\u2013{_e(_fmt(hi))}"
    return text + (f" <small>mean {_e(_fmt(mean, 3))}</small>" if mean is not None and lo != hi else "")


def stability_section(record: dict | None, shown: int) -> str:
    """Cards (sizes, overlap, the core and its loss) and one row per seed; ``shown`` is how
    many core nodes the circuit on this page holds (the viewer rings them)."""
    if not isinstance(record, dict):
        return ""
    sizes = record.get("sizes") if isinstance(record.get("sizes"), dict) else {}
    jac = record.get("jaccard") if isinstance(record.get("jaccard"), dict) else {}
    core = record.get("core") if isinstance(record.get("core"), dict) else {}
    runs = [r for r in record.get("runs", []) if isinstance(r, dict)] if isinstance(record.get("runs"), list) else []
    target = _num(record.get("target_loss"))
    closs = _num(core.get("loss"))
    ok = "" if target is None or closs is None else ("good" if closs <= target else "bad")
    n_core = len(core_ids(record))
    cards = _cards([
        ("seeds", _e(_fmt(len(runs))), ""),
        ("nodes", _range(sizes.get("n_nodes")), ""),
        ("edges", _range(sizes.get("n_edges")), ""),
        ("node overlap (Jaccard)", f"{_e(_fmt(_num(jac.get('mean')), 2))} <small>mean, min "
                                   f"{_e(_fmt(_num(jac.get('min')), 2))}</small>", ""),
        ("stable core", f"{_e(_fmt(n_core))} nodes <small>{_e(_fmt(_int(core.get('n_edges'))))} edges; "
                        f"{_e(_fmt(shown))} in this circuit</small>", ""),
        ("core loss", _e(_loss(closs)) + (f" <small>/ target {_e(_loss(target))}</small>" if target is not None else ""),
         ok),
        ("core acc", _e(_pct(core.get("accuracy"))), ""),
    ])
    rows = [[_e(_fmt(_int(r.get("seed")))), _e(_fmt(_int(r.get("n_nodes")))), _e(_fmt(_int(r.get("n_edges")))),
             _e(_loss(r.get("circuit_loss"))), _e(_pct(r.get("circuit_accuracy"))),
             "yes" if r.get("target_met") is True else "no"] for r in runs]
    fraction = _num(core.get("fraction"))
    note = (f"The stable core is the nodes kept in at least {_e(_pct(fraction))} of the runs "
            f"({_e(_fmt(_int(core.get('min_runs'))))} of {len(runs)}), evaluated as a circuit of its own on the "
            "first seed's items; the first seed's circuit is the one shown above, its core nodes ringed in green."
            if fraction is not None else "")
    return ("<section class=\"stability\"><h2>Stability across seeds</h2>" + cards
            + f"<p class=\"muted\">{note}</p>"
            + _table(["seed", "nodes", "edges", "circuit loss", "circuit acc", "target met (train)"], rows,
                     numeric=range(0, 5), cls="data stability-runs")
            + "</section>")
