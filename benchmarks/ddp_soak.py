"""Soak test of distributed training: the same short torchrun training, N times in a row,
counting the runs that did not end cleanly.

Each run is what a cluster user types, into a fresh folder:

    torchrun --standalone --nproc_per_node=2 -m sparsecircuits train --preset cpu-tiny \\
        --set train.steps=30 --set train.threads=1 --no-progress --out RUN [--data DIR]

A run fails when torchrun exits non-zero (it does when any rank does, a rank killed by a
signal included); an abort is a failure whose output shows SIGABRT or "terminate called".
Such failures are rare and timing-dependent (a rank that aborts while the interpreter
shuts down, after the run itself succeeded), hence many runs; ``--jobs`` runs several at
once, and the extra load makes timing races likelier, not rarer.

Prints one JSON object: ``runs``, ``failures``, ``aborts``, the first few failures (exit
code and the end of their output), the median seconds per run and the total.

    python benchmarks/ddp_soak.py [--runs 100] [--steps 30] [--nproc 2] [--jobs 1] [--data DIR]

Without ``--data`` a small data dir (``build_tiny_data``) is built in a temp folder first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ABORT_MARKS = ("SIGABRT", "terminate called", "exitcode  : -6")


def command(args: argparse.Namespace, data: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
            "-m", "sparsecircuits", "train", "--preset", args.preset, "--data", data,
            "--set", f"train.steps={args.steps}", "--set", "train.threads=1", "--no-progress", "--out", str(out)]


def one_run(args: argparse.Namespace, data: str, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(command(args, data, out), env=env, capture_output=True, text=True,
                          timeout=args.timeout)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    ok = proc.returncode == 0 and "trained" in proc.stdout
    return {"rc": proc.returncode, "ok": ok, "abort": any(m in text for m in ABORT_MARKS),
            "seconds": seconds, "tail": "" if ok else text[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--data", default=None)
    ap.add_argument("--timeout", type=float, default=600, help="seconds before one run counts as hung")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from sparsecircuits.data.build import build_tiny_data

            data = str(build_tiny_data(Path(tmp) / "data"))
        t0 = time.perf_counter()

        def run(i: int) -> dict:
            try:
                return one_run(args, data, Path(tmp) / f"run_{i:04d}")
            except subprocess.TimeoutExpired:
                return {"rc": None, "ok": False, "abort": False, "seconds": args.timeout, "tail": "hung"}

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(run, range(args.runs)))
        total = time.perf_counter() - t0
    failed = [dict(run=i, rc=r["rc"], tail=r["tail"]) for i, r in enumerate(results) if not r["ok"]]
    print(json.dumps({
        "runs": args.runs, "nproc": args.nproc, "steps": args.steps, "jobs": args.jobs,
        "failures": len(failed), "aborts": sum(r["abort"] for r in results),
        "first_failures": failed[:3],
        "seconds_per_run_median": round(statistics.median(r["seconds"] for r in results), 2),
        "total_s": round(total, 1), "cpu_count": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
