"""The task format: pairs of prompts with a correct and an incorrect one-token answer.

A task asks a binary question of the model at the last prompt position: is the logit of
the correct answer above that of the incorrect one?  Each prompt's loss is the binary
cross-entropy over just those two logits, so a task measures one choice and nothing else
the model might want to say next.  The task loss is counted per pair, as the paper's
released code does: the two prompts' cross-entropies summed, averaged over pairs, which
is twice the mean over prompts (``binary_task_loss``; chance is ``2 ln 2``).  So
``--target-loss 0.15`` is the paper's 0.15; ``docs/tasks.md`` gives the evidence.

Items come in pairs (``TaskItem``) of prompts that differ minimally and whose answers
swap (``a.correct == b.incorrect``), so a circuit must read the difference between the
prompts rather than a bias towards one answer.  Pruning and evaluation work on the
flattened examples (``flatten``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError

SPLITS = ("train", "test")

# Prompts per pair: the task loss sums the binary cross-entropies of a pair's prompts.
PROMPTS_PER_PAIR = 2


@dataclass(frozen=True)
class TaskExample:
    """One prompt and its two candidate next tokens (as text, each one token)."""

    prompt: str
    correct: str
    incorrect: str

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "correct": self.correct, "incorrect": self.incorrect}


@dataclass(frozen=True)
class TaskItem:
    """Two prompts that differ minimally; typically ``a.correct == b.incorrect``."""

    a: TaskExample
    b: TaskExample


class Task:
    """A named generator of ``TaskItem`` pairs.

    Subclasses (or a ``make`` callable) produce items; ``generate`` is deterministic in
    ``(n, seed, split)`` and train and test items never share a prompt.
    """

    name: str = ""
    description: str = ""

    def __init__(self, name: str | None = None, description: str | None = None) -> None:
        if name is not None:
            self.name = name
        if description is not None:
            self.description = description

    def generate(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        raise NotImplementedError

    def examples(self, n: int, seed: int = 0, split: str = "train") -> list[TaskExample]:
        """``n`` pairs flattened into ``2 n`` examples."""
        return flatten(self.generate(n, seed=seed, split=split))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    return split


def flatten(items: Iterable[TaskItem]) -> list[TaskExample]:
    """Pairs to a flat list ``[a0, b0, a1, b1, ...]`` (order kept, so pairs stay adjacent)."""
    out: list[TaskExample] = []
    for item in items:
        out.append(item.a)
        out.append(item.b)
    return out


def example_units(items: Iterable[TaskItem | TaskExample],
                  task_name: str = "custom") -> tuple[list[list[TaskExample]], int]:
    """``(units, group)``: ``TaskItem`` pairs give ``[[a, b], ...]`` and 2, plain examples
    ``[[x], ...]`` and 1.

    A pair is kept together wherever items are split, sampled or dropped, so a circuit is
    always scored on both prompts of a pair; a mix of the two kinds, or nothing, is an error.
    """
    items = list(items)
    if not items:
        raise UserError(f"task {task_name}: no examples")
    if all(isinstance(x, TaskItem) for x in items):
        return [[it.a, it.b] for it in items], 2
    if all(isinstance(x, TaskExample) for x in items):
        return [[x] for x in items], 1
    raise UserError(f"task {task_name}: expected a list of TaskExample or of TaskItem pairs")


def flat_examples(items: Iterable[TaskItem | TaskExample],
                  task_name: str = "custom") -> tuple[list[TaskExample], int]:
    """``example_units`` flattened: the examples in order (pairs adjacent) and the group size."""
    units, group = example_units(items, task_name)
    return [ex for unit in units for ex in unit], group


# ---------------------------------------------------------------------------- JSONL

_FIELDS = ("prompt", "correct", "incorrect")


def load_jsonl_examples(path: str | Path) -> list[TaskExample]:
    """Read user examples, one JSON object ``{"prompt", "correct", "incorrect"}`` a line.

    Blank lines are skipped; any other malformed line is a ``UserError`` naming the file,
    the line number and what is wrong, so a user can fix a hand-written file quickly.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    examples: list[TaskExample] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object with fields {', '.join(_FIELDS)}")
        for field in _FIELDS:
            if field not in obj:
                raise UserError(f"{path}:{lineno}: missing field {field!r}")
            if not isinstance(obj[field], str) or obj[field] == "":
                raise UserError(f"{path}:{lineno}: field {field!r} must be a non-empty string")
        if obj["correct"] == obj["incorrect"]:
            raise UserError(f"{path}:{lineno}: 'correct' and 'incorrect' are the same token {obj['correct']!r}")
        examples.append(TaskExample(obj["prompt"], obj["correct"], obj["incorrect"]))
    if not examples:
        raise UserError(f"{path}: no examples (expected JSON lines with {', '.join(_FIELDS)})")
    return examples


