"""Scoring a run on many tasks at once: the full model's accuracy and loss per task."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..errors import UserError
from .base import TaskBatch, TaskExample, answer_diff, encode_examples, evaluate_task, score_diffs
from .python_tasks import TASKS, get_task


def evaluate_suite(run, tasks: Iterable[str] | None = None, n: int = 200, seed: int = 0,
                   extra: Iterable[tuple[str, list[TaskExample]]] = (), batch_size: int = 256,
                   context_tokens: int = 0, data_dir: str | Path | None = None) -> list[dict]:
    """``[{"task", "accuracy", "loss", "n", "prompt_tokens"}, ...]`` on test items, in the order given.

    ``tasks`` defaults to all 20; ``extra`` adds user tasks as ``(name, examples)``.
    With ``context_tokens`` N, each row also has ``"context": {"tokens": N, "accuracy",
    "loss", "n", "prompt_tokens"}``: the same items with validation code before each pair
    (``tasks.context``) so a prompt totals up to N tokens; ``prompt_tokens`` is the mean
    prompt length. ``data_dir`` overrides where the run's token shards are.
    """
    names = list(tasks) if tasks is not None else list(TASKS)
    block = run.model.cfg.block_size
    if context_tokens < 0 or context_tokens > block:
        raise UserError(f"context tokens must be between 1 and the model's context of {block}, "
                        f"got {context_tokens}")
    context = None
    if context_tokens:
        from .context import val_context

        context = val_context(run, data_dir, n_tokens=context_tokens, seed=seed)
    suites = [(name, get_task(name).examples(n, seed=seed, split="test")) for name in names]
    suites += list(extra)
    from ..circuits.frozen import kernel_sites

    results = []
    with kernel_sites(run.model):  # AbsTopK by the C kernel where faster: the same activations
        for name, examples in suites:
            row = {"task": name, **_score(run, name, examples, block, batch_size)}
            if context is not None:
                from .context import with_code_context

                long = with_code_context(examples, run.tokenizer, context, context_tokens)
                row["context"] = {"tokens": context_tokens, **_score(run, name, long, block, batch_size)}
            results.append(row)
    return results


def _score(run, name: str, examples: list[TaskExample], block: int, batch_size: int) -> dict:
    batch = encode_examples(run.tokenizer, examples, task_name=name, max_len=block)
    mean_tokens = float((batch.last_pos + 1).float().mean())
    return {**score_last(run.model, batch, batch_size), "prompt_tokens": round(mean_tokens, 1)}


@torch.no_grad()
def score_last(model, batch: TaskBatch, batch_size: int = 256) -> dict:
    """``evaluate_task``'s loss and accuracy, the unembedding run at each prompt's last
    position only: at a vocabulary of 2048 and d_model 128 the logits of every position
    are a quarter of the forward's arithmetic and none but the last is read.  A model
    whose forward takes no ``last_pos`` (an imported one, say) goes through ``evaluate_task``."""
    from ..model.gpt import GPT

    if not isinstance(model, GPT) or len(batch) == 0:  # (evaluate_task refuses an empty batch)
        return evaluate_task(model, batch, batch_size=batch_size)
    device = next(model.parameters()).device
    diffs = []
    for start in range(0, len(batch), batch_size):
        chunk = batch.select(slice(start, start + batch_size)).to(device)  # padding trimmed
        last = model(chunk.tokens, last_pos=chunk.last_pos)  # (B, V)
        diffs.append(answer_diff(last.float(), chunk).cpu())  # (B,)
    return score_diffs(torch.cat(diffs))  # from (N,)
