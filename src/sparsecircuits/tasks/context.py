"""Task prompts in code context: real code from the validation split before each prompt.

The paper scores its tasks on prompts of up to 256 tokens in code context; our generators
write short prompts that start a file. ``with_code_context`` prepends whole lines of
validation code to both prompts of a pair, the same lines for both, so each prompt
totals at most ``n_tokens`` tokens.

The context must not change a task's answer, so it is complete code as the model reads
it, from its first line: it starts at the beginning of a line that starts with a name or
a decorator, and ends after a logical line that Python's own ``tokenize``, reading from
that first line, closes (no open bracket or string), that is not a block opener
(``...:``) or a decorator. Everything is drawn from
``random.Random`` seeded by ``(seed, pair index)``, so pair ``i`` gets the same code in
every task and every process.
"""
from __future__ import annotations

import io
import random
import re
import tokenize
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from .base import TaskExample, TaskItem

# A line that starts with a name or a decorator, at any indentation: where a snippet starts.
_STATEMENT_START = re.compile(r"^[ \t]*[A-Za-z_@]", re.M)
_ATTEMPTS = 16


def statement_ends(text: str) -> list[int]:
    """Character offsets in ``text`` just after each complete logical line (its ``\\n``
    included) that may end a context: no open bracket or string, not ``...:``, not a
    decorator. Lines are read from the start of ``text``, as the model reads them; a
    tokenize error stops the scan. A first line indented by 4 k spaces is read as if
    inside k blocks (``if 1:`` lines, not part of ``text``), so the dedents that follow
    are not errors."""
    # starts[r] is the offset just after row r's newline (rows as tokenize counts them,
    # split on "\n" only, like ``io.StringIO.readline``)
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    complete_rows = len(starts) - 1
    indent = len(text) - len(text.lstrip(" "))
    depth = indent // 4 if indent % 4 == 0 else 0
    opener = "".join(" " * (4 * i) + "if 1:\n" for i in range(depth))  # depth rows, read first
    ends: list[int] = []
    prev = None  # last significant token of the current logical line
    first = None  # its first token
    try:
        for tok in tokenize.generate_tokens(io.StringIO(opener + text).readline):
            if tok.start[0] <= depth:
                continue
            if tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENCODING):
                continue
            if tok.type == tokenize.NEWLINE:
                row = tok.start[0] - depth
                if (row <= complete_rows and prev is not None and prev.string != ":"
                        and first is not None and first.string != "@"):
                    ends.append(starts[row])
                prev = first = None
                continue
            if tok.type == tokenize.ENDMARKER:
                break
            if first is None:
                first = tok
            prev = tok
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return ends


class CodeContext:
    """Code snippets from a token array (a data dir's ``val.bin``), one per pair index.

    ``decode`` turns token ids of that array back into text (its data dir's tokenizer);
    ``span`` is how many tokens a snippet is cut from.
    """

    def __init__(self, tokens: np.ndarray, eot_id: int, decode: Callable[[list[int]], str], span: int,
                 seed: int | str = 0) -> None:
        if len(tokens) < 2:
            raise UserError("the validation split is too small to draw code context from")
        self.tokens, self.eot_id, self.decode, self.span, self.seed = tokens, eot_id, decode, span, seed
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def snippet(self, index: int) -> tuple[str, list[int]]:
        """(text, offsets where it may be cut) for pair ``index``; ``("", [])`` if none found."""
        if index not in self._cache:
            self._cache[index] = self._draw(random.Random(f"context/{self.seed}/{index}"))
        return self._cache[index]

    def _draw(self, rng: random.Random) -> tuple[str, list[int]]:
        best: tuple[str, list[int]] = ("", [])
        for _ in range(_ATTEMPTS):
            start = rng.randrange(len(self.tokens) - 1)
            ids = np.asarray(self.tokens[start : start + self.span])  # (<= span,)
            eot = np.flatnonzero(ids == self.eot_id)
            if eot.size:
                ids = ids[: eot[0]]  # stay inside one file
            text = self.decode(ids.tolist())
            m = next((m for m in _STATEMENT_START.finditer(text) if m.start() > 0), None)
            if m is None:  # offset 0 may be mid-line: need a line start after a newline
                continue
            body = text[m.start():]
            ends = statement_ends(body)
            if ends and ends[-1] > (best[1][-1] if best[1] else 0):
                best = (body, ends)
            if ends and ends[-1] >= len(body) // 2:
                break
        return best


