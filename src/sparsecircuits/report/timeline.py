"""The index page's "circuits during training" section, from ``timelines/TASK.json``.

Per task: the full model's and the circuit's accuracy at every kept step, the circuit's
size, a grid of which nodes each step's circuit keeps (a row per node, most persistent
first), and a table.  Everything comes from a file and is read defensively; node ids and
task names are escaped like every other text on the page.
"""
from __future__ import annotations

import re
from .charts import svg_line_chart
from .format import _e, _fmt, _loss, _pct, _si, _table
from .values import _int, _num

GRID_ROWS = 40  # nodes drawn in the persistence grid (the most persistent); the rest are counted
_CELL, _LABEL_W, _TOP = 14, 190, 34


def timeline_anchor(task: str) -> str:
    """The id of a task's block on the index page (task names are untrusted text)."""
    return "timeline-" + (re.sub(r"[^A-Za-z0-9_-]+", "_", task) or "task")


def _rows(record: dict) -> list[dict]:
    steps = record.get("steps")
    return [r for r in steps if isinstance(r, dict) and _int(r.get("step")) is not None] if isinstance(steps, list) else []


def _charts(rows: list[dict]) -> str:
    pruned = [r for r in rows if r.get("pruned") is True]
    acc = svg_line_chart(
        [{"name": "full model", "points": [(r["step"], r.get("full_accuracy")) for r in rows], "markers": True,
          "color": "#16a34a"},
         {"name": "circuit", "points": [(r["step"], r.get("circuit_accuracy")) for r in pruned], "markers": True,
          "color": "#2563eb"}],
        title="task accuracy (held-out)", x_label="training step", y_label="accuracy", cls="timeline-accuracy")
    size = svg_line_chart(
        [{"name": "edges", "points": [(r["step"], r.get("n_edges")) for r in pruned if (_num(r.get("n_edges")) or 0) > 0],
          "markers": True, "color": "#2563eb"},
         {"name": "nodes", "points": [(r["step"], r.get("n_nodes")) for r in pruned if (_num(r.get("n_nodes")) or 0) > 0],
          "markers": True, "color": "#ea580c"}],
        title="circuit size", x_label="training step", y_label="count", log_y=True, cls="timeline-size")
    return "<div class=\"charts\">" + "".join(f"<div class=\"chart-box\">{c}</div>" for c in (acc, size)) + "</div>"


def persistence_grid(record: dict) -> str:
    """SVG: one row per node (the ``GRID_ROWS`` most persistent), one column per kept step;
    a filled cell where that step's circuit keeps the node, a grey column where the step was
    not pruned (the model had not learned the task there)."""
    rows = _rows(record)
    nodes = [n for n in record.get("nodes", []) if isinstance(n, dict) and isinstance(n.get("id"), str)] \
        if isinstance(record.get("nodes"), list) else []
    if not rows or not nodes:
        return ""
    shown = nodes[:GRID_ROWS]
    width = _LABEL_W + _CELL * len(rows) + 10
    height = _TOP + _CELL * len(shown) + 6
    # drawn at its own size (not the charts' full width), its text styled here, not by the sheet
    out = [f"<svg class=\"persistence\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" "
           "role=\"img\" aria-label=\"nodes kept at each training step\" font-family=\"system-ui, sans-serif\" "
           "font-size=\"10\" fill=\"#475569\" xmlns=\"http://www.w3.org/2000/svg\">"]
    for j, r in enumerate(rows):
        x = _LABEL_W + j * _CELL
        out.append(f"<text transform=\"translate({x + _CELL - 3} {_TOP - 4}) rotate(-60)\">"
                   f"{_e(_fmt(_int(r['step'])))}</text>")
        if r.get("pruned") is not True:
            out.append(f"<rect x=\"{x}\" y=\"{_TOP}\" width=\"{_CELL}\" height=\"{_CELL * len(shown)}\" fill=\"#eef0f3\">"
                       f"<title>step {_e(_int(r['step']))}: not pruned (not learned)</title></rect>")
    for i, n in enumerate(shown):
        y = _TOP + i * _CELL
        kept = {_int(s) for s in n.get("steps", [])} if isinstance(n.get("steps"), list) else set()
        out.append(f"<text x=\"{_LABEL_W - 6}\" y=\"{y + _CELL - 3}\" text-anchor=\"end\">"
                   f"{_e(n['id'])}</text>")
        for j, r in enumerate(rows):
            if _int(r["step"]) in kept:
                out.append(f"<rect x=\"{_LABEL_W + j * _CELL + 1}\" y=\"{y + 1}\" width=\"{_CELL - 2}\" "
                           f"height=\"{_CELL - 2}\" fill=\"#2563eb\"><title>{_e(n['id'])} kept at step "
                           f"{_e(_int(r['step']))}</title></rect>")
    out.append("</svg>")
    more = len(nodes) - len(shown)
    note = f"<p class=\"muted\">{more} less persistent node(s) not drawn.</p>" if more > 0 else ""
    return "<div class=\"persistence-box\">" + "".join(out) + "</div>" + note


