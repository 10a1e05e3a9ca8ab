"""Where the time of pruning, the checks and node details goes: torch.profiler's top ops.

Profiles, on one task of a run: ``step`` (the first mask-optimisation steps of the default
k_coef sweep, forward and backward, while the runs still share one mask), ``apart`` (one
forward and backward of a step's 128 prompts under as many different masks as k_coefs, as
every step is once the runs have parted), ``probe`` (the calibrated loss of a top-K circuit on
the bisection's train items, K = ``--nodes``), ``check`` (the random_baseline check, the
report card's largest share apart from the control prunings) and ``details`` (node
details of the run's saved circuit for the task).  Prints one JSON object: per part, its
CPU seconds without the profiler and the ``--top`` ops by self CPU time with their share.

    python benchmarks/prune_profile.py RUN_DIR --task while_return_true [--nodes 30] [--top 8]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile


def _profiled(fn, top: int) -> dict:
    fn()  # warm-up (the C kernels compile and load on first use)
    c0 = time.process_time()
    fn()
    cpu = time.process_time() - c0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {"cpu_seconds": round(cpu, 3),
            "top": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                    for e in events[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--task", default="while_return_true")
    ap.add_argument("--steps", type=int, default=3, help="optimisation steps profiled (each runs every k_coef)")
    ap.add_argument("--nodes", type=int, default=30, help="size of the circuit the probe evaluates")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--parts", default="step,apart,probe,check,details")
    args = ap.parse_args()

    import contextlib
    import importlib
    import importlib.util

    from sparsecircuits.analysis.faithfulness import run_checks
    from sparsecircuits.analysis.node_details import compute_details
    from sparsecircuits.circuits.circuit import Circuit
    from sparsecircuits.run import load_run
    from sparsecircuits.rundir import RunDir

    P = importlib.import_module("sparsecircuits.circuits.prune")  # the module, not the function
    run = load_run(args.run_dir)
    s = P.make_settings(steps=args.steps)
    ctx = P._prepare(run, args.task, s, seed=0, force=True, name=None, means=None, t0=time.perf_counter())
    circuit = Circuit.load(RunDir(args.run_dir).circuit(args.task))
    circuit.attach(run)
    order = torch.randperm(ctx.nodes.n, generator=torch.Generator().manual_seed(0))

    def step():
        with P._frozen(ctx.model):
            if hasattr(P, "optimise_taus"):
                P.optimise_taus(ctx.masked, ctx.data, s.k_coefs, s, 0)
            else:
                for k in s.k_coefs:
                    P.optimise_tau(ctx.masked, ctx.data, k, s, 0)

    def probe():
        P._Prober(ctx.masked, order, ctx.probe, s).loss(args.nodes)

    R = len(s.k_coefs)
    tau = (0.5 * torch.randn(R, ctx.nodes.n, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    batch = ctx.data.probe(s.batch_pairs * 2 // ctx.data.group)  # 128 prompts of every length, sorted

    def apart():
        from sparsecircuits.circuits.masking import heaviside_ste
        from sparsecircuits.tasks.base import answer_diff, binary_task_loss

        with P._frozen(ctx.model):
            loss = 0.0
            for part in torch.arange(len(batch)).tensor_split(s.length_buckets):
                b = batch.select(part)
                last = ctx.masked(b.tokens, heaviside_ste(tau, s.temperature), last_pos=b.last_pos)  # (R, b, V)
                loss = loss + sum(binary_task_loss(d) for d in answer_diff(last, b))
            tau.grad = None
            loss.backward()

    parts = {"step": step, "apart": apart, "probe": probe,
             "check": lambda: run_checks(run, circuit, checks=["random_baseline"], progress=False),
             "details": lambda: compute_details(run, circuit, progress=False)}
    out = {"task": args.task, "threads": torch.get_num_threads(), "steps": args.steps * len(s.k_coefs)}
    # the model frozen once for every part, as prune() and the report card each do (the
    # checks and node details then find it frozen); an older tree may lack the module
    cm = contextlib.nullcontext()
    if importlib.util.find_spec("sparsecircuits.circuits.frozen") is not None:
        cm = importlib.import_module("sparsecircuits.circuits.frozen").kernel_sites(run.model)
    with cm:
        for name in args.parts.split(","):
            out[name] = _profiled(parts[name], args.top)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
