"""Which mask-optimiser settings give smaller circuits: ours against the paper's (appendix A.5).

Each variant prunes the same task with the same items, once per seed, and reports the
circuit's size and its loss on held-out items.  Variants (all on top of the defaults):

* ``ours``: the defaults (``PruneSettings``);
* ``beta2``: AdamW beta2 0.95 (the paper's) instead of 0.999;
* ``clip``: the mask gradient's L2 norm clipped to 1;
* ``warmup``: 5% linear lr warmup (Table 2's search centre);
* ``paper``: beta2 0.95, clipping and warmup together;
* ``paper-lr``: ``paper`` at the paper's lr 3e-3 (ours is 1e-2).

Prints one JSON object: ``rows`` (one per variant and seed: ``n_nodes``, ``n_edges``,
``circuit_loss``, ``met`` on held-out items, ``seconds``) and ``summary`` per variant
(geometric mean of edges over the seeds whose circuit met the target, how many met).

    python benchmarks/prune_optimiser.py RUN_DIR --task single_double_quote --seeds 0,1 [--force]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sparsecircuits.circuit_sizes import geometric_mean
from sparsecircuits.circuits.prune import prune
from sparsecircuits.config import TARGET_LOSS
from sparsecircuits.run import load_run

VARIANTS = {
    "ours": {},
    "beta2": {"beta2": 0.95},
    "clip": {"grad_clip": 1.0},
    "warmup": {"warmup_frac": 0.05},
    "paper": {"beta2": 0.95, "grad_clip": 1.0, "warmup_frac": 0.05},
    "paper-lr": {"beta2": 0.95, "grad_clip": 1.0, "warmup_frac": 0.05, "lr": 3e-3},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--task", default="single_double_quote")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1", help="comma-separated pruning seeds (the task items stay those of 0)")
    ap.add_argument("--target-loss", type=float, default=TARGET_LOSS)
    ap.add_argument("--ablation", default="mean", choices=("mean", "zero"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)
    rows = []
    for variant in variants:
        for seed in seeds:
            t0 = time.perf_counter()
            c = prune(run, args.task, target_loss=args.target_loss, ablation=args.ablation, steps=args.steps,
                      seed=seed, force=args.force, progress=False, threads=args.threads, **VARIANTS[variant])
            m = c.metrics
            rows.append({"variant": variant, "seed": seed, "n_nodes": m["n_nodes"], "n_edges": m["n_edges"],
                         "circuit_loss": round(m["circuit_loss"], 4), "train_loss": round(m["circuit_train_loss"], 4),
                         "met": m["circuit_loss"] <= args.target_loss, "k_coef": c.settings["k_coef"],
                         "seconds": round(time.perf_counter() - t0, 1)})
    summary = {}
    for variant in variants:
        met = [r["n_edges"] for r in rows if r["variant"] == variant and r["met"]]
        gm = geometric_mean(met)
        summary[variant] = {"geomean_edges_met": None if gm is None else round(gm, 1), "n_met": len(met),
                            "n": len(seeds)}
    print(json.dumps({"run": args.run_dir, "task": args.task, "target_loss": args.target_loss, "rows": rows,
                      "summary": summary}))


if __name__ == "__main__":
    main()
