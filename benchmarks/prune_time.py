"""Wall time of pruning one task with the default settings (target: under 2 minutes for
``cpu-small`` on 2 CPU cores, node means included when they are not cached yet).

Prints one JSON object: ``seconds`` (the whole ``prune`` call), ``steps`` (optimisation
steps in total over the k_coef sweep), ``nodes``, ``edges``, ``circuit_loss`` (test items,
calibrated), ``full_accuracy``, plus ``means_cached`` (whether node means were already on
disk), ``threads`` (torch's thread count) and ``cpu_seconds`` (process CPU time, a
check on ``seconds`` when the machine is shared).

    python benchmarks/prune_time.py [RUN_DIR] [--task single_double_quote] [--fresh-means]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sparsecircuits.circuits.prune import prune
from sparsecircuits.run import load_run
from sparsecircuits.rundir import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/demo")
    ap.add_argument("--task", default="single_double_quote")
    ap.add_argument("--ablation", default="mean", choices=("mean", "zero"))
    ap.add_argument("--fresh-means", action="store_true", help="delete cached node means first (timed too)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's own)")
    args = ap.parse_args()

    means = RunDir(args.run_dir).node_means
    if args.fresh_means and means.is_file():
        means.unlink()
    cached = means.is_file()
    t_load = time.perf_counter()
    run = load_run(args.run_dir)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    c0 = time.process_time()
    c = prune(run, args.task, ablation=args.ablation, force=args.force, progress=False, threads=args.threads)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    m = c.metrics
    print(json.dumps({
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "load_seconds": round(load_s, 2),
        "steps": c.settings["steps"] * len(c.settings["k_coefs"]),
        "nodes": m["n_nodes"],
        "edges": m["n_edges"],
        "circuit_loss": round(m["circuit_loss"], 4),
        "circuit_accuracy": m["circuit_accuracy"],
        "full_accuracy": m["full_accuracy"],
        "target_met": m.get("target_met"),
        "k_coef": c.settings.get("k_coef"),
        "means_cached": cached,
        "threads": args.threads or torch.get_num_threads(),
        "timings": m.get("timings"),
    }))


if __name__ == "__main__":
    main()
