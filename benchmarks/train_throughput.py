"""Training throughput of the cpu-small shape: sparse vs dense, and FLOP/s vs the matmul peak.

Prints one JSON object:
- ``sparse_over_dense_step_time``: time per step of weight-sparse training (top-k projection
  after every step, at the target density) over the same for dense training (target: <= 1.10);
- ``matmul_peak_gflops``: the machine's fp32 peak from a large square matmul;
- ``dense_train_gflops`` and ``dense_fraction_of_peak``: dense training's achieved FLOP/s,
  counting 6 x matmul parameters x tokens plus attention (target: >= 0.40);
- ``sparse_step_s_torch_abstopk`` and ``abstopk_kernel_speedup``: the sparse step with
  AbsTopK by torch's top-k, scatter and multiply instead of the C kernel
  (``kernels.site_abstopk``; the same kept set, so the same weights), and that time over
  the kernel's (``null`` where the kernel cannot be built).

Both runs use the real trainer (the same ``train_step``) on the default stdlib data.

    python benchmarks/train_throughput.py [--preset cpu-small] [--steps 30] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from sparsecircuits.config import build_config
from sparsecircuits.model import gpt, native
from sparsecircuits.train.trainer import Trainer


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    dt = (time.perf_counter() - t0) / repeats
    return 2 * n**3 / dt / 1e9


def time_steps(preset: str, density: float, steps: int, warmup: int, data: str | None) -> tuple[float, Trainer]:
    sets = [f"train.density={density}", "train.anneal_frac=0", f"train.steps={steps + warmup + 10}",
            "train.eval_every=1000000", "train.checkpoint_every=1000000"]
    if data:
        sets.append(f"data.data_dir={data}")
    cfg = build_config(preset, sets=sets)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, out, progress=False)
        for _ in range(warmup):
            tr.train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        return (time.perf_counter() - t0) / steps, tr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    peak = matmul_peak_gflops()
    dense_t, tr = time_steps(args.preset, 1.0, args.steps, args.warmup, args.data)
    sparse_density = build_config(args.preset).train.density
    sparse_t, _ = time_steps(args.preset, sparse_density, args.steps, args.warmup, args.data)
    torch_abstopk_t = None
    if native.library() is not None:
        kernel = gpt.site_abstopk
        gpt.site_abstopk = lambda x, k: None  # SiteSparsity then runs gpt.abstopk, torch's ops
        try:
            torch_abstopk_t, _ = time_steps(args.preset, sparse_density, args.steps, args.warmup, args.data)
        finally:
            gpt.site_abstopk = kernel
    cfg = tr.cfg
    tokens = cfg.train.batch_size * cfg.seq_len
    flops = tr.model.flops_per_token() * tokens
    dense_gflops = flops / dense_t / 1e9
    print(json.dumps({
        "preset": args.preset, "threads": torch.get_num_threads(),
        "params": tr.model.num_params(), "tokens_per_step": tokens,
        "dense_step_s": dense_t, "sparse_step_s": sparse_t, "sparse_density": sparse_density,
        "sparse_over_dense_step_time": sparse_t / dense_t,
        "dense_tokens_per_s": tokens / dense_t, "sparse_tokens_per_s": tokens / sparse_t,
        "matmul_peak_gflops": peak, "dense_train_gflops": dense_gflops,
        "dense_fraction_of_peak": dense_gflops / peak,
        "sparse_step_s_torch_abstopk": torch_abstopk_t,
        "abstopk_kernel_speedup": None if torch_abstopk_t is None else torch_abstopk_t / sparse_t,
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
