"""Capability per CPU-hour: which of the 20 tasks each preset learns, per seed, sparse and dense.

For every (preset, seed, density) it trains a run (or reuses a finished one), times the
training process (wall clock and CPU seconds; on a machine shared with other work the
CPU time is the better estimate of what the same run takes alone), scores all tasks on
held-out items and runs the leak check on the training data once. Prints one JSON
object; a task counts as learned at 80% held-out accuracy (pruning's own bar).

    python benchmarks/tasks_per_hour.py --presets cpu-small cpu-base --seeds 0 1 --dense \
        --out runs/tasks-per-hour [--threads 2] [--n 200] [--set train.steps=...] [--kept]

With ``--kept`` each run's kept steps (``train.keep_checkpoints``; ``cpu-base`` keeps six)
are scored too, under ``kept``: tasks learned against training minutes from one run.

Each run lives in OUT/<preset>-s<seed>[-dense]; ``timing.json`` beside its weights keeps
the measured training time, so a second call only re-scores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from sparsecircuits import load_run
from sparsecircuits.config import LEARNED_ACCURACY, build_config
from sparsecircuits.data.build import resolve_data
from sparsecircuits.data.leaks import find_leaks
from sparsecircuits.rundir import RunDir
from sparsecircuits.tasks.evaluation import evaluate_suite
from sparsecircuits.tasks.python_tasks import TASKS


def train_timed(preset: str, seed: int, dense: bool, out: Path, threads: int, sets: list[str]) -> dict:
    """Train in a child process; its wall and CPU seconds (user + system)."""
    base = [sys.executable, "-m", "sparsecircuits", "train", "--no-progress", "--set", f"train.threads={threads}"]
    resumed = (out / "checkpoints").is_dir() and not RunDir(out).weights.exists()
    if resumed:
        args = base + ["--resume", str(out)]  # a stopped run continues from its settings and checkpoint
    else:
        args = base + ["--preset", preset, "--out", str(out), "--set", f"seed={seed}"]
        if dense:
            args += ["--set", "train.density=1"]
        for s in sets:
            args += ["--set", s]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # a resumed run's times cover only the part after its checkpoint: say so beside them
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads": threads, "resumed": resumed}


def measure(preset: str, seed: int, dense: bool, root: Path, threads: int, n: int, sets: list[str],
            kept: bool = False) -> dict:
    out = root / f"{preset}-s{seed}{'-dense' if dense else ''}"
    timing_path = out / "timing.json"
    if not RunDir(out).weights.exists() or not timing_path.exists():
        timing = train_timed(preset, seed, dense, out, threads, sets)
        timing_path.write_text(json.dumps(timing))
    timing = json.loads(timing_path.read_text())
    run = load_run(out)
    acc = score(run, n)
    metrics, _ = RunDir(out).read_metrics()
    val = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    # per-token losses of different tokenizers are not comparable; per byte of val text they are
    meta = json.loads((Path(run.config.data.data_dir) / "meta.json").read_text())
    per_byte = None if not val else val[-1] * meta["val_tokens"] / meta["val_bytes"]
    learned = sorted(t for t, a in acc.items() if a >= LEARNED_ACCURACY)
    return {"preset": preset, "seed": seed, "density": run.config.train.density, "run": str(out),
            "training_minutes_wall": round(timing["wall_s"] / 60, 2),
            "training_minutes_cpu": None if timing.get("cpu_s") is None else round(timing["cpu_s"] / 60, 2),
            "threads": timing["threads"], "timing_resumed": timing.get("resumed", False),
            "tokens": run.config.train.steps * run.config.train.batch_size * run.config.seq_len,
            "val_loss": val[-1] if val else None, "val_nats_per_byte": per_byte,
            "n_learned": len(learned), "learned": learned,
            "accuracy": acc, "data_dir": run.config.data.data_dir,
            "kept": [score_kept(out, step, timing, n) for step in RunDir(out).kept_steps()] if kept else []}


def score(run, n: int) -> dict[str, float]:
    """Held-out accuracy of every task, ``n`` pairs each."""
    return {r["task"]: round(r["accuracy"], 4) for r in evaluate_suite(run, list(TASKS), n=n)}


def score_kept(out: Path, step: int, timing: dict, n: int) -> dict:
    """The tasks learned by the weights kept at ``step``: one point of the tasks-against-time
    curve. Its minutes are the run's training time times step / steps (evaluation and
    checkpoint writes are spread evenly enough over the run for that)."""
    run = load_run(out, checkpoint=step)
    acc = score(run, n)
    frac = step / run.config.train.steps
    learned = sorted(t for t, a in acc.items() if a >= LEARNED_ACCURACY)
    return {"step": step, "tokens": step * run.config.train.batch_size * run.config.seq_len,
            "training_minutes_wall": round(frac * timing["wall_s"] / 60, 2),
            "training_minutes_cpu": None if timing.get("cpu_s") is None else round(frac * timing["cpu_s"] / 60, 2),
            "n_learned": len(learned), "learned": learned, "accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["cpu-small"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--dense", action="store_true", help="also train each preset at density 1")
    ap.add_argument("--out", type=Path, default=Path("runs/tasks-per-hour"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=200, help="held-out pairs per task (default 200)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    ap.add_argument("--leak-items", type=int, default=200, help="held-out pairs per task in the leak check")
    ap.add_argument("--kept", action="store_true",
                    help="also score the weights kept during training (train.keep_checkpoints): tasks against time")
    ap.add_argument("--no-leak-check", action="store_true", help="skip the leak check (run it once per data dir)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, leaks = [], {}
    for preset in args.presets:
        data = str(resolve_data(build_config(preset, sets=args.set).data))
        if data not in leaks and not args.no_leak_check:
            leaks[data] = find_leaks(data, TASKS, n_items=args.leak_items).to_json()
            leaks[data].pop("leaks") if not leaks[data]["n_leaks"] else None
        for seed in args.seeds:
            for dense in ([False, True] if args.dense else [False]):
                row = measure(preset, seed, dense, args.out, args.threads, args.n, args.set, kept=args.kept)
                results.append(row)
                print(f"{preset} seed {seed} density {row['density']:g}: {row['n_learned']}/20 learned, "
                      f"val {row['val_loss']:.3f}, {row['training_minutes_wall']} min wall "
                      f"({row['training_minutes_cpu']} CPU)", file=sys.stderr, flush=True)
    print(json.dumps({"learned_at": LEARNED_ACCURACY, "cpu_count": os.cpu_count(), "runs": results,
                      "leak_check": leaks}, indent=2))


if __name__ == "__main__":
    main()
