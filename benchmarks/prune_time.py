"""Wall time of pruning one task with the default settings (target: under 15 s for the
``cpu-small`` demo model on 2 CPU cores, node means included when they are not cached yet).

Prints one JSON object: ``seconds`` (the whole ``prune`` call), ``steps`` (optimisation
steps in total over the k_coef sweep), ``nodes``, ``edges``, ``circuit_loss`` (test items,
calibrated), ``full_accuracy``, plus ``means_cached`` (whether node means were already on
disk), ``threads`` (torch's thread count), ``lanes`` (as asked; 0: one per thread),
``cpu_seconds`` (process CPU time, a check on ``seconds`` when the machine is shared) and
``timings`` (the circuit's own split of its time).

With ``--compare REV`` the same measurement runs ``--repeats`` times on this tree's library
and on revision REV's, alternately (``compare.py``), and the object holds both sides (the
fastest repeat of each), their circuits, the before/after ratios of wall and CPU time and
the load average (other jobs on the machine).

    python benchmarks/prune_time.py [RUN_DIR] [--task single_double_quote] [--fresh-means]
    python benchmarks/prune_time.py RUN_DIR --task while_return_true --compare HEAD~3 --repeats 2
    python benchmarks/prune_time.py RUN_DIR --task var_if --threads 2 --lanes 1   # two intra-op threads, no lanes
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lanes", type=int, default=0,
                    help="lanes (circuits/lanes.py; default: one per thread); 1 runs the chunks in turn")
    ap.add_argument("--compare", metavar="REV", help="also time revision REV's library, alternately")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the comparison")
    args = ap.parse_args()
    if args.compare:
        compare(args)
        return

    means = RunDir(args.run_dir).node_means
    if args.fresh_means and means.is_file():
        means.unlink()
    cached = means.is_file()
    t_load = time.perf_counter()
    run = load_run(args.run_dir)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    c0 = time.process_time()
    lanes = {"lanes": args.lanes} if args.lanes else {}  # (revisions before lanes lack the setting)
    c = prune(run, args.task, ablation=args.ablation, force=args.force, progress=False, threads=args.threads, **lanes,
              seed=args.seed)
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
        "lanes": c.settings.get("lanes"),  # 0: one per thread; None: a revision before lanes
        "timings": m.get("timings"),
        "node_ids": c.node_ids,
    }))


def compare(args) -> None:
    """This tree against ``args.compare``, alternately; one JSON object with both sides."""
    from compare import load_average, measure, source_tree

    old_src = source_tree(args.compare)
    child = [args.run_dir, "--task", args.task, "--ablation", args.ablation, "--threads", str(args.threads),
             *(["--lanes", str(args.lanes)] if args.lanes else []),
             "--seed", str(args.seed)] + (["--force"] if args.force else [])
    load = [load_average()]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(max(1, args.repeats)):
        runs["before"].append(measure(Path(__file__), child, old_src))
        runs["after"].append(measure(Path(__file__), child, None))
        load.append(load_average())
    best = {side: min(rs, key=lambda r: r["cpu_seconds"]) for side, rs in runs.items()}
    before, after = best["before"], best["after"]
    same = before["node_ids"] == after["node_ids"]
    for side in best.values():
        side.pop("node_ids")
    print(json.dumps({
        "task": args.task, "revision": args.compare, "before": before, "after": after,
        "speedup_seconds": round(before["seconds"] / after["seconds"], 2),
        "speedup_cpu_seconds": round(before["cpu_seconds"] / after["cpu_seconds"], 2),
        "same_nodes": same, "repeats": args.repeats, "load_average": load,
    }))


if __name__ == "__main__":
    main()
