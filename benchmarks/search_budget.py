"""Circuit size against the pruning search's budget (``prune --search N``, N = 1, 4, 16, 64).

One search of the largest budget per task, and the result of every smaller budget read
off its first N trials.  That is exact, not an approximation: trials are proposed in
rounds of ``--batch`` (8) whatever the executor, the first ones being the defaults and
then Optuna's seeded random start-up trials, so a search of N trials with the same seed
runs the same first N trials as a longer one (the search test checks this), and
``best_trial`` over those N is the circuit an N-trial search returns.

For each task and budget: the chosen trial's nodes, edges (the paper's count: nonzero
weights between kept nodes), held-out loss and accuracy, whether it met the target on
held-out items, and the CPU seconds an N-trial search costs here: the shared set-up (task
items, full-model scores, node means) + the first N trials + the final circuit's
rebuild (its graph and loss-vs-size curve), all process time of this single process
(``--jobs 1``).  ``--budgets 0,...`` adds plain ``prune`` (the default k_coef sweep) as a
baseline row, measured on its own.  Prints one JSON object.

    python benchmarks/search_budget.py RUN_DIR --tasks var_if,while_return_true [--budgets 1,4,16,64]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sparsecircuits.circuits.prune import prune
from sparsecircuits.circuits.search import SearchFailedError, best_trial, search
from sparsecircuits.config import TARGET_LOSS
from sparsecircuits.errors import UserError
from sparsecircuits.run import load_run


def _trial_row(t: dict | None, n: int, cpu: float, wall: float) -> dict:
    row = {"budget": n, "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1)}
    if t is None:
        return {**row, "met": False, "n_nodes": None, "n_edges": None}
    return {**row, "met": True, "best_trial": t["number"], "n_nodes": t["n_nodes"], "n_edges": t["n_edges"],
            "heldout_loss": round(t["heldout_loss"], 4), "heldout_accuracy": round(t["heldout_accuracy"], 4),
            "params": {k: float(f"{v:.3g}") for k, v in t["params"].items()}}


def rows_from_trials(trials: list[dict], budgets: list[int], overhead_cpu: float = 0.0,
                     overhead_wall: float = 0.0) -> list[dict]:
    """One row per budget N from the first N trials (N beyond the trials run are left out)."""
    rows = []
    for n in sorted(b for b in budgets if 0 < b <= len(trials)):
        first = trials[:n]
        rows.append(_trial_row(best_trial(first), n, overhead_cpu + sum(t["cpu_seconds"] for t in first),
                               overhead_wall + sum(t["seconds"] for t in first)))
    return rows


def ladder(task: str, run, budgets: list[int], common: dict, batch: int, log=None) -> list[dict]:
    """Rows for one task: plain prune for budget 0, the rest from one search of max(budgets)."""
    rows = []
    if 0 in budgets:
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            c = prune(run, task, **common)
        except UserError as exc:
            rows.append({"budget": 0, "error": str(exc)})
        else:
            m = c.metrics
            rows.append({"budget": 0, "n_nodes": m["n_nodes"], "n_edges": m["n_edges"],
                         "heldout_loss": round(m["circuit_loss"], 4), "heldout_accuracy": round(m["circuit_accuracy"], 4),
                         "met": m["circuit_loss"] <= common["target_loss"],
                         "cpu_seconds": round(time.process_time() - c0, 1),
                         "wall_seconds": round(time.perf_counter() - t0, 1)})
    ns = sorted(n for n in budgets if n > 0)
    if not ns:
        return rows
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        on_trial = None if log is None else (lambda t: print(json.dumps({"task": task, **t}), file=log, flush=True))
        record = search(run, task, ns[-1], batch=batch, on_trial=on_trial, **common).metrics["search"]
    except SearchFailedError as exc:  # no trial met the target: the rows say so
        record = exc.record
    except UserError as exc:  # e.g. a task the model has not learned
        return rows + [{"budget": n, "error": str(exc)} for n in ns]
    total_cpu, total_wall = time.process_time() - c0, time.perf_counter() - t0
    if record.get("skipped"):  # the empty circuit meets every target: no trial ran, at any budget
        return rows + [{"budget": n, "n_nodes": 0, "n_edges": 0, "met": True, "note": record["skipped"],
                        "cpu_seconds": round(total_cpu, 1)} for n in ns]
    trials = record["trials"]
    trial_cpu = sum(t["cpu_seconds"] for t in trials)
    trial_wall = sum(t["seconds"] for t in trials)
    overhead_cpu, overhead_wall = total_cpu - trial_cpu, total_wall - trial_wall  # set-up + final circuit
    rows += rows_from_trials(trials, ns, overhead_cpu, overhead_wall)
    rows[-1]["search_overhead_cpu_seconds"] = round(overhead_cpu, 1)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tasks", default="single_double_quote", help="comma-separated built-in task names")
    ap.add_argument("--budgets", default="1,4,16,64", help="comma-separated numbers of trials (0 = plain prune)")
    ap.add_argument("--batch", type=int, default=8, help="trials proposed per round")
    ap.add_argument("--target-loss", type=float, default=TARGET_LOSS)
    ap.add_argument("--ablation", default="mean", choices=("mean", "zero", "resample"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="also tasks the model has not learned")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a pruning setting (as prune --set); the defaults when absent")
    ap.add_argument("--trials-log", default=None, metavar="FILE",
                    help="append every trial as a JSON line as its round ends; with --from-log, read it instead")
    ap.add_argument("--from-log", action="store_true",
                    help="no pruning: the rows of the trials in --trials-log (a search stopped early; trial CPU only)")
    args = ap.parse_args()
    from sparsecircuits.commands.prune import settings_overrides

    budgets = sorted({int(b) for b in args.budgets.split(",")})
    if args.from_log:
        trials: dict[str, list[dict]] = {}
        with open(args.trials_log) as f:
            for line in f:
                t = json.loads(line)
                trials.setdefault(t["task"], []).append(t)
        print(json.dumps({"trials_log": args.trials_log, "cpu_seconds": "trials only, no set-up or final circuit",
                          "tasks": {k: rows_from_trials(v, budgets) for k, v in trials.items()}}, indent=1))
        return

    torch.set_num_threads(1)
    run = load_run(args.run_dir)
    overrides = settings_overrides(args.overrides)
    common = dict(target_loss=args.target_loss, ablation=args.ablation, seed=args.seed, force=args.force,
                  progress=False, threads=1, **overrides)
    out = {"run": os.path.abspath(args.run_dir), "target_loss": args.target_loss, "seed": args.seed,
           "budgets": budgets, "settings": {k: str(v) for k, v in overrides.items()} or "defaults",
           "threads": 1, "load_average": os.getloadavg(), "tasks": {}}
    log = open(args.trials_log, "a") if args.trials_log else None
    for task in args.tasks.split(","):
        out["tasks"][task] = ladder(task, run, budgets, common, args.batch, log)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
