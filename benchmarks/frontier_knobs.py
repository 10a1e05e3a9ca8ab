"""Which knobs move circuit size: one task's circuits over a set of trained runs and
pruning variants, pruned exactly as ``sparsecircuits frontier --grid cpu`` prunes.

The frontier compares dense and sparse models; this script asks why the sizes differ.
Give it runs that differ in one knob (width at a fixed number of nonzeros, AbsTopK on or
off, training length: train them with ``sparsecircuits train`` and the ``--set`` lines of
a grid point) and pruning variants (``mean`` = the frontier's own, ``zero`` = zero
ablation, ``steps3x`` = three times the optimisation steps).  Circuits are cached next to
each run (``circuits/<task>`` for ``mean``, ``circuits/<task>@<variant>`` otherwise), so
the frontier's own circuits are reused.

Prints one JSON object: ``rows``, one per (run, variant), with the run's shape
(``density``, ``width``, ``n_layer``, ``afrac``, ``steps``, ``nonzeros``), its
``val_loss``, the full model's task accuracy and, per target, ``nodes`` / ``edges``
(``null`` when the target was not reached).

    python benchmarks/frontier_knobs.py runs/frontier/w64-dense runs/frontier/w32-s4 \\
        --task single_double_quote --targets 0.3 --variants mean,zero
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sparsecircuits.analysis.frontier import GRIDS, count_nonzeros, prune_sizes, val_loss
from sparsecircuits.run import load_run


VARIANTS = {  # pruning settings of each variant, from the grid's own
    "mean": lambda s: dict(s),
    "zero": lambda s: {**s, "ablation": "zero"},
    "steps3x": lambda s: {**s, "steps": 3 * int(s["steps"])},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--task", default="single_double_quote")
    ap.add_argument("--targets", default="0.3", help="comma-separated target task losses")
    ap.add_argument("--variants", default="mean,zero")
    ap.add_argument("--grid", default="cpu", choices=list(GRIDS), help="whose pruning settings to use")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true",
                    help="prune runs below 80%% task accuracy too (their rows say forced)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    targets = [float(t) for t in args.targets.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:  # before any pruning, not after the first run's
        ap.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    base = dict(GRIDS[args.grid]["prune"])
    rows = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        cfg = run.config
        nz, _ = count_nonzeros(run.model)
        for variant in variants:
            t0 = time.perf_counter()
            r = prune_sizes(run, args.task, targets, VARIANTS[variant](base), force=args.force,
                            progress=False, variant=None if variant == "mean" else variant)
            rows.append({"run": str(run_dir), "variant": variant, "density": cfg.train.density,
                         "width": cfg.model.d_model, "n_layer": cfg.model.n_layer, "afrac": cfg.model.afrac,
                         "steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "nonzeros": nz,
                         "val_loss": val_loss(Path(run_dir)), "skipped": r.get("skipped"),
                         "full_accuracy": r.get("full_accuracy"), "forced": r.get("forced"), "targets": r.get("targets"),
                         "seconds": round(time.perf_counter() - t0, 1)})
    print(json.dumps({"task": args.task, "targets": targets, "prune": base, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
