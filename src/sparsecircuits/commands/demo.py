"""`sparsecircuits demo`: the whole method in one command, reusing whatever is already built.

data (the stdlib plus generated simple Python) -> train cpu-small -> score the 20 tasks ->
prune single_double_quote, bracket_counting and every other learned task -> node details
-> HTML report.
Each stage is skipped when its output already exists, so a second run is fast and an
interrupted run picks up where it stopped (training resumes from its last checkpoint).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

ALWAYS = ("single_double_quote", "bracket_counting")
LEARNED = 0.80
# Test pairs behind each node's ablation effect in the report.  The effect costs one
# masked forward per node, and a forced bracket circuit keeps hundreds of nodes: with the
# pruner's 128 pairs the details alone took over three minutes of the demo's twenty.
DETAIL_PAIRS = 32


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="data -> train -> prune -> report, reusing what exists")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--extra-tasks", type=int, default=None,
                   help="at most this many learned tasks to prune besides the two fixed ones (default: all)")
    p.add_argument("--n", type=int, default=200, help="test items per task for scoring")
    p.add_argument("--data", type=Path, default=None,
                   help="token-shard folder (default: the stdlib, built once and cached)")
    p.add_argument("--prune-steps", type=int, default=None,
                   help="optimisation steps per k_coef when pruning (default: the pruner's own)")
    p.add_argument("--prune-items", type=int, default=None,
                   help="task pairs for pruning, and half as many held out (default: the pruner's own)")
    p.set_defaults(func=run)


def _stage(t0: float, i: int, n: int, text: str) -> None:
    """One stage line, with the minutes spent since ``t0`` (the demo aims at 20 in all)."""
    mins = (time.perf_counter() - t0) / 60
    print(f"[{i}/{n}] {mins:4.1f} min  {text}", flush=True)


def choose_tasks(scores: list[dict], extra: int | None = None) -> list[str]:
    """The two tasks the paper studies, then the learned others (accuracy >= 80%), best
    first; ``extra`` caps how many others (None: all of them)."""
    others = [s for s in scores if s["task"] not in ALWAYS and s["accuracy"] >= LEARNED]
    others.sort(key=lambda s: (-s["accuracy"], s["loss"]))
    return list(ALWAYS) + [s["task"] for s in others[:extra]]


def run(args: argparse.Namespace) -> int:
    from ..config import build_config
    from ..io import atomic_write_json, read_json
    from ..run import load_run
    from ..train.checkpoint import list_checkpoints
    from ..train.evaluation import EVAL_FILE, evaluate_run, save_evaluation
    from ..data.build import resolve_data
    from ..train.trainer import train

    t0 = time.perf_counter()
    out: Path = args.out
    n = 6
    cfg = build_config(args.preset, sets=args.set)
    if args.data is not None:
        cfg.data.data_dir = str(args.data)
    _stage(t0, 1, n, f"data: {args.data}" if args.data is not None else
           "data: the Python standard library as corpus (built once, then cached)")
    cfg.data.data_dir = str(resolve_data(cfg.data))

    if (out / "model.safetensors").is_file():
        _stage(t0, 2, n, f"train: {out}/model.safetensors exists, reusing it")
    elif list_checkpoints(out / "checkpoints"):
        _stage(t0, 2, n, f"train: resuming {out} from its last checkpoint")
        from ..config import RunConfig

        train(RunConfig.load(out / "config.json"), out, resume=True)
    else:
        _stage(t0, 2, n, f"train: {args.preset} -> {out}")
        train(cfg, out)

    run_ = load_run(out)
    _stage(t0, 3, n, "tasks: scoring the full model on the 20 tasks, and its own measures")
    if not (out / EVAL_FILE).is_file():
        save_evaluation(out, evaluate_run(run_, n_batches=10))
    from ..tasks.evaluation import evaluate_suite

    scores = evaluate_suite(run_, n=args.n)
    atomic_write_json(out / "tasks.json", {"split": "test", "n": args.n,
                                           "tasks": {s["task"]: s for s in scores}})
    for s in scores:
        mark = "learned" if s["accuracy"] >= LEARNED else ""
        print(f"    {s['task']:<28} accuracy {s['accuracy']:.3f}  loss {s['loss']:.4f}  {mark}")

    chosen = choose_tasks(scores, args.extra_tasks)
    _stage(t0, 4, n, f"prune: {', '.join(chosen)}")
    from ..circuits import prune

    acc = {s["task"]: s["accuracy"] for s in scores}
    for task in chosen:
        path = out / "circuits" / task / "circuit.json"
        if path.is_file():
            print(f"    {task}: circuit.json exists, reusing it")
            continue
        force = acc[task] < LEARNED
        if force:
            print(f"    {task}: the model is only {acc[task]:.0%} accurate; pruning anyway, marked forced")
        items = {} if args.prune_items is None else {"n_train": args.prune_items,
                                                     "n_test": max(1, args.prune_items // 2)}
        circuit = prune(run_, task, force=force, steps=args.prune_steps, **items)
        circuit.save(path)
        m = circuit.metrics
        met = "met" if m["circuit_loss"] <= m["target_loss"] else "NOT met on test items"
        print(f"    {task}: {m['n_nodes']} nodes, {m['n_edges']} edges, circuit loss {m['circuit_loss']:.3f} "
              f"on test items (target {m['target_loss']}: {met})")

    _stage(t0, 5, n, "details: top-activating snippets, class activations, ablation effects")
    from ..analysis.node_details import attach_details

    for task in chosen:
        data = read_json(out / "circuits" / task / "circuit.json", what="circuit file")
        if isinstance(data, dict) and data.get("details"):
            continue
        attach_details(run_, task, n_test=DETAIL_PAIRS)

    _stage(t0, 6, n, "report")
    from ..report.html import write_report

    index = write_report(out)
    print(f"demo finished in {time.perf_counter() - t0:.0f}s; open the report: {index.resolve()}")
    return 0
