"""Does any held-out task prompt, with its answer, occur verbatim in the training shards?

A model scored on task items it was trained on would be scored on memory, not on what
it learned about Python. The corpus is real code plus (optionally) generated simple
Python written apart from the task generators; this check makes that claim testable:
it decodes the train split and looks for every held-out prompt followed by its correct
answer.

Generated simple Python is filtered with the same search when a data dir is built
(``simple_python.generate_corpus(exclude=...)``), so whatever this finds comes from the
real code of the corpus: one-line idioms such as ``with open(path, 'rb') as`` that occur
in the standard library as in any code base.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ahocorasick
import numpy as np
from tokenizers import Tokenizer

from .shards import TokenShards

DECODE_CHUNK_TOKENS = 1_000_000


@dataclass
class LeakReport:
    """Held-out strings checked per task, and those found verbatim in the train split."""

    checked: dict[str, int] = field(default_factory=dict)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    train_tokens: int = 0

    @property
    def n_leaks(self) -> int:
        return sum(len(v) for v in self.leaks.values())

    def to_json(self) -> dict:
        return {"train_tokens": self.train_tokens, "checked": self.checked, "n_leaks": self.n_leaks,
                "leaks": {k: v for k, v in self.leaks.items() if v}}


def decode_split(data_dir: str | Path, split: str = "train") -> str:
    """The split's text, documents joined by newlines (the end-of-text token dropped)."""
    shards = TokenShards(data_dir)
    tok = Tokenizer.from_file(str(shards.tokenizer_path))
    ids = np.asarray(shards.tokens(split))
    docs = np.split(ids, np.flatnonzero(ids == shards.eot_id))
    parts, batch, size = [], [], 0
    for doc in docs:
        doc = doc[1:] if len(doc) and doc[0] == shards.eot_id else doc
        batch.append(doc.astype(np.int64).tolist())
        size += len(doc)
        if size >= DECODE_CHUNK_TOKENS:
            parts.extend(tok.decode_batch(batch, skip_special_tokens=True))
            batch, size = [], 0
    if batch:
        parts.extend(tok.decode_batch(batch, skip_special_tokens=True))
    return "\n".join(parts)


def occurring(strings: Iterable[str], text: str) -> set[str]:
    """The ``strings`` that occur verbatim in ``text``: one Aho-Corasick pass over the text,
    whatever the number of strings (tens of thousands of prompts against tens of MB)."""
    automaton = ahocorasick.Automaton()
    for s in set(strings):
        if s:
            automaton.add_word(s, s)
    if len(automaton) == 0:
        return set()
    automaton.make_automaton()
    return {s for _, s in automaton.iter(text)}


def held_out_texts(tasks: dict, n_items: int = 200, seed: int = 0) -> dict[str, set[str]]:
    """Each task's held-out prompts followed by their correct answers."""
    return {name: {ex.prompt + ex.correct for item in task.generate(n_items, seed=seed, split="test")
                   for ex in (item.a, item.b)}
            for name, task in tasks.items()}


def find_leaks(data_dir: str | Path, tasks: dict, n_items: int = 200, seed: int = 0,
               text: str | None = None) -> LeakReport:
    """Search the train split for each task's held-out prompts followed by their answers.

    ``tasks`` maps names to ``Task`` objects; ``text`` (the decoded train split) can be
    passed in to check several task sets against one decode.
    """
    text = decode_split(data_dir) if text is None else text
    report = LeakReport(train_tokens=len(TokenShards(data_dir).train))
    for name, wanted in held_out_texts(tasks, n_items, seed).items():
        report.checked[name] = len(wanted)
        report.leaks[name] = sorted(occurring(wanted, text))
    return report
