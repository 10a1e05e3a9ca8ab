"""Circuit size as the paper counts it, and the geometric mean of sizes over tasks.

The paper: "an edge is a nonzero entry in a weight matrix and connects two nodes"; the
simplest MLP circuit, one neuron reading from and writing to one channel, has 3 nodes
and 2 edges.  So ``n_edges`` counts only the nonzero entries of the four matrices that
join two kinds of node:

* ``attn.c_attn`` (residual read ``attn_in`` -> q/k/v channel),
* ``attn.c_proj`` (v channel -> residual write ``attn_out``),
* ``mlp.c_fc`` (residual read ``mlp_in`` -> neuron),
* ``mlp.c_proj`` (neuron -> residual write ``mlp_out``).

A circuit's graph holds more links than that, each counted apart under its own name:

* ``residual``: a write to channel ``c`` -> a later read of channel ``c`` (the residual
  stream carries it; the weight is the read's norm gain) -> ``n_residual_links``;
* ``qk``: a kept q channel -> the kept k channel it is multiplied with ->
  ``n_qk_pairs``;
* ``embed`` / ``logit``: token embedding -> read, write -> answer logit -> ``n_io_edges``.

``n_edges_with_io`` is ``n_edges + n_io_edges``.  ``metrics["edge_count"] == "weights"``
marks a circuit counted this way when it was pruned.  A circuit file written before
these counts existed has its counts recomputed from its own links on load
(``edge_count == "recomputed"``, the stored value kept as ``n_edges_old``); its
size-vs-target rows were counted from the model at other sizes and cannot be
recomputed, so their edge counts move to ``n_edges_old`` and ``n_edges`` becomes null.

The geometric mean over tasks (the paper's headline size) counts only circuits that
met their target on held-out items (``circuit_loss <= target_loss``) and were not
forced on a task the model had not learned; the others are listed beside it, never
averaged in.  Pure Python, so the report can use it without loading torch.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Sequence

from .sites import READ_KINDS, WRITE_KINDS

EDGE_COUNT = "weights"
RECOMPUTED = "recomputed"
IO_SITES = ("embed", "logit")
COUNT_KEYS = ("n_edges", "n_residual_links", "n_qk_pairs", "n_io_edges", "n_edges_with_io")
# (source site, target site) of each weight matrix's entries
WEIGHT_PAIRS = frozenset({("attn_in", "q"), ("attn_in", "k"), ("attn_in", "v"), ("v", "attn_out"),
                          ("mlp_in", "neuron"), ("neuron", "mlp_out")})


def link_kind(source_site: str | None, target_site: str | None) -> str:
    """``"weight"``, ``"residual"``, ``"qk"``, ``"embed"``, ``"logit"`` or ``"other"``."""
    if source_site == "embed":
        return "embed"
    if target_site == "logit":
        return "logit"
    if (source_site, target_site) in WEIGHT_PAIRS:
        return "weight"
    if source_site in WRITE_KINDS and target_site in READ_KINDS:
        return "residual"
    if (source_site, target_site) == ("q", "k"):
        return "qk"
    return "other"


def counts_from_kinds(kinds: Iterable[str]) -> dict[str, int]:
    """The named counts from the kinds of a circuit's links."""
    n = {"weight": 0, "residual": 0, "qk": 0, "embed": 0, "logit": 0, "other": 0}
    for k in kinds:
        n[k] = n.get(k, 0) + 1
    io = n["embed"] + n["logit"]
    return {"n_edges": n["weight"], "n_residual_links": n["residual"], "n_qk_pairs": n["qk"],
            "n_io_edges": io, "n_edges_with_io": n["weight"] + io}


def link_counts(nodes: Sequence[Any], links: Sequence[Any]) -> dict[str, int]:
    """Counts of a node-link circuit, each link classified by the sites of its ends."""
    site = {n.get("id"): n.get("site") for n in nodes if isinstance(n, dict)}
    kinds = (link_kind(site.get(lk.get("source")), site.get(lk.get("target")))
             for lk in links if isinstance(lk, dict))
    return counts_from_kinds(kinds)


