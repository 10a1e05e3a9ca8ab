"""Figures drawn with matplotlib and inlined as PNG, for plots the SVG charts do not cover.

Why a PNG in a data URI: the page must stay one self-contained file (its CSP allows
``img-src data:`` and nothing else), and a raster image carries no text that could be
read as markup, so task names in titles need no escaping inside it.  matplotlib is
imported only when a page has such a plot, and drawn through ``Figure`` (no pyplot
state), so writing reports in a loop or a thread leaks no figures.
"""
from __future__ import annotations

import base64
import io
from typing import Any

from .format import _e
from .values import _num

_COLORS = {"learned": "#2563eb", "attribution": "#ea580c"}


def _points(rows: Any) -> list[tuple[float, float]]:
    """``(n_nodes, loss)`` of well-formed rows, in order of size."""
    if not isinstance(rows, list):
        return []
    pts = [(_num(r.get("n_nodes")), _num(r.get("loss"))) for r in rows if isinstance(r, dict)]
    return sorted((x, y) for x, y in pts if x is not None and y is not None)


def loss_vs_size_png(metrics: dict) -> bytes | None:
    """The circuit's loss against its size in each ranking (``metrics["loss_vs_size"]``,
    ``circuits/loss_curve.py``), with the target and the full model's loss; None without data."""
    curves = metrics.get("loss_vs_size")
    if not isinstance(curves, dict):
        return None
    series = {name: _points(rows) for name, rows in curves.items() if _points(rows)}
    if not series:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 2.9), dpi=150)
    ax = fig.subplots()
    for name, pts in series.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, lw=1.6, color=_COLORS.get(name), label=f"{name} order")
    target, full = _num(metrics.get("target_loss")), _num(metrics.get("full_loss"))
    if target is not None:
        ax.axhline(target, color="#64748b", lw=1, ls="--", label="target")
    if full is not None:
        ax.axhline(full, color="#16a34a", lw=1, ls=":", label="full model")
    n, loss = _num(metrics.get("n_nodes")), _num(metrics.get("circuit_loss"))
    if n is not None and loss is not None:
        ax.plot([n], [loss], marker="*", ms=11, color="#111827", ls="none", label="this circuit")
    if max(x for pts in series.values() for x, _ in pts) > 24:
        ax.set_xscale("symlog", linthresh=1)  # sizes are spaced in log(1 + K)
    ax.set_xlabel("nodes kept, in ranking order")
    ax.set_ylabel("task loss (held-out)")
    ax.set_title("faithfulness against size", fontsize=10)
    return finished_png(fig, ax)


def finished_png(fig: Figure, ax) -> bytes:
    """A report figure's common finish (light grid, small legend, tight layout) as PNG bytes,
    without the software tag, so the same plot gives the same bytes on every run."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def loss_vs_size_html(metrics: dict) -> str:
    """The plot as an ``<img>`` with its data inline, or "" when the circuit has no curve."""
    png = loss_vs_size_png(metrics)
    if png is None:
        return ""
    alt = ("circuit loss on held-out items as nodes are added in the learned and the attribution "
           "order, with the target and the full model's loss")
    return (f"<img class=\"plot loss-vs-size\" width=\"480\" alt=\"{_e(alt)}\" "
            f"src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">")
