"""Stability across seeds (``prune --seeds K``): would another seed give the same circuit?

``K`` pruning runs with seeds ``s, s + 1, ..., s + K - 1``, each exactly ``prune(seed=...)``:
its own draw of train and test items (the two splits never share a prompt, whatever the
seed), its own mask initialisation and batch order.  What they share is summarised as

* the spread of their sizes (nodes and edges: min, max, mean, standard deviation);
* the Jaccard overlap ``|A & B| / |A | B|`` of their node sets, mean and minimum over the
  ``K (K - 1) / 2`` pairs;
* the stable core, the nodes kept in at least ``CORE_FRACTION`` (80%) of the runs,
  evaluated as a circuit of its own the way a pruned circuit is: calibrated on the train
  items and scored on the held-out items, both those of the first seed.  A core that
  still meets the target is a circuit every seed agrees on; one far above it says the
  runs found different circuits rather than one circuit with different extras.

The first seed's circuit is the one saved as ``circuit.json`` (the same file as ``prune
--seed s``); the record, written to ``stability.json`` beside it by ``rundir``, lists every
run's nodes, so the report can mark the core in that circuit and a later ``prune`` that
replaces the circuit is noticed (``rundir.stability_matches``).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import fields
from itertools import combinations
from typing import Sequence

import torch

from ..circuit_sizes import jaccard
from ..config import PruneSettings
from ..tasks.base import score_diffs
from .circuit import Circuit
from .graph import count_edges
from .prune import _frozen, _heldout_diff, _prepare, _Prober, _threads, prune

CORE_FRACTION = 0.8


def _overlap(a: set, b: set) -> float:
    """Jaccard overlap of two runs' node sets; two empty circuits (the empty circuit met the
    target both times) agree completely."""
    j = jaccard(a, b)
    return 1.0 if j is None else j


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"min", "max", "mean", "std"}`` of a few numbers (population standard deviation)."""
    mean = sum(values) / len(values)
    return {"min": min(values), "max": max(values), "mean": mean,
            "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))}


def summarise(node_sets: Sequence[Sequence[str]], fraction: float = CORE_FRACTION) -> dict:
    """Overlap and core of K node sets (K >= 1): pairwise Jaccard (mean, min, number of
    pairs; both None for one set), how many runs kept each node, and the core: the nodes
    kept in at least ``fraction`` of the runs, in a stable order (most runs, then name)."""
    sets = [set(s) for s in node_sets]
    counts = Counter(n for s in sets for n in s)
    min_runs = max(1, math.ceil(fraction * len(sets) - 1e-9))
    pairs = [_overlap(a, b) for a, b in combinations(sets, 2)]
    ranked = sorted(counts, key=lambda n: (-counts[n], n))
    return {"n_runs": len(sets),
            "jaccard": {"mean": sum(pairs) / len(pairs) if pairs else None, "min": min(pairs) if pairs else None,
                        "pairs": len(pairs)},
            "kept_in": {n: counts[n] for n in ranked},
            "core": {"fraction": fraction, "min_runs": min_runs, "nodes": [n for n in ranked if counts[n] >= min_runs]}}


def _settings_of(circuit: Circuit) -> PruneSettings:
    """The ``PruneSettings`` a circuit was pruned with (its ``metrics.settings``)."""
    known = {f.name for f in fields(PruneSettings)}
    return PruneSettings(**{k: v for k, v in circuit.settings.items() if k in known})


def score_core(run, task, circuit: Circuit, core: Sequence[str], *, name: str | None = None,
               means: torch.Tensor | None = None) -> dict:
    """The core as a circuit of its own, on ``circuit``'s items and settings (its seed,
    ablation, target): node and edge counts, calibrated held-out loss and accuracy, the
    calibrated train loss, and whether the held-out loss meets the target."""
    s = _settings_of(circuit)
    with _threads(s.threads), _frozen(run.model):
        ctx = _prepare(run, task, s, seed=circuit.seed, force=True, name=name or circuit.task, means=means,
                       t0=time.perf_counter())
        keep = ctx.nodes.keep_from_names(core)  # (n,)
        order = torch.cat([keep.nonzero().flatten(), (~keep).nonzero().flatten()])  # the core ranked first
        prober = _Prober(ctx.masked, order, ctx.probe, s)
        k = prober.size(len(core))
        heldout = score_diffs(_heldout_diff(ctx, prober, k, s))
        scale, shift = prober.calibration(k)
        return {"n_nodes": k, "n_edges": count_edges(ctx.model, ctx.nodes, prober.keep(k)),
                "loss": heldout["loss"], "accuracy": heldout["accuracy"], "train_loss": prober.loss(k),
                "met_heldout": heldout["loss"] <= s.target_loss, "calibration": {"scale": scale, "shift": shift}}


def prune_seeds(run, task, seeds: int, *, seed: int = 0, name: str | None = None,
                means: torch.Tensor | None = None, **kwargs) -> tuple[list[Circuit], dict]:
    """``seeds`` pruning runs (seeds ``seed .. seed + seeds - 1``, ``prune``'s keywords
    otherwise) and their stability record; the circuits in seed order."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    t0 = time.perf_counter()
    circuits = [prune(run, task, seed=seed + i, name=name, means=means, **kwargs) for i in range(seeds)]
    first = circuits[0]
    summary = summarise([c.node_ids for c in circuits])
    core = summary.pop("core")
    core.update(score_core(run, task, first, core["nodes"], name=name, means=means))
    m = first.metrics
    record = {
        "task": first.task, "seeds": [c.seed for c in circuits], "method": m.get("method", "learned"),
        "ablation": first.ablation, "target_loss": m["target_loss"], "tie_qk": bool(first.settings.get("tie_qk")),
        "runs": [{"seed": c.seed, "n_nodes": c.metrics["n_nodes"], "n_edges": c.metrics["n_edges"],
                  "circuit_loss": c.metrics["circuit_loss"], "circuit_accuracy": c.metrics["circuit_accuracy"],
                  "target_met": c.metrics.get("target_met", True), "nodes": c.node_ids} for c in circuits],
        "sizes": {key: spread([c.metrics[key] for c in circuits]) for key in ("n_nodes", "n_edges")},
        **summary,
        "core": core,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return circuits, record

