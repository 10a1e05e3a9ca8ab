"""Pruning's cost against its result: named budgets of settings, each run over several
tasks and seeds, so a cheaper budget can be judged by whether its circuits stay within
the default's own seed-to-seed spread.

For every budget, task and seed it prunes once (in this process, one model load) and
records the process CPU time, the circuit's nodes, edges, held-out loss and whether it met
the target on the held-out items. The JSON summary per budget gives the median CPU
seconds and, per task, the edge counts over the seeds beside the default's, with
``within_spread``: the budget's median edge count lies inside the default budget's
min-max range over the same seeds, widened by 10% of it (two seeds rarely span the
spread by themselves).

    python benchmarks/prune_budget.py RUN_DIR --tasks single_double_quote var_if --seeds 0 1 \\
        --budget quick steps=30 lr=0.02 batch_pairs=32

Budgets: ``default`` (the library's settings) always runs first; each ``--budget NAME
KEY=VALUE ...`` adds one (keys are ``PruneSettings`` fields).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from sparsecircuits.circuits.prune import prune
from sparsecircuits.run import load_run


def one(run, task: str, seed: int, threads: int, settings: dict) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    c = prune(run, task, seed=seed, progress=False, threads=threads, force=True, **settings)
    m = c.metrics
    return {"task": task, "seed": seed, "cpu_seconds": round(time.process_time() - c0, 2),
            "seconds": round(time.perf_counter() - t0, 2), "nodes": m["n_nodes"], "edges": m["n_edges"],
            "circuit_loss": round(m["circuit_loss"], 4), "met_heldout": m["circuit_loss"] <= c.settings["target_loss"],
            "full_accuracy": round(m["full_accuracy"], 3), "k_coef": c.settings.get("k_coef"),
            "timings": m.get("timings")}


def summarise(rows: list[dict], default_rows: list[dict]) -> dict:
    by_task = {}
    for task in sorted({r["task"] for r in rows}):
        edges = [r["edges"] for r in rows if r["task"] == task]
        ref = [r["edges"] for r in default_rows if r["task"] == task]
        lo, hi = min(ref), max(ref)
        pad = 0.1 * hi
        by_task[task] = {"edges": edges, "default_edges": ref,
                         "met_heldout": [r["met_heldout"] for r in rows if r["task"] == task],
                         "within_spread": lo - pad <= statistics.median(edges) <= hi + pad}
    return {"median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rows),
            "tasks": by_task, "all_within_spread": all(t["within_spread"] for t in by_task.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                    help="a named budget: its name, then the settings it changes")
    ap.add_argument("--default-from", type=Path, default=None, metavar="JSON",
                    help="take the default budget's runs from an earlier output of this script (same run, "
                         "tasks and seeds) instead of pruning them again")
    args = ap.parse_args()
    budgets = {"default": {}}
    for name, *pairs in args.budget:
        settings = dict(p.split("=", 1) for p in pairs)
        if "k_coefs" in settings:  # prune() takes the sweep as a list
            settings["k_coefs"] = [float(k) for k in settings["k_coefs"].split(",")]
        budgets[name] = settings
    run = load_run(args.run_dir)
    torch.manual_seed(0)
    results = {}
    if args.default_from:
        earlier = json.loads(args.default_from.read_text())["budgets"]["default"]
        results["default"] = {"settings": {}, "runs": [r for r in earlier["runs"] if r["task"] in args.tasks
                                                       and r["seed"] in args.seeds], "from": str(args.default_from)}
        budgets.pop("default")
    for name, settings in budgets.items():
        rows = []
        for task in args.tasks:
            for seed in args.seeds:
                rows.append(one(run, task, seed, args.threads, settings))
                r = rows[-1]
                print(f"{name} {task} seed {seed}: {r['nodes']} nodes / {r['edges']} edges, loss "
                      f"{r['circuit_loss']}, {r['cpu_seconds']} CPU s", file=sys.stderr, flush=True)
        results[name] = {"settings": settings, "runs": rows}
    for name, res in results.items():
        res["summary"] = summarise(res["runs"], results["default"]["runs"])
        res["summary"]["cpu_ratio_to_default"] = round(
            res["summary"]["median_cpu_seconds"] / results["default"]["summary"]["median_cpu_seconds"], 3) \
            if "summary" in results["default"] else 1.0
    print(json.dumps({"run": args.run_dir, "threads": args.threads, "budgets": results}, indent=2))


if __name__ == "__main__":
    main()
