"""Circuit size against the pruning search's budget: ``prune --search N`` for several N.

For each task and each budget N one search of N trials is run from scratch (same seed,
so a larger budget proposes the same first trials and more), and its circuit's
``n_edges`` and ``n_nodes``, held-out loss and wall time are recorded.  ``N = 0`` stands
for plain ``prune`` (the default k_coef sweep), the baseline the search should beat.

Prints one JSON object: ``rows`` (``task``, ``budget``, ``n_edges``, ``n_nodes``,
``circuit_loss``, ``met`` (held-out loss <= target), ``seconds``, ``cpu_seconds``,
``best_trial``), or ``error`` in a row whose search found no passing circuit.

    python benchmarks/prune_search.py RUN_DIR --tasks single_double_quote,lambda_func \\
        [--budgets 0,1,4,16,64] [--jobs 2] [--ray auto] [--steps 60] [--target-loss 0.15]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sparsecircuits.circuits.prune import prune
from sparsecircuits.circuits.search import DEFAULT_BATCH, search
from sparsecircuits.config import TARGET_LOSS
from sparsecircuits.errors import UserError
from sparsecircuits.run import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tasks", default="single_double_quote", help="comma-separated built-in task names")
    ap.add_argument("--budgets", default="0,1,4,16,64", help="comma-separated numbers of trials (0 = plain prune)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--ray", default=None, help="Ray address for the trials")
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--target-loss", type=float, default=TARGET_LOSS)
    ap.add_argument("--ablation", default="mean", choices=("mean", "zero"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]
    run = load_run(args.run_dir)
    common = dict(target_loss=args.target_loss, ablation=args.ablation, steps=args.steps, seed=args.seed,
                  force=args.force, progress=False, threads=args.threads)
    rows = []
    for task in args.tasks.split(","):
        for n in budgets:
            t0, c0 = time.perf_counter(), time.process_time()
            row = {"task": task, "budget": n}
            try:
                if n == 0:
                    c = prune(run, task, **common)
                else:
                    c = search(run, task, n, jobs=args.jobs, ray_address=args.ray, batch=args.batch, **common)
            except UserError as exc:
                row["error"] = str(exc)
            else:
                m = c.metrics
                row.update(n_edges=m["n_edges"], n_nodes=m["n_nodes"], circuit_loss=round(m["circuit_loss"], 4),
                           met=m["circuit_loss"] <= args.target_loss,
                           best_trial=m.get("search", {}).get("best_trial"))
            # cpu_seconds counts this process only (not --jobs workers or Ray)
            row.update(seconds=round(time.perf_counter() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1))
            rows.append(row)
    print(json.dumps({"run": args.run_dir, "target_loss": args.target_loss, "seed": args.seed,
                      "jobs": args.jobs, "ray": args.ray, "rows": rows}))


if __name__ == "__main__":
    main()
