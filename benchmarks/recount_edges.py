"""Recount saved circuits' edges from their node sets and their model's weights.

``n_edges`` once also counted residual links (a write and a later read of the same
channel) and q.k pairs; it now counts only the nonzero weights joining two kept nodes,
the paper's edge.  A circuit file keeps its node ids, so its size can be recounted from
the run's weights without pruning again.  For each ``circuit.json`` this prints the
stored counts (as written, before any upgrade on load), the counts from the node set and
the weights (``circuits/graph.py``), the counts from the file's own links
(``circuit_sizes.link_counts``), and the earlier count (weights + residual links + q.k
pairs) with how far it runs above the paper's.  Nothing is written.

    python benchmarks/recount_edges.py runs/demo [runs/other/circuits/T/circuit.json ...]

A run directory stands for every ``circuits/*/circuit.json`` under it (kept training
steps' circuits included).  The run is the folder two levels above ``circuits/``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparsecircuits.circuit_sizes import internal_nodes
from sparsecircuits.circuit_sizes import link_counts as file_link_counts
from sparsecircuits.circuits.graph import link_counts
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.errors import UserError
from sparsecircuits.run import load_run


def circuit_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(p.glob("circuits/*/circuit.json")) + sorted(p.glob("kept/*/circuits/*/circuit.json"))
        else:
            raise UserError(f"{p}: no such file or directory")
    return out


def recount(path: Path, runs: dict) -> dict:
    """The stored and recounted sizes of one circuit file."""
    data = json.loads(path.read_text())
    run_dir = path.parents[2]
    if run_dir not in runs:
        kept = run_dir.parent.name == "kept" and not (run_dir / "config.json").exists()
        runs[run_dir] = (load_run(run_dir.parents[1], checkpoint=int(run_dir.name.split("_")[-1])) if kept
                         else load_run(run_dir))  # a kept training step's weights, or the run's own
    model = runs[run_dir].model
    nodes = NodeSet.from_model(model)
    ids = internal_nodes(data)
    weights = link_counts(model, nodes, nodes.keep_from_names(ids))
    stored = data.get("metrics") or {}
    links = file_link_counts(data.get("nodes") or [], data.get("links") or [])
    earlier = weights["n_edges"] + weights["n_residual_links"] + weights["n_qk_pairs"]
    return {"circuit": str(path), "task": data.get("task"), "n_nodes": len(ids),
            "stored": {k: stored.get(k) for k in ("n_edges", "n_edges_old", "n_residual_links", "n_qk_pairs",
                                                  "edge_count")},
            "from_weights": weights,
            "from_links": {k: links[k] for k in ("n_edges", "n_residual_links", "n_qk_pairs")},
            "stored_is_weights_count": stored.get("n_edges") == weights["n_edges"],
            "earlier_count": earlier,
            "earlier_over_weights": round(earlier / weights["n_edges"], 4) if weights["n_edges"] else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run directories or circuit.json files")
    args = ap.parse_args(argv)
    try:
        files = circuit_files(args.paths)
        runs: dict = {}
        rows = [recount(f, runs) for f in files]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"circuits": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
