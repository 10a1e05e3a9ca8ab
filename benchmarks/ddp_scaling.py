"""DDP scaling on this machine: training tokens/s with 1 and 2 processes, and the cost of
the top-k mask check that compares masks across ranks.

Prints one JSON object:
- ``tokens_per_s``: ``"1proc_1thread"``, ``"1proc_2threads"`` and ``"2proc_1thread"``
  (torchrun, gloo), the same global batch and the same real ``Trainer.train_step``;
- ``speedup_2proc_over_1proc``: 2 processes x 1 thread over 1 process x 1 thread;
- ``mask_check_ms``: one ``Trainer.check_masks()`` (a hash of every sparse tensor's
  nonzero positions plus one all-gather) with 2 processes, and ``mask_check_over_step``:
  that over the time of one step, i.e. the overhead of checking every step (the default,
  every ``log_every`` steps, costs that divided by ``log_every``).

    python benchmarks/ddp_scaling.py [--preset cpu-tiny] [--steps 40] [--data DIR]

Without ``--data`` a small data dir (``build_tiny_data``) is built in a temp folder.
Timings on a shared machine are noisy: each figure is the median of ``--repeats`` blocks.
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
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    """Runs under torchrun: time steps, then mask checks; rank 0 writes the figures."""
    import torch

    from sparsecircuits.config import build_config
    from sparsecircuits.train.trainer import Trainer

    sets = [f"data.data_dir={args.data}", f"train.threads={args.threads}", "train.steps=100000",
            "train.anneal_frac=0", "train.eval_every=1000000", "train.checkpoint_every=1000000"]
    cfg = build_config(args.preset, sets=sets)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, Path(out) / "run", progress=False, check_masks_every=0)
        for _ in range(args.warmup):
            tr.train_step()
        blocks = []
        per_block = max(1, args.steps // args.repeats)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(per_block):
                tr.train_step()
            blocks.append((time.perf_counter() - t0) / per_block)
        step_s = statistics.median(blocks)
        checks = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.checks // args.repeats):
                tr.check_masks()
            checks.append((time.perf_counter() - t0) / max(1, args.checks // args.repeats))
        check_s = statistics.median(checks)
        tokens = cfg.train.batch_size * cfg.seq_len
        if tr.dist.is_main:
            Path(args.result).write_text(json.dumps({
                "world_size": tr.dist.world_size, "threads": torch.get_num_threads(),
                "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s, "mask_check_ms": check_s * 1e3}))
        if tr.dist.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def launch(nproc: int, threads: int, args: argparse.Namespace, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               __file__, "--worker", "--result", str(result), "--data", data, "--threads", str(threads),
               "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--checks", str(args.checks)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checks", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from sparsecircuits.data.build import build_tiny_data

            data = str(build_tiny_data(Path(tmp) / "data"))
        one = launch(1, 1, args, data)
        one_two = launch(1, 2, args, data)
        two = launch(2, 1, args, data)
    print(json.dumps({
        "preset": args.preset, "cpu_count": os.cpu_count(),
        "tokens_per_s": {"1proc_1thread": round(one["tokens_per_s"]), "1proc_2threads": round(one_two["tokens_per_s"]),
                         "2proc_1thread": round(two["tokens_per_s"])},
        "step_ms": {"1proc_1thread": round(one["step_ms"], 2), "1proc_2threads": round(one_two["step_ms"], 2),
                    "2proc_1thread": round(two["step_ms"], 2)},
        "speedup_2proc_over_1proc": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "mask_check_ms": round(two["mask_check_ms"], 3),
        "mask_check_over_step": round(two["mask_check_ms"] / two["step_ms"], 4),
    }, indent=2))


if __name__ == "__main__":
    main()
