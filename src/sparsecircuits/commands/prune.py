"""`sparsecircuits prune RUN_DIR --task NAME`: prune a trained model to a task circuit.

Writes ``RUN_DIR/circuits/<task>/circuit.json`` and prints one summary line.  With
``--all-tasks`` every built-in task the model has learned (>= 80% test accuracy) is
pruned, the others are skipped with a note, and ``RUN_DIR/circuits/summary.json`` plus a
table with the geometric mean of edge counts are written.  The mean counts only circuits
that met the target on held-out items (and were not forced); the others are listed beside
it (``sparsecircuits.circuit_sizes``).

With ``--search N`` each task gets N pruning runs over the optimiser's hyperparameters
(``circuits/search.py``), in ``--jobs`` local processes or on a Ray cluster (``--ray``);
the circuit's ``metrics.search`` records every trial.  A search that finds no circuit
meeting the target on held-out items writes its trials to
``RUN_DIR/circuits/<task>/search.json`` and fails (exit 2) unless ``--force``.

With ``--seeds K`` each task is pruned K times (seeds ``--seed`` .. ``--seed`` + K - 1,
``circuits/stability.py``): the first seed's circuit is saved as usual and
``stability.json`` beside it holds the spread of sizes, the node sets' overlap and the
stable core with its own loss.  ``--tie-qk`` gives the q and k channels of a head one
mask per channel (``circuits/tying.py``).

``--method attribution`` writes ``RUN_DIR/circuits/<task>@attribution/circuit.json``, beside
the learned circuit rather than over it, so the report can show both.  ``--checkpoint STEP``
prunes the weights of that training step and writes under ``RUN_DIR/kept/step_NNNNNNN/``
(``train/kept.py``), never over the final model's circuit.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..circuit_sizes import size_summary
from ..config import ABLATIONS, LEARNED_ACCURACY, TARGET_LOSS
from ..errors import UserError
from ..rundir import RunDir, variant_folder

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a trained model to the smallest circuit for a task",
                       description="Prune a trained model to the smallest circuit that does a task.")
    p.add_argument("run_dir", type=Path, help="run directory (runs/NAME)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", help="built-in task name (see 'sparsecircuits tasks list')")
    which.add_argument("--tasks-file", type=Path, help="JSONL of {prompt, correct, incorrect} examples")
    which.add_argument("--all-tasks", action="store_true", help="prune every built-in task the model learned")
    p.add_argument("--name", help="name for a --tasks-file task (default: the file's stem)")
    p.add_argument("--target-loss", type=float, default=TARGET_LOSS,
                   help=f"task loss the circuit must reach (default {TARGET_LOSS})")
    p.add_argument("--ablation", choices=ABLATIONS, default="mean",
                   help="how pruned nodes are replaced: node means, zero, or the pair's other prompt (resample)")
    p.add_argument("--method", choices=("learned", "attribution"), default="learned",
                   help="learned node masks (default) or the attribution-patching baseline (one gradient, top-k)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per k_coef (default: built in)")
    p.add_argument("--k-coefs", default=None, help="comma-separated sparsity penalties to sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=None, metavar="K",
                   help="K pruning runs (seeds --seed .. --seed+K-1); writes stability.json beside the first seed's "
                        "circuit: size spread, Jaccard overlap of node sets, the stable core (nodes in >= 80%% of "
                        "runs) and its loss")
    p.add_argument("--tie-qk", action="store_true",
                   help="one mask for the q and k channel of the same head and channel (both kept or both pruned)")
    p.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                   help="prune the weights of that training step (train.keep_checkpoints, or a resumable "
                        "checkpoint); the circuit goes to RUN/kept/step_NNNNNNN/circuits/, apart from the final model's")
    p.add_argument("--force", action="store_true",
                   help=f"prune even if the model is below {LEARNED_ACCURACY * 100:.0f}%% accurate")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while pruning (default: torch's own; 1 is often faster on a busy machine); "
                        "chunks of prompts run side by side, one lane per thread (--set lanes=N to choose)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a pruning setting, e.g. lr=3e-3, beta2=0.95, grad_clip=1, lr_decay=constant, "
                        "warmup_frac=0.05, tau_init_mean=0.1, tau_init_std=0.01, temperature=1, weight_decay=1e-3 "
                        "(repeatable; see PruneSettings)")
    p.add_argument("--context-tokens", type=int, default=None, metavar="N",
                   help="prune on prompts behind whole lines of validation code, each up to N tokens (as tasks eval "
                        "--context-tokens); the circuit goes to RUN/circuits/TASK@ctxN/, beside the short-prompt one")
    p.add_argument("--data", type=Path, default=None,
                   help="data dir with the run's val.bin for --context-tokens (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s = p.add_argument_group("hyperparameter search")
    s.add_argument("--search", type=int, default=None, metavar="N",
                   help="N pruning runs over lr, k_coef, beta2, ... (Optuna, seeded by --seed); keeps the smallest "
                        "circuit meeting the target on held-out items and fails if none does, unless --force")
    s.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local worker processes for --search (default 1; 0 = one per core)")
    s.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the --search trials on a Ray cluster ('auto', 'HOST:6379', 'ray://HOST:10001')")
    s.add_argument("--search-batch", type=int, default=None, metavar="B",
                   help="trials proposed per round (default 8); the result depends on it, not on --jobs")
    p.set_defaults(func=run)


# flags of their own, so not accepted by --set
_OWN_FLAGS = {"target_loss": "--target-loss", "ablation": "--ablation", "steps": "--steps",
              "k_coefs": "--k-coefs", "threads": "--threads", "tie_qk": "--tie-qk"}


def settings_overrides(pairs: list[str]) -> dict:
    """``["lr=3e-3", "lr_decay=constant"]`` -> typed ``PruneSettings`` fields (bad key or value: UserError)."""
    from dataclasses import fields

    from ..config import PruneSettings

    known = {f.name for f in fields(PruneSettings)}
    typed, out = PruneSettings(), {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        if key in _OWN_FLAGS:
            raise UserError(f"--set {key}: use {_OWN_FLAGS[key]} instead")
        if key not in known:
            raise UserError(f"--set: unknown pruning setting {key!r}; known: {', '.join(sorted(known - set(_OWN_FLAGS)))}")
        typed.with_overrides({key: text.strip()}, source="--set")  # each pair checked as given
        out[key] = getattr(typed, key)
    return out


def _k_coefs(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--k-coefs expects comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError("--k-coefs is empty")
    return values


def _summary_line(c, path: Path) -> str:
    m = c.metrics
    flag = " (forced)" if c.forced else ""
    met = "" if m.get("target_met", True) else f" [target {m['target_loss']} not met]"
    return (f"{c.task}{flag}: {m['n_nodes']} nodes, {m['n_edges']} edges; circuit loss {m['circuit_loss']:.3f} "
            f"(acc {m['circuit_accuracy']:.0%}), full model {m['full_loss']:.3f} (acc {m['full_accuracy']:.0%}); "
            f"{m['seconds']:.0f}s{met} -> {path}")


def _stability_line(r: dict, path: Path) -> str:
    sizes, jac, core = r["sizes"], r["jaccard"], r["core"]
    return (f"  {len(r['seeds'])} seeds: nodes {sizes['n_nodes']['min']:.0f}-{sizes['n_nodes']['max']:.0f}, "
            f"edges {sizes['n_edges']['min']:.0f}-{sizes['n_edges']['max']:.0f}; node Jaccard mean "
            f"{jac['mean']:.2f} (min {jac['min']:.2f}); stable core {core['n_nodes']} nodes, {core['n_edges']} "
            f"edges, loss {core['loss']:.3f} (acc {core['accuracy']:.0%}) -> {path}")


def _searcher(args: argparse.Namespace):
    """``search`` with the command's search options bound, or None without ``--search``."""
    extra = [flag for flag, v in (("--jobs", args.jobs), ("--ray", args.ray), ("--search-batch", args.search_batch))
             if v is not None]
    if args.search is None:
        if extra:
            raise UserError(f"{extra[0]} goes with --search N")
        return None
    if args.search < 1:
        raise UserError(f"--search must be >= 1, got {args.search}")
    if args.jobs is not None and args.jobs < 0:
        raise UserError(f"--jobs must be >= 0, got {args.jobs}")
    if args.search_batch is not None and args.search_batch < 1:
        raise UserError(f"--search-batch must be >= 1, got {args.search_batch}")
    if args.ray is not None and args.jobs is not None:
        raise UserError("--jobs is for local processes; with --ray the cluster decides")
    from ..circuits.search import DEFAULT_BATCH, search

    def run_search(run_, task, **kwargs):
        return search(run_, task, args.search, jobs=1 if args.jobs is None else args.jobs, ray_address=args.ray,
                      batch=args.search_batch or DEFAULT_BATCH, **kwargs)

    return run_search