def _n_tokens(tokenizer, texts: Sequence[str]) -> int:
    return max(len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False))


def with_code_context(examples: Sequence[TaskExample], tokenizer, context: CodeContext,
                      n_tokens: int) -> list[TaskExample]:
    """Each pair (examples ``2i`` and ``2i + 1``, as ``flatten`` lays them out) behind the
    same lines of code: the longest prefix of pair ``i``'s snippet, cut at a statement
    end, that keeps both prompts within ``n_tokens`` tokens (none if even the first
    statement does not fit). Answers are unchanged."""
    out: list[TaskExample] = []
    for i in range(0, len(examples), 2):
        pair = list(examples[i : i + 2])
        text, ends = context.snippet(i // 2)
        prompts = [ex.prompt for ex in pair]
        lo, hi = 0, len(ends)  # the number of statements kept, searched in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            ctx = text[: ends[mid - 1]]
            if _n_tokens(tokenizer, [ctx + p for p in prompts]) <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        ctx = text[: ends[lo - 1]] if lo else ""
        out += [TaskExample(ctx + ex.prompt, ex.correct, ex.incorrect) for ex in pair]
    return out


def run_data_dir(run, data_dir: str | Path | None = None) -> Path:
    """Where a run's token shards are: ``data_dir`` if given, else the run's configured
    data dir, else the default data it was trained on."""
    if data_dir is None:
        data_dir = run.config.data.data_dir or None
    if data_dir is None:
        from ..data.build import default_data_dir

        data_dir = default_data_dir(run.config.data.vocab_size, run.config.data.simple_bytes)
    return Path(data_dir).expanduser()


def val_context(run, data_dir: str | Path | None = None, n_tokens: int = 256, seed: int = 0) -> CodeContext:
    """A ``CodeContext`` over the run's validation split (read with ``TokenShards``),
    decoded with that data dir's own tokenizer."""
    from ..data.shards import TokenShards
    from ..data.tokenizer import load_tokenizer

    shards = TokenShards(run_data_dir(run, data_dir))
    tok = load_tokenizer(shards.tokenizer_path)
    return CodeContext(shards.val, shards.eot_id, tok.decode, span=3 * n_tokens + 64, seed=seed)


class ContextTask:
    """A task whose every pair stands behind validation code (``with_code_context``): what
    ``prune --context-tokens N`` prunes on, so a circuit can be sized at long context.

    ``generate(n, seed, split)`` is the task's own items with code before each pair. The
    test split draws its code with ``test_context`` (built with the items' seed it gives
    pair ``i`` the same code as ``tasks eval --context-tokens`` does); the train split with
    ``train_context``, drawn apart, so train and test prompts never share their code by
    construction. Answers are unchanged. Picklable (the tokenizer and the validation
    tokens travel with it), so search workers rebuild the same items.
    """

    def __init__(self, task, tokenizer, n_tokens: int, test_context: CodeContext,
                 train_context: CodeContext) -> None:
        self.task, self.tokenizer, self.n_tokens = task, tokenizer, int(n_tokens)
        self.contexts = {"test": test_context, "train": train_context}
        self.name = task.name

    def generate(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        from .base import flatten

        items = self.task.generate(n, seed=seed, split=split)
        context = self.contexts["test" if split == "test" else "train"]
        flat = with_code_context(flatten(items), self.tokenizer, context, self.n_tokens)
        return [TaskItem(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def __repr__(self) -> str:
        return f"ContextTask({self.name!r}, {self.n_tokens} tokens)"


def context_task(run, task, n_tokens: int, seed: int = 0, data_dir: str | Path | None = None) -> ContextTask:
    """``task`` (a built-in name or a ``Task``) behind up to ``n_tokens`` tokens of the run's
    validation code; ``n_tokens`` must be within the model's context (UserError)."""
    block = run.model.cfg.block_size
    if not 1 <= n_tokens <= block:
        raise UserError(f"context tokens must be between 1 and the model's context of {block}, got {n_tokens}")
    if isinstance(task, str):
        from .python_tasks import get_task

        task = get_task(task)
    test = val_context(run, data_dir, n_tokens=n_tokens, seed=seed)
    train = CodeContext(test.tokens, test.eot_id, test.decode, span=test.span, seed=f"train/{seed}")
    return ContextTask(task, run.tokenizer, n_tokens, test, train)
