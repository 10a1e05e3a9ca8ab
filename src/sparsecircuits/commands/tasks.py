"""`sparsecircuits tasks list|show|eval`: browse the task suite and score a run on it."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..config import TARGET_LOSS
from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list, show and evaluate the binary next-token tasks")
    tsub = p.add_subparsers(dest="tasks_command", metavar="{list,show,eval}")

    pl = tsub.add_parser("list", help="task names with a one-line description")
    pl.add_argument("--controls", action="store_true", help="also list the control tasks")
    pl.set_defaults(func=run_list)

    ps = tsub.add_parser("show", help="print a few prompt pairs of a task")
    ps.add_argument("name", help="task name (see `tasks list`)")
    ps.add_argument("--n", type=int, default=5, help="pairs to show (default 5)")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--split", choices=["train", "test"], default="test")
    ps.add_argument("--tokenizer", type=Path, help="tokenizer.json (or a run/data dir) to show token counts")
    ps.set_defaults(func=run_show)

    pe = tsub.add_parser("eval", help="accuracy and loss of a run on the tasks' test items")
    pe.add_argument("run_dir", type=Path)
    pe.add_argument("--tasks", help="comma-separated task names (default: all 20)")
    pe.add_argument("--tasks-file", type=Path, action="append", default=[],
                    help="JSONL of {prompt, correct, incorrect}; evaluated as a task named after the file")
    pe.add_argument("--n", type=int, default=200, help="pairs per task (default 200, so 400 prompts)")
    pe.add_argument("--seed", type=int, default=0)
    pe.add_argument("--batch-size", type=int, default=256)
    pe.add_argument("--device", default="cpu")
    pe.add_argument("--context-tokens", type=int, default=0, metavar="N",
                    help="also score each pair behind whole lines of validation code, the same for both "
                         "prompts, so a prompt totals up to N tokens (the paper uses up to 256)")
    pe.add_argument("--data", type=Path, help="data dir with the run's val.bin for --context-tokens "
                                              "(default: the run's configured or default data)")
    pe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pe.set_defaults(func=run_eval)

    p.set_defaults(func=_no_subcommand)


def _no_subcommand(args: argparse.Namespace) -> int:
    raise UserError("tasks: choose a subcommand: list, show or eval")


def run_list(args: argparse.Namespace) -> int:
    from ..tasks import CONTROL_TASKS, TASKS

    tasks = dict(TASKS)
    if args.controls:
        tasks.update(CONTROL_TASKS)
    width = max(len(n) for n in tasks)
    for name, task in tasks.items():
        print(f"{name:<{width}}  {task.description}")
    return 0


def _tokenizer_from(path: Path):
    from ..data.tokenizer import load_tokenizer

    if path.is_dir():
        path = path / "tokenizer.json"
    return load_tokenizer(path)


def _show_prompt(prompt: str) -> str:
    """The prompt as it reads, with a visible marker where the answer goes."""
    return "    " + prompt.replace("\n", "\n    ") + "\u2038"


def run_show(args: argparse.Namespace) -> int:
    from ..tasks import get_task

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    task = get_task(args.name)
    tok = _tokenizer_from(args.tokenizer) if args.tokenizer else None
    items = task.generate(args.n, seed=args.seed, split=args.split)
    print(f"{task.name}: {task.description}")
    for i, item in enumerate(items):
        for tag, ex in (("a", item.a), ("b", item.b)):
            extra = ""
            if tok is not None:
                n_tok = len(tok.encode(ex.prompt, add_special_tokens=False).ids)
                extra = f"  [{n_tok} tokens]"
            print(f"--- pair {i} {tag}: correct {ex.correct!r}, incorrect {ex.incorrect!r}{extra}")
            print(_show_prompt(ex.prompt))
    print(f"{len(items)} pairs of {task.name} ({args.split} split, seed {args.seed})")
    return 0


def _selected_tasks(args: argparse.Namespace) -> list:
    from ..tasks import TASKS, get_task

    if args.tasks:
        names = [n.strip() for n in args.tasks.split(",") if n.strip()]
        if not names:
            raise UserError("--tasks is empty")
        return [get_task(n) for n in names]
    if args.tasks_file:
        return []
    return list(TASKS.values())


def run_eval(args: argparse.Namespace) -> int:
    from ..tasks import load_jsonl_examples
    from ..tasks.evaluation import evaluate_suite

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.context_tokens < 0:
        raise UserError(f"--context-tokens must be at least 1, got {args.context_tokens}")
    # Check the cheap inputs before loading the model.
    tasks = _selected_tasks(args)
    files = [(Path(f).stem, load_jsonl_examples(f)) for f in args.tasks_file]

    from .. import load_run

    run = load_run(args.run_dir, device=args.device)
    results = evaluate_suite(run, [t.name for t in tasks], n=args.n, seed=args.seed, extra=files,
                             batch_size=args.batch_size, context_tokens=args.context_tokens,
                             data_dir=args.data)

    mean_acc = sum(r["accuracy"] for r in results) / len(results)
    mean_loss = sum(r["loss"] for r in results) / len(results)
    below = f"below_{TARGET_LOSS}_nats"  # tasks the full model does within the default pruning target
    solved = sum(r["loss"] <= TARGET_LOSS for r in results)
    summary = {"mean_accuracy": mean_acc, "mean_loss": mean_loss, "tasks": len(results),
               below: solved}
    long = [r["context"] for r in results if "context" in r]
    if long:
        summary["context"] = {"tokens": args.context_tokens,
                              "mean_accuracy": sum(c["accuracy"] for c in long) / len(long),
                              "mean_loss": sum(c["loss"] for c in long) / len(long),
                              below: sum(c["loss"] <= TARGET_LOSS for c in long)}
    if args.json:
        print(json.dumps({"run": str(args.run_dir), "split": "test", "seed": args.seed,
                          "results": results, "summary": summary}, indent=2))
        return 0
    width = max(12, max(len(r["task"]) for r in results))
    n_ctx = args.context_tokens
    header = f"{'task':<{width}} {'accuracy':>9} {'loss':>8} {'n':>6}"
    if long:
        header += f" {'acc@' + str(n_ctx):>9} {'loss@' + str(n_ctx):>9} {'tokens':>7}"
    print(header)
    for r in results:
        line = f"{r['task']:<{width}} {r['accuracy']:>9.3f} {_loss(r['loss']):>8} {r['n']:>6}"
        if "context" in r:
            c = r["context"]
            line += f" {c['accuracy']:>9.3f} {_loss(c['loss']):>9} {c['prompt_tokens']:>7.1f}"
        print(line)
    print(f"{len(results)} tasks on {args.run_dir}: mean accuracy {mean_acc:.3f}, mean loss {mean_loss:.4f} nats "
          f"per pair, {solved} with loss <= {TARGET_LOSS}")
    if long:
        s = summary["context"]
        print(f"with up to {n_ctx} tokens of code context: mean accuracy {s['mean_accuracy']:.3f}, "
              f"mean loss {s['mean_loss']:.4f} nats per pair, {s[below]} with loss <= {TARGET_LOSS}")
    return 0


def _loss(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "inf"
