"""Time per token of a frozen weight-sparse model: the plain (dense-kernel) model against ``freeze_sparse``.

Prints one JSON object. For each shape and weight density, a random model is projected to
that density (every matrix, embedding and bias, as training leaves it) and timed three
ways on the same tokens, interleaved round by round so a busy machine slows all alike,
medians kept:

- ``dense``: the model as it is (BLAS products, torch.topk AbsTopK);
- ``sparse``: ``freeze_sparse(model)``: each product's forward and backward and each AbsTopK
  site by whichever path was fastest when it was frozen;
- ``products_only``: ``freeze_sparse(model, sites=False)``, to show what the products alone give.

``fwd``: a forward without gradients; ``fwd_bwd``: a forward and a backward to the input
of block 0 (what pruning does; no weight gradients).  Times are microseconds per token;
``*_speedup`` is dense over the other.  ``products`` gives, per matrix, the paths chosen
and the dense / chosen time of its forward and backward products as measured when frozen;
``sites`` counts the AbsTopK sites run by the kernel.  ``slower_than_dense`` lists the
timings where the frozen model lost to the plain one.

    python benchmarks/sparse_inference.py [--shapes small,wide] [--densities 1,1/4,1/16,1/64,1/256]
        [--batch 8] [--seq-len 64] [--rounds 5] [--threads 1] [--clock cpu|wall]

``small`` is the cpu-small preset's model (4 layers, d_model 128, d_mlp 512); ``wide`` the
same with d_model 512, 32 heads of 16 and d_mlp 2048.  The default clock is this process's
CPU time (other processes on a shared machine do not inflate it), so keep ``--threads 1``
with it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections import Counter
from fractions import Fraction

import torch

from sparsecircuits.config import build_config
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparse_linear import freeze_sparse
from sparsecircuits.model.sparsity import nonzero_target, project_, sparse_parameter_names

SHAPES = {
    "small": {},
    "wide": {"d_model": 512, "n_head": 32, "d_head": 16, "d_mlp": 2048},
}
VARIANTS = ("dense", "sparse", "products_only")


def random_model(shape: str, density: float, seed: int = 0) -> GPT:
    """The cpu-small model (or a wider one) with every sparse parameter cut to ``density``."""
    cfg = build_config("cpu-small").model
    for key, value in SHAPES[shape].items():
        setattr(cfg, key, value)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name in sparse_parameter_names(model.named_parameters()):
            p = model.get_parameter(name)
            project_(p, nonzero_target(p.numel(), density))
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen model: no weight gradients on any variant
    return model


def forward(model: GPT, tokens: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(tokens)
    return run


def forward_backward(model: GPT, tokens: torch.Tensor, probe: torch.Tensor):
    """A forward and the gradient of a fixed projection of the logits to block 0's input."""
    def run() -> None:
        leaf = []

        def grad_leaf(x, hook):
            leaf.append(x.detach().requires_grad_(True))
            return leaf[0]

        with model.hooks([("hook_embed", grad_leaf)]):
            logits = model(tokens)
        torch.autograd.grad((logits * probe).sum(), leaf[0])
    return run


def interleaved(fns: dict[str, object], rounds: int, clock) -> dict[str, float]:
    """Median seconds of each function over ``rounds`` rounds that run each once, after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def one(shape: str, density: float, batch: int, seq_len: int, rounds: int, clock) -> dict:
    model = random_model(shape, density)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.vocab_size, (batch, seq_len), generator=gen)
    models = {"dense": model, "sparse": copy.deepcopy(model), "products_only": copy.deepcopy(model)}
    t0 = time.perf_counter()
    plan = freeze_sparse(models["sparse"], tokens)
    freeze_s = time.perf_counter() - t0
    freeze_sparse(models["products_only"], tokens, sites=False)
    probe = torch.randn(batch, seq_len, model.cfg.vocab_size, generator=gen)
    n = batch * seq_len
    out: dict = {"shape": shape, "d_model": model.cfg.d_model, "density": str(Fraction(density).limit_denominator()),
                 "freeze_seconds": round(freeze_s, 2)}
    slower = []
    for what, make in (("fwd", lambda m: forward(m, tokens)), ("fwd_bwd", lambda m: forward_backward(m, tokens, probe))):
        med = interleaved({v: make(m) for v, m in models.items()}, rounds, clock)
        for v in VARIANTS:
            out[f"{what}_{v}_us_per_token"] = round(med[v] / n * 1e6, 3)
        for v in VARIANTS[1:]:
            out[f"{what}_{v}_speedup"] = round(med["dense"] / med[v], 3)
            if med[v] > med["dense"]:
                slower.append(f"{what}_{v}")
    products = []
    for p in plan.products:
        fw, bw = p["forward_ms"], p["backward_ms"]
        products.append({"name": p["name"], "forward": p["forward"], "backward": p["backward"],
                         "forward_speedup": round(fw["dense"] / fw[p["forward"]], 2),
                         "backward_speedup": round(bw["dense"] / bw[p["backward"]], 2)})
    dense_ms = sum(p["forward_ms"]["dense"] + p["backward_ms"]["dense"] for p in plan.products)
    chosen_ms = sum(p["forward_ms"][p["forward"]] + p["backward_ms"][p["backward"]] for p in plan.products)
    out["all_products_speedup"] = round(dense_ms / chosen_ms, 3)
    out["paths"] = {"forward": dict(Counter(p["forward"] for p in plan.products)),
                    "backward": dict(Counter(p["backward"] for p in plan.products)),
                    "abstopk_sites": dict(Counter(s["path"] for s in plan.sites)),
                    "abstopk_sites_no_grad": dict(Counter(s.get("no_grad_path", s["path"]) for s in plan.sites))}
    out["slower_than_dense"] = slower
    out["products"] = products
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,wide")
    ap.add_argument("--densities", default="1,1/4,1/16,1/64,1/256")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    bad = [s for s in shapes if s not in SHAPES]
    try:
        densities = [float(Fraction(d)) for d in args.densities.split(",")]
    except (ValueError, ZeroDivisionError):
        densities = []
    if bad or not densities or not all(0 < d <= 1 for d in densities):
        print(f"error: --shapes from {list(SHAPES)}, --densities fractions in (0, 1]", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = [one(s, d, args.batch, args.seq_len, args.rounds, clock) for s in shapes for d in densities]
    print(json.dumps({"threads": torch.get_num_threads(), "clock": args.clock, "batch": args.batch,
                      "seq_len": args.seq_len, "rounds": args.rounds, "cpus": os.cpu_count(),
                      "load_average_at_start": load, "results": results}, indent=1))


if __name__ == "__main__":
    main()