def _table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.get("pruned") is True:
            note = "<span class=\"badge flag\">forced</span>" if r.get("forced") is True else ""
            cells = [_e(_fmt(_int(r.get("n_nodes")))), _e(_fmt(_int(r.get("n_edges")))), _e(_loss(r.get("circuit_loss"))),
                     _e(_fmt(_num(r.get("jaccard_previous")), 2)), _e(_fmt(_num(r.get("jaccard_last")), 2))]
        else:
            note, cells = "<span class=\"muted\">not learned: not pruned</span>", ["\u2013"] * 5
        out.append([_e(_fmt(_int(r.get("step")))), _e(_si(_num(r.get("tokens")))), _e(_loss(r.get("val_loss"))),
                    _e(_pct(r.get("full_accuracy"))), *cells, note])
    return out


def _summary(record: dict, rows: list[dict], link: str | None) -> str:
    nodes = [n for n in record.get("nodes", []) if isinstance(n, dict)] if isinstance(record.get("nodes"), list) else []
    pruned = [r for r in rows if r.get("pruned") is True]
    always = sum(1 for n in nodes if _num(n.get("persistence")) == 1.0)
    first = _int(record.get("first_learned_step"))
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    text = (f"{len(rows)} kept step(s), {len(pruned)} pruned; "
            + (f"the model first learned the task at step {_e(_fmt(first))}; " if first is not None
               else "the model never reached the accuracy bar at a kept step; ")
            + f"{always} node(s) in every pruned circuit, {len(nodes)} in any "
            f"(target {_e(_loss(settings.get('target_loss')))}, {_e(settings.get('ablation', 'mean'))} ablation).")
    if link:
        text += f" <a href=\"{_e(link)}\">The final model's circuit</a>."
    return f"<p class=\"muted\">{text}</p>"


def timeline_block(task: str, record: dict, link: str | None = None) -> str:
    """One task's block: summary, charts, persistence grid, table; ``link`` is the task's
    circuit page, when there is one."""
    rows = _rows(record)
    headers = ["step", "tokens", "val loss", "full acc", "nodes", "edges", "circuit loss", "overlap prev",
               "overlap last", ""]
    return (f"<div class=\"timeline\" id=\"{timeline_anchor(task)}\"><h3>{_e(task)}</h3>"
            f"{_summary(record, rows, link)}{_charts(rows)}{persistence_grid(record)}"
            + _table(headers, _table_rows(rows), numeric=range(0, 9), cls="data timeline-steps") + "</div>")


def timelines_section(timelines: dict[str, dict], links: dict[str, str]) -> str:
    """Every task's timeline, or nothing when there is none."""
    if not timelines:
        return ""
    blocks = "".join(timeline_block(task, rec, links.get(task)) for task, rec in sorted(timelines.items())
                     if isinstance(rec, dict))
    return ("<section class=\"timelines\"><h2>Circuits during training</h2><p class=\"muted\">Each task pruned at "
            "every checkpoint kept during training (<code>sparsecircuits timeline</code>), with the same settings "
            "and items at every step; overlaps are the Jaccard overlap of node sets with the previous pruned step "
            "and with the last one.</p>" + blocks + "</section>")

