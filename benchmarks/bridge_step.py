"""CPU time of one bridged training step (forward and backward of every term) against the
number of locations whose hybrid forwards run per step (``bridge train --hybrid-locations``),
beside a plain training step of the same sparse model, all in one process.

    python benchmarks/bridge_step.py DENSE_RUN [--preset cpu-small] [--batch 32] [--steps 3]

Prints JSON: per setting the median CPU seconds of a step and its ratio to the plain step.
The sparse model is freshly initialised (its speed does not depend on training); the
dense run gives the frozen model and the width of the bridges.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from sparsecircuits.bridges.model import Bridges, BridgeSpec, bridge_terms
from sparsecircuits.config import build_config
from sparsecircuits.model.gpt import GPT, topk_width
from sparsecircuits.run import load_run


def cpu_time(step, n: int) -> float:
    step()  # warm-up: allocator and kernels
    times = []
    for _ in range(n):
        c0 = time.process_time()
        step()
        times.append(time.process_time() - c0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dense_run")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (median)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dense = load_run(args.dense_run).model.eval()
    for p in dense.parameters():
        p.requires_grad_(False)
    cfg = build_config(args.preset)
    cfg.model.vocab_size = dense.cfg.vocab_size
    cfg.model.n_layer = dense.cfg.n_layer
    torch.manual_seed(0)
    sparse = GPT(cfg.model)
    spec = BridgeSpec(cfg.model.n_layer, dense.cfg.d_model, cfg.model.d_model,
                      topk_width(cfg.model.afrac, cfg.model.d_model), 0.02, 0.02)
    bridges = Bridges(spec)
    x = torch.randint(0, cfg.model.vocab_size, (args.batch, cfg.train.seq_len + 1))
    xs, ys = x[:, :-1], x[:, 1:]

    def plain() -> None:
        sparse.zero_grad(set_to_none=True)
        F.cross_entropy(sparse(xs).flatten(0, 1), ys.flatten()).backward()

    def bridged(sample: int):
        def step() -> None:
            sparse.zero_grad(set_to_none=True)
            bridges.zero_grad(set_to_none=True)
            terms = bridge_terms(dense, sparse, bridges, xs, sample=sample, generator=torch.Generator().manual_seed(0))
            lm = F.cross_entropy(terms.sparse_logits.flatten(0, 1).float(), ys.flatten())
            (lm + terms.bridge_loss(spec)).backward()
        return step

    base = cpu_time(plain, args.steps)
    n_loc = 2 * cfg.model.n_layer
    rows = {"plain": {"cpu_seconds": round(base, 3), "ratio_to_plain": 1.0}}
    for sample in sorted({1, 2, 4, 0} - {n_loc}):
        t = cpu_time(bridged(sample), args.steps)
        rows[f"hybrid_locations={sample or n_loc}"] = {"cpu_seconds": round(t, 3),
                                                       "ratio_to_plain": round(t / base, 2)}
    print(json.dumps({"dense_run": args.dense_run, "preset": args.preset, "batch": args.batch,
                      "seq_len": cfg.train.seq_len, "threads": args.threads, "locations": n_loc,
                      "steps": rows}, indent=2))


if __name__ == "__main__":
    main()