def upgrade_metrics(metrics: dict, nodes: Sequence[Any], links: Sequence[Any]) -> dict:
    """``metrics`` with the edge counts of this module (a new dict; the input is not changed).

    Metrics already counted this way are returned as they are; older ones are recomputed
    from the links and marked (see the module docstring).
    """
    if metrics.get("edge_count") in (EDGE_COUNT, RECOMPUTED):
        return metrics
    out = copy.deepcopy(metrics)
    counts = link_counts(nodes, links)
    if "n_edges" in out and out["n_edges"] != counts["n_edges"]:
        out["n_edges_old"] = out["n_edges"]
    out.update(counts)
    out["edge_count"] = RECOMPUTED
    rows = out.get("size_vs_target")
    if isinstance(rows, list):
        for r in rows:
            if isinstance(r, dict) and "n_edges" in r:
                r["n_edges_old"] = r.pop("n_edges")
                r["n_edges"] = None
    return out


def upgrade_circuit_json(data: dict) -> dict:
    """A circuit's node-link JSON with up-to-date edge counts (shallow copy when changed)."""
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        return data
    new = upgrade_metrics(metrics, data.get("nodes") or [], data.get("links") or [])
    if new is metrics:
        return data
    return {**data, "metrics": new}


# ---------------------------------------------------------------------------- geometric mean


def geometric_mean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of sizes, each counted as at least 1 (an empty circuit would zero it);
    None values are skipped, and None is returned when nothing is left."""
    vals = [max(float(v), 1.0) for v in values if v is not None]
    if not vals:
        return None
    return float(math.exp(sum(math.log(v) for v in vals) / len(vals)))


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def met_on_heldout(metrics: dict) -> bool | None:
    """Whether the circuit's loss on held-out items reached its target; None if unknown."""
    loss, target = _num(metrics.get("circuit_loss")), _num(metrics.get("target_loss"))
    if loss is None or target is None:
        return None
    return loss <= target


def exclusion_reason(metrics: dict, forced: bool = False) -> str | None:
    """Why a circuit is left out of the geometric mean, or None when it counts."""
    met = met_on_heldout(metrics)
    if met is None:
        return "no held-out loss"
    if not met:
        return f"missed target {metrics['target_loss']:g} on held-out items ({metrics['circuit_loss']:.3f})"
    if forced:
        return "forced: the model had not learned the task"
    if _num(metrics.get("n_edges")) is None:
        return "no edge count"
    return None


def size_summary(rows: Sequence[dict]) -> dict:
    """Geometric mean of ``n_edges`` (and ``n_nodes``) over the circuits that count.

    ``rows``: one dict per task with ``task``, ``n_edges``, ``n_nodes``,
    ``circuit_loss``, ``target_loss`` and ``forced``.  Returns ``{"geomean_edges",
    "geomean_nodes", "counted": [task, ...], "excluded": [{"task", "n_edges", "reason"}]}``.
    """
    counted, excluded = [], []
    for r in rows:
        reason = exclusion_reason(r, bool(r.get("forced")))
        if reason is None:
            counted.append(r)
        else:
            excluded.append({"task": r.get("task"), "n_edges": r.get("n_edges"), "reason": reason})
    return {"geomean_edges": geometric_mean(r["n_edges"] for r in counted),
            "geomean_nodes": geometric_mean(r.get("n_nodes") for r in counted),
            "counted": [r.get("task") for r in counted], "excluded": excluded}


def internal_nodes(data: dict) -> list[str]:
    """The ids of a ``circuit.json``'s own nodes (not its embedding or logit nodes)."""
    nodes = data.get("nodes") if isinstance(data.get("nodes"), list) else []
    return [str(n["id"]) for n in nodes if isinstance(n, dict) and "id" in n and n.get("site") not in ("embed", "logit")]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float | None:
    """The overlap of two circuits' node sets, |a & b| / |a | b|; None when both are empty."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else None