def write_jsonl_examples(path: str | Path, examples: Iterable[TaskExample]) -> None:
    """The inverse of ``load_jsonl_examples`` (atomic write)."""
    from ..io import atomic_write_text

    lines = [json.dumps(ex.to_json(), ensure_ascii=False) for ex in examples]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


# ---------------------------------------------------------------------------- encoding


@dataclass
class TaskBatch:
    """Examples as tensors. Prompts are right-padded with the EOT id; the model is
    causal, so padding after ``last_pos`` never changes the logits read there."""

    tokens: torch.Tensor  # (N, T) long
    last_pos: torch.Tensor  # (N,) long: index of the prompt's last token
    correct_id: torch.Tensor  # (N,) long
    incorrect_id: torch.Tensor  # (N,) long

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: str | torch.device) -> "TaskBatch":
        return TaskBatch(
            self.tokens.to(device),
            self.last_pos.to(device),
            self.correct_id.to(device),
            self.incorrect_id.to(device),
        )

    def select(self, index: slice | torch.Tensor | Sequence[int]) -> "TaskBatch":
        """A sub-batch, with padding trimmed to the longest prompt it holds."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        last_pos = self.last_pos[index]
        width = int(last_pos.max().item()) + 1 if last_pos.numel() else 1
        return TaskBatch(
            self.tokens[index][:, :width],
            last_pos,
            self.correct_id[index],
            self.incorrect_id[index],
        )


def _eot_id(tokenizer) -> int:
    from ..data.tokenizer import EOT

    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise UserError(f"tokenizer has no {EOT!r} token")
    return int(eot)


def _answer_id(prompt_ids: list[int], full_ids: list[int], task_name: str, answer: str) -> int:
    """The answer's id, if the answer is exactly one token *after this prompt*.

    Encoding the answer alone is not enough: a BPE can merge across the boundary (a
    prompt ending in ``(`` with answer ``"`` encodes as one ``("`` token), in which case
    the model never sees the answer as a separate next token.
    """
    if len(full_ids) == len(prompt_ids) + 1 and full_ids[: len(prompt_ids)] == prompt_ids:
        return full_ids[-1]
    raise UserError(
        f"task {task_name}: answer {answer!r} is not a single token after its prompt "
        f"under this tokenizer"
    )


def encode_examples(
    tokenizer,
    examples: Sequence[TaskExample],
    task_name: str = "custom",
    max_len: int | None = None,
    prepend_eot: bool = False,
    truncate: bool = False,
) -> TaskBatch:
    """Tokenize examples into a right-padded ``TaskBatch``.

    ``tokenizer`` is a ``tokenizers.Tokenizer``.  Each answer must be a single token
    following its prompt (see ``_answer_id``).  ``max_len`` (the model's context) bounds
    the prompt length: a longer prompt is an error, or with ``truncate`` loses its first
    tokens (which may remove what the task depends on).  ``prepend_eot`` starts each
    prompt with EOT, as at the start of a file.
    """
    if not examples:
        raise UserError(f"task {task_name}: no examples to encode")
    eot = _eot_id(tokenizer)
    texts: list[str] = []
    for ex in examples:
        texts += [ex.prompt, ex.prompt + ex.correct, ex.prompt + ex.incorrect]
    encs = tokenizer.encode_batch(texts, add_special_tokens=False)
    prompts: list[list[int]] = []
    correct: list[int] = []
    incorrect: list[int] = []
    for i, ex in enumerate(examples):
        p, c, w = (encs[3 * i + j].ids for j in range(3))
        if not p:
            raise UserError(f"task {task_name}: empty prompt")
        correct.append(_answer_id(p, c, task_name, ex.correct))
        incorrect.append(_answer_id(p, w, task_name, ex.incorrect))
        if correct[-1] == incorrect[-1]:
            raise UserError(f"task {task_name}: correct and incorrect answers are the same token {ex.correct!r}")
        prompt = ([eot] if prepend_eot else []) + list(p)
        if truncate and max_len is not None:
            prompt = prompt[-max_len:]
        prompts.append(prompt)
    longest = max(len(p) for p in prompts)
    if max_len is not None and longest > max_len:
        raise UserError(f"task {task_name}: a prompt has {longest} tokens, more than the context of {max_len}")
    tokens = torch.full((len(prompts), longest), eot, dtype=torch.long)  # (N, T)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    return TaskBatch(
        tokens=tokens,
        last_pos=torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long),
        correct_id=torch.tensor(correct, dtype=torch.long),
        incorrect_id=torch.tensor(incorrect, dtype=torch.long),
    )


# ---------------------------------------------------------------------------- metrics


def answer_diff(last: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """logit[correct] - logit[incorrect] from last-position logits (..., N, V) -> (..., N).

    Every score of a task starts here (full model, masked model, pruning, the checks).
    Leading dims broadcast over the batch: logits (R, N, V) of R variants of a model on the
    same N prompts give (R, N).
    """
    shape = last.shape[:-1]  # (..., N)
    good = last.gather(-1, batch.correct_id.to(last.device).expand(shape)[..., None])[..., 0]
    bad = last.gather(-1, batch.incorrect_id.to(last.device).expand(shape)[..., None])[..., 0]
    return good - bad


def task_logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """logit[correct] - logit[incorrect] at the last prompt position; logits (N, T, V) -> (N,)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return answer_diff(logits[rows, batch.last_pos.to(logits.device)], batch)  # from (N, V)


def binary_task_loss(diff: torch.Tensor) -> torch.Tensor:
    """The task loss from correct-minus-incorrect logit differences, (N,) -> scalar.

    Each prompt's binary cross-entropy is ``-log sigmoid(diff) = softplus(-diff)``; the
    loss is their sum over a pair averaged over pairs, i.e. ``PROMPTS_PER_PAIR`` times
    the mean over prompts (the same number for any N, paired or not).  This is the one
    place the convention lives: pruning, circuits and the checks all call it.
    """
    return PROMPTS_PER_PAIR * F.softplus(-diff).mean()


def diff_loss(diff: torch.Tensor) -> float:
    """``binary_task_loss`` as a plain float, ``inf`` when it is not finite."""
    v = float(binary_task_loss(diff))
    return v if math.isfinite(v) else float("inf")


def score_diffs(diff: torch.Tensor) -> dict:
    """``{"loss", "accuracy", "n"}`` of correct-minus-incorrect differences (N,): the task
    loss, the fraction with the correct answer ahead (ties count wrong) and N."""
    return {"loss": diff_loss(diff), "accuracy": float((diff > 0).float().mean()), "n": int(diff.numel())}


def task_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """The task loss (``binary_task_loss``) of logits (N, T, V) at each prompt's last position."""
    return binary_task_loss(task_logit_diff(logits, batch))


def task_accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Fraction of examples whose correct answer out-scores the incorrect one (ties count wrong)."""
    return (task_logit_diff(logits, batch) > 0).float().mean()


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.no_grad()
def evaluate_task(model, batch: TaskBatch, batch_size: int = 256) -> dict:
    """Task loss and accuracy of ``model`` (tokens (B, T) -> logits (B, T, V)) on a batch.

    Runs in chunks of ``batch_size`` with each chunk's padding trimmed, and keeps only the
    answer logits, so memory stays small at any vocabulary size.
    """
    if len(batch) == 0:
        raise UserError("no examples to evaluate")
    device = _model_device(model)
    diffs = []
    for start in range(0, len(batch), batch_size):
        chunk = batch.select(slice(start, start + batch_size)).to(device)
        logits = model(chunk.tokens)  # (B, T, V)
        diffs.append(task_logit_diff(logits.float(), chunk).cpu())
    return score_diffs(torch.cat(diffs))  # from (N,)
