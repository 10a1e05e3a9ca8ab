"""Learned masks beside attribution pruning, per task, when a run has both circuits.

``prune --method attribution`` writes ``circuits/TASK@attribution/`` beside the learned
``circuits/TASK/`` (``rundir.variant_folder``).  The index page gets one row per task with
both: each circuit's size and held-out loss, the Jaccard overlap of their node sets and
the size ratio attribution / learned (the paper found learned masks far smaller); each
row links to a page with the two circuits side by side (``pages.render_compare``).
"""
from __future__ import annotations

from ..circuit_sizes import internal_nodes, jaccard
from .format import _e, _fmt, _loss, _table
from .loading import CircuitEntry, RunData
from .values import _int, _num

ATTRIBUTION = "attribution"


def variant_of(entry: CircuitEntry) -> str:
    """The variant a circuit folder holds (``TASK@VARIANT``), "" for a plain circuit."""
    return entry.dirname.partition("@")[2]


def method_pairs(run: RunData) -> list[tuple[CircuitEntry, CircuitEntry]]:
    """(learned, attribution) for every task whose two circuits are both readable."""
    by_dir = {c.dirname: c for c in run.circuits if c.data is not None}
    return [(c, by_dir[f"{c.dirname}@{ATTRIBUTION}"]) for name, c in sorted(by_dir.items())
            if "@" not in name and f"{name}@{ATTRIBUTION}" in by_dir]


def compare_page(learned: CircuitEntry) -> str:
    """The side-by-side page's file name, unique because circuit page names are."""
    return "methods-" + learned.page[len("circuit-"):]


def _ratio(a, b) -> float | None:
    a, b = _num(a), _num(b)
    return a / b if a is not None and b else None


def comparison(learned: dict, attribution: dict) -> dict:
    """Sizes, losses, overlap and ratios of two circuit.json objects."""
    ml, ma = (d.get("metrics") if isinstance(d.get("metrics"), dict) else {} for d in (learned, attribution))
    return {"learned_nodes": _int(ml.get("n_nodes")), "learned_edges": _int(ml.get("n_edges")),
            "learned_loss": _num(ml.get("circuit_loss")), "attribution_nodes": _int(ma.get("n_nodes")),
            "attribution_edges": _int(ma.get("n_edges")), "attribution_loss": _num(ma.get("circuit_loss")),
            "jaccard": jaccard(internal_nodes(learned), internal_nodes(attribution)),
            "nodes_ratio": _ratio(ma.get("n_nodes"), ml.get("n_nodes")),
            "edges_ratio": _ratio(ma.get("n_edges"), ml.get("n_edges"))}


def methods_section(run: RunData) -> str:
    """The table of tasks pruned both ways, or nothing when there is none."""
    pairs = method_pairs(run)
    if not pairs:
        return ""
    rows = []
    for learned, attr in pairs:
        c = comparison(learned.data, attr.data)
        ratio = (f"{_e(_fmt(c['edges_ratio'], 3))}\u00d7 edges, {_e(_fmt(c['nodes_ratio'], 3))}\u00d7 nodes"
                 if c["edges_ratio"] is not None or c["nodes_ratio"] is not None else "\u2013")
        rows.append([f"<a href=\"{_e(compare_page(learned))}\">{_e(learned.task)}</a>",
                     _e(_fmt(c["learned_nodes"])), _e(_fmt(c["learned_edges"])), _e(_loss(c["learned_loss"])),
                     _e(_fmt(c["attribution_nodes"])), _e(_fmt(c["attribution_edges"])),
                     _e(_loss(c["attribution_loss"])), _e(_fmt(c["jaccard"], 2)), ratio])
    headers = ["task", "learned nodes", "learned edges", "learned loss", "attribution nodes", "attribution edges",
               "attribution loss", "node overlap", "attribution / learned"]
    return ("<section class=\"methods\"><h2>Learned masks and attribution pruning</h2><p class=\"muted\">The same "
            "task pruned by learned node masks and by attribution scores (<code>prune --method attribution</code>), "
            "to the same target with the same calibration; node overlap is the Jaccard overlap of the two node sets. "
            "Each task links to the two circuits side by side.</p>"
            + _table(headers, rows, numeric=range(1, 8), cls="data methods") + "</section>")