def _with_context(run_, tasks: list, args: argparse.Namespace) -> list:
    """``(name, task)`` pairs -> the same tasks behind validation code (``tasks/context.py``)."""
    from ..tasks.context import context_task
    from ..tasks.user import ExamplesTask

    return [(name, context_task(run_, task if isinstance(task, str) else ExamplesTask(name, task),
                                args.context_tokens, seed=args.seed, data_dir=args.data)) for name, task in tasks]


def _failed_search(exc, run_dir: RunDir, task: str) -> UserError:
    """Keep a failed search's trials in ``search.json`` and say where."""
    path = run_dir.write_search(task, exc.record)
    return UserError(f"{exc} (trials in {path})")


def run(args: argparse.Namespace) -> int:
    from ..circuits.prune import NotLearnedError, prune
    from ..run import load_run

    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not (args.task or args.tasks_file or args.all_tasks):
        raise UserError("prune needs --task NAME, --tasks-file FILE or --all-tasks")
    if args.name and not args.tasks_file:
        raise UserError("--name goes with --tasks-file")
    if args.context_tokens is not None:
        if args.context_tokens < 1:
            raise UserError(f"--context-tokens must be >= 1, got {args.context_tokens}")
        if args.method != "learned":
            raise UserError("--context-tokens goes with the learned masks, not --method attribution")
    elif args.data is not None:
        raise UserError("--data goes with --context-tokens N")
    kwargs = dict(target_loss=args.target_loss, ablation=args.ablation, steps=args.steps, seed=args.seed,
                  force=args.force, k_coefs=_k_coefs(args.k_coefs), progress=not args.no_progress,
                  threads=args.threads, **settings_overrides(args.overrides))
    if args.tie_qk:
        kwargs["tie_qk"] = True
    searcher = _searcher(args)
    if searcher is not None and args.method != "learned":
        raise UserError("--search tunes the learned masks; it does not go with --method attribution")
    if args.seeds is not None:
        if args.seeds < 2:
            raise UserError(f"--seeds must be >= 2 (one run has nothing to compare with), got {args.seeds}")
        if searcher is not None:
            raise UserError("--seeds does not go with --search")
    if searcher is None:
        kwargs["method"] = args.method
    prune = searcher or prune
    if args.tasks_file:
        from ..tasks.base import load_jsonl_examples

        name = args.name or args.tasks_file.stem
        if not _NAME_RE.match(name):
            raise UserError(f"task name {name!r} may only use letters, digits, '_', '-' and '.'")
        examples = load_jsonl_examples(args.tasks_file)
        tasks: list = [(name, examples)]
    elif args.task:
        from ..tasks.python_tasks import get_task

        get_task(args.task)  # unknown name -> UserError before loading the model
        tasks = [(args.task, args.task)]
    else:
        from ..tasks.python_tasks import task_names

        tasks = [(n, n) for n in task_names()]
    run_ = load_run(args.run_dir, checkpoint=args.checkpoint)
    run_dir = RunDir(run_.path)  # a kept step's own folder with --checkpoint
    variant = None if searcher is not None or args.method == "learned" else args.method
    if args.context_tokens is not None:
        tasks = _with_context(run_, tasks, args)
        variant = f"ctx{args.context_tokens}"

    results, skipped = [], []
    for name, task in tasks:
        try:
            if args.seeds is None:
                circuit, stability = prune(run_, task, name=name, **kwargs), None
            else:
                from ..circuits.stability import prune_seeds

                circuits, stability = prune_seeds(run_, task, args.seeds, name=name, **kwargs)
                circuit = circuits[0]
        except UserError as exc:  # not learned, an answer this tokenizer splits, or a failed search
            kind = "not learned" if isinstance(exc, NotLearnedError) else "error"
            if hasattr(exc, "record"):
                exc, kind = _failed_search(exc, run_dir, variant_folder(name, variant)), "target not met"
            if not args.all_tasks:
                raise exc from None
            skipped.append({"task": name, "reason": str(exc), "kind": kind})
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        if args.context_tokens is not None:
            circuit.metrics["context_tokens"] = args.context_tokens
        path = circuit.save(run_dir.circuit(variant_folder(name, variant)))
        print(_summary_line(circuit, path))
        if stability is not None:
            spath = run_dir.write_stability(variant_folder(name, variant), stability)
            print(_stability_line(stability, spath))
        m = circuit.metrics
        results.append({"task": name, "n_nodes": m["n_nodes"], "n_edges": m["n_edges"],
                        "n_residual_links": m["n_residual_links"], "n_qk_pairs": m["n_qk_pairs"],
                        "n_io_edges": m["n_io_edges"], "n_edges_with_io": m["n_edges_with_io"],
                        "circuit_loss": m["circuit_loss"], "circuit_accuracy": m["circuit_accuracy"],
                        "target_loss": m["target_loss"], "full_loss": m["full_loss"],
                        "full_accuracy": m["full_accuracy"], "target_met": m.get("target_met", True),
                        "forced": circuit.forced, "seconds": m["seconds"], "path": str(path)})
    if args.all_tasks:
        sizes = size_summary(results)
        gm = sizes["geomean_edges"]
        summary = {"run": str(args.run_dir), "target_loss": args.target_loss, "ablation": args.ablation,
                   "geomean_edges": gm, "geomean_nodes": sizes["geomean_nodes"], "geomean_tasks": sizes["counted"],
                   "not_in_geomean": sizes["excluded"], "tasks": results, "skipped": skipped}
        if variant is None:  # summary.json sums up the learned circuits, which the others sit beside
            run_dir.write_summary(summary)
        print(f"{'task':<28} {'nodes':>6} {'edges':>7} {'loss':>7} {'acc':>5}")
        for r in results:
            print(f"{r['task']:<28} {r['n_nodes']:>6} {r['n_edges']:>7} {r['circuit_loss']:>7.3f} "
                  f"{r['circuit_accuracy']:>5.0%}")
        gm_text = "n/a" if gm is None else f"{gm:.1f}"
        print(f"{len(results)} circuits, {len(skipped)} tasks skipped; geometric mean of edges {gm_text} "
              f"over {len(sizes['counted'])} circuit(s) that met the target on held-out items "
              + (f"-> {run_dir.summary}" if variant is None else f"(not saved: {run_dir.summary.name} is the learned "
                                                                  "circuits')"))
        for x in sizes["excluded"]:
            print(f"  not in the mean: {x['task']} ({x['n_edges']} edges): {x['reason']}")
    return 0
