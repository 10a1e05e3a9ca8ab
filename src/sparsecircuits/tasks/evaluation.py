"""Scoring a run on many tasks at once: the full model's accuracy and loss per task."""
from __future__ import annotations

from typing import Iterable

from .base import TaskExample, encode_examples, evaluate_task
from .python_tasks import TASKS, get_task


def evaluate_suite(run, tasks: Iterable[str] | None = None, n: int = 200, seed: int = 0,
                   extra: Iterable[tuple[str, list[TaskExample]]] = (), batch_size: int = 256) -> list[dict]:
    """``[{"task", "accuracy", "loss", "n"}, ...]`` on test items, in the order given.

    ``tasks`` defaults to all 20; ``extra`` adds user tasks as ``(name, examples)``.
    """
    names = list(tasks) if tasks is not None else list(TASKS)
    block = run.model.cfg.block_size
    suites = [(name, get_task(name).examples(n, seed=seed, split="test")) for name in names]
    suites += list(extra)
    results = []
    for name, examples in suites:
        batch = encode_examples(run.tokenizer, examples, task_name=name, max_len=block)
        results.append({"task": name, **evaluate_task(run.model, batch, batch_size=batch_size)})
    return results
