"""A user's own task (a list of ``TaskExample`` or ``TaskItem`` pairs, e.g. from a JSONL
file), with its one train/test split.

Registered tasks generate fresh train and test items; a user task has only the examples
it was given, so a quarter of them is held out as its test items.  Pruning, the checks
and every later look at a circuit must hold out the very same quarter, or a circuit
would be judged on the items it was pruned on: hence this one class.
"""
from __future__ import annotations

import random
from typing import Sequence

from ..errors import UserError
from .base import TaskExample, TaskItem, example_units

MIN_UNITS = 4  # at least three to prune on and one to test


class ExamplesTask:
    """A user task seen through ``generate(n, seed, split)``.

    The items (pairs kept whole) are shuffled by ``random.Random(f"split/{seed}")`` and the
    first quarter (at least one) is the test split, the rest the train split.  ``n`` is
    ignored: the whole split is returned.  ``group`` is 2 for pairs, 1 for plain examples.
    """

    def __init__(self, name: str, examples: Sequence[TaskExample | TaskItem]) -> None:
        self.name = name
        self.items = list(examples)
        units, self.group = example_units(self.items, name)
        if len(units) < MIN_UNITS:
            raise UserError(f"task {name}: need at least {MIN_UNITS} examples to split into train and test, "
                            f"got {len(units)}")

    def generate(self, n: int, seed: int = 0, split: str = "train") -> list:
        items = list(self.items)
        random.Random(f"split/{seed}").shuffle(items)
        n_test = max(1, len(items) // 4)  # a quarter held out, never used for pruning
        return items[:n_test] if split == "test" else items[n_test:]
