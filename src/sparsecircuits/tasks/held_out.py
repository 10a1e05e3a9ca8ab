"""The held-out task texts that generated training code must never contain.

Generated simple Python (``data.simple_python``) is written apart from the task
generators, but a short idiom such as ``with open('input.txt', 'r`` can coincide with a
held-out prompt. Data builds drop every generated module that contains one of these
strings, and ``sparsecircuits data check-leaks`` searches the finished shards for them.
"""
from __future__ import annotations

from ..data.leaks import held_out_texts
from .python_tasks import TASKS

# Held-out pairs per task that are kept out of generated code: more than `tasks eval`
# scores by default (200), so evaluation and the leak check stay inside the guarded set.
HELD_OUT_GUARD_ITEMS = 500


def held_out_answers(n_items: int = HELD_OUT_GUARD_ITEMS, seed: int = 0) -> set[str]:
    """Every task's held-out prompts with their correct answers appended, as one set."""
    return set().union(*held_out_texts(TASKS, n_items, seed).values())
