"""Shifted variants of the tasks: the same choice asked about prompts pruning never saw.

A circuit found on one prompt distribution can generalise differently from the model it
came from (docs/method.md §5).  To see whether it does, the report card evaluates the circuit and
the full model on prompts that ask the same question in a different setting:

* ``single_double_quote``: longer strings (``long_string``), call openers absent from the
  task generator (``new_openers``), the string deeper inside nested blocks
  (``deep_nesting``);
* ``bracket_counting``: longer lists (``long_lists``), variable names absent from the
  generator (``new_names``), the list passed as a call argument (``in_call``);
* every task, these two included: the task's own test items after a block of ordinary
  library code (``prefix_code``), and for tasks without specific variants also after a
  comment block (``prefix_comment``).  A prefix is complete, balanced code that ends
  with a blank line, so it never changes the answer.

Also the two failure probes the paper predicts for bracket counting (docs/method.md §4): a stray
``[`` in a comment before the list (``bracket_stray_items``) and very long lists
(``bracket_length_items``).

Every generator is deterministic in ``(n, seed)`` and draws from ``random.Random``
seeded by the variant's name, so any process builds the same items.
"""
from __future__ import annotations

import random
from typing import Callable

from ..tasks.base import TaskExample, TaskItem
from ..tasks.python_tasks import draw_distinct, flat_and_nested, list_elements

# ---------------------------------------------------------------------------- prefixes

# Complete, bracket-balanced snippets in the style of the standard library.
CODE_PREFIXES = [
    "import os\nimport sys\n\n\n",
    "from collections import namedtuple\n\nPoint = namedtuple('Point', 'x y')\n\n\n",
    "def _noop(*args, **kwargs):\n    return None\n\n\n",
    "__all__ = ['load', 'dump']\n\n_default = None\n\n\n",
    "class Error(Exception):\n    pass\n\n\n",
    "def _get_size(obj):\n    try:\n        return len(obj)\n    except TypeError:\n        return 0\n\n\n",
    "_cache = {}\nMAX_SIZE = 1024\n\n\n",
    "import re\n\n_pattern = re.compile(r'\\w+')\n\n\n",
    "def is_empty(seq):\n    \"\"\"Return True if seq has no items.\"\"\"\n    return not seq\n\n\n",
    "try:\n    import threading\nexcept ImportError:\n    threading = None\n\n\n",
]

COMMENT_PREFIXES = [
    "# This module is part of the standard library.\n# See the documentation for details.\n\n",
    "# Copyright 2001 Python Software Foundation.\n# All rights reserved.\n\n",
    "\"\"\"Utility functions used by the test suite.\"\"\"\n\n",
    "# XXX: this could be faster, but it is rarely called.\n\n",
    "#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\n\n",
]


def _rng(*parts) -> random.Random:
    return random.Random("variant/" + "/".join(str(p) for p in parts))


def _prefixed(items: list, prefixes: list[str], rng: random.Random) -> list:
    """Each pair with one prefix prepended to both of its prompts (or each plain example)."""
    out: list = []
    for it in items:
        p = rng.choice(prefixes)
        if isinstance(it, TaskExample):
            out.append(TaskExample(p + it.prompt, it.correct, it.incorrect))
        else:
            out.append(TaskItem(TaskExample(p + it.a.prompt, it.a.correct, it.a.incorrect),
                                TaskExample(p + it.b.prompt, it.b.correct, it.b.incorrect)))
    return out


def prefix_variant(items: list, kind: str = "code", seed: int = 0) -> list:
    """The generic shift: the same items after a block of code (``kind="code"``) or comments."""
    prefixes = CODE_PREFIXES if kind == "code" else COMMENT_PREFIXES
    return _prefixed(items, prefixes, _rng("prefix", kind, seed))


# ---------------------------------------------------------------------------- helpers


def _pair(prompt_a: str, prompt_b: str, ans_a: str, ans_b: str) -> TaskItem:
    return TaskItem(TaskExample(prompt_a, ans_a, ans_b), TaskExample(prompt_b, ans_b, ans_a))


def _many(n: int, make: Callable[[random.Random], TaskItem], rng: random.Random) -> list[TaskItem]:
    """``n`` items, distinct where the generator allows (it repeats rather than hangs)."""
    return draw_distinct(n, make, rng, patience=50 * n + 100)


_WORDS = ["invalid", "value", "file", "expected", "string", "cannot", "open", "unknown", "option",
          "error", "reading", "missing", "argument", "found", "name", "directory", "empty", "list",
          "key", "integer", "failed", "connect", "server", "closed", "end", "data", "line", "long"]


def _function_head(rng: random.Random) -> tuple[str, int]:
    fn = rng.choice(["process", "check", "load", "handle", "run", "update", "parse"])
    if rng.random() < 0.4:
        return f"    def {fn}(self):\n", 8
    return f"def {fn}(args):\n", 4


# ---------------------------------------------------------------------------- single_double_quote


def _quote_pair(rng: random.Random, opener: str, text: str, head: str, ind: int, pre: str) -> TaskItem:
    prompt = head + pre + " " * ind + opener
    return _pair(prompt + '"' + text, prompt + "'" + text, '")', "')")


def _quote_long_string(rng: random.Random) -> TaskItem:
    head, ind = _function_head(rng)
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(7, 14)))
    return _quote_pair(rng, rng.choice(["print(", "raise ValueError(", "log.debug("]), text, head, ind, "")


def _quote_new_openers(rng: random.Random) -> TaskItem:
    head, ind = _function_head(rng)
    opener = rng.choice(["logger.info(", "self.assertIn(name, ", "out.write(", "errors.append(",
                         "raise OSError(", "return str(", "self.emit(", "sys.stderr.write(",
                         "assert ok, (", "names.add(", "parts.insert(0, "])
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    return _quote_pair(rng, opener, text, head, ind, "")


def _quote_deep_nesting(rng: random.Random) -> TaskItem:
    head, ind = _function_head(rng)
    pre = ""
    for _ in range(rng.randint(2, 3)):
        pre += " " * ind + rng.choice(["for item in items:\n", "if not data:\n", "while True:\n",
                                       "try:\n", "with lock:\n", "if verbose:\n"])
        ind += 4
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    return _quote_pair(rng, rng.choice(["print(", "raise ValueError(", "warnings.warn("]), text, head, ind, pre)


# ---------------------------------------------------------------------------- bracket_counting


def bracket_pair(rng: random.Random, k: int, target: str | None = None, lead: str = "",
                 opener: str = "") -> TaskItem:
    """A flat list of ``k`` elements (answer ``]``) vs the same elements nested in groups
    of two or three (answer ``]]``), after ``lead`` and ``target = `` (or ``opener``)."""
    elems = list_elements(rng, k, _WORDS, ["x", "y", "n", "a", "b", "None", "True", "False"], 0.2, 0.4)
    flat, nested = flat_and_nested(rng, elems)
    if not opener:
        opener = (target or rng.choice(["x", "data", "result", "items", "values"])) + " = "
    return _pair(lead + opener + flat, lead + opener + nested, "]", "]]")


def _bracket_long_lists(rng: random.Random) -> TaskItem:
    return bracket_pair(rng, rng.randint(9, 16))


def _bracket_new_names(rng: random.Random) -> TaskItem:
    target = rng.choice(["matrix", "grid", "samples", "out", "buf", "entries", "TESTS", "self.rows",
                         "cls.cases", "params"])
    return bracket_pair(rng, rng.randint(3, 7), target=target)


def _bracket_in_call(rng: random.Random) -> TaskItem:
    opener = rng.choice(["print(", "self.assertEqual(result, ", "check(", "run(", "f(", "sorted("])
    return bracket_pair(rng, rng.randint(3, 7), opener=opener)


STRAY_COMMENTS = ["# see [1\n", "# TODO: handle x[i\n", "# format: [name, value\n", "# [deprecated\n",
                  "# items are [key, value\n", "# note: args[0 is the name\n"]


def bracket_stray_items(n: int, seed: int = 0) -> list[TaskItem]:
    """Bracket counting with an unclosed ``[`` in a comment line before the list (docs/method.md §4)."""
    rng = _rng("bracket_stray", seed)
    return _many(n, lambda r: bracket_pair(r, r.randint(3, 7), lead=r.choice(STRAY_COMMENTS)), rng)


def bracket_length_items(length: int, n: int, seed: int = 0) -> list[TaskItem]:
    """Bracket counting with lists of exactly ``length`` elements."""
    rng = _rng("bracket_length", length, seed)
    return _many(n, lambda r: bracket_pair(r, length), rng)


# ---------------------------------------------------------------------------- registry

SPECIFIC: dict[str, dict[str, Callable[[random.Random], TaskItem]]] = {
    "single_double_quote": {
        "long_string": _quote_long_string,
        "new_openers": _quote_new_openers,
        "deep_nesting": _quote_deep_nesting,
    },
    "bracket_counting": {
        "long_lists": _bracket_long_lists,
        "new_names": _bracket_new_names,
        "in_call": _bracket_in_call,
    },
}


def variant_names(task_name: str) -> list[str]:
    """The variants ``variant_items`` builds for a task, in order."""
    specific = list(SPECIFIC.get(task_name, {}))
    return specific + (["prefix_code"] if specific else ["prefix_code", "prefix_comment"])


def variant_items(task_name: str, base_items: list, n: int, seed: int = 0) -> dict[str, list]:
    """Shifted items per variant name: ``n`` pairs each.

    ``base_items`` are the task's own held-out items (``TaskItem`` pairs, or plain
    ``TaskExample``s of a user task), which the generic prefix variants shift; the
    task-specific variants are generated afresh.
    """
    out: dict[str, list[TaskItem]] = {}
    for name, make in SPECIFIC.get(task_name, {}).items():
        out[name] = _many(n, make, _rng(task_name, name, seed))
    base = list(base_items)[:n]
    if base:
        out["prefix_code"] = prefix_variant(base, "code", seed)
        if task_name not in SPECIFIC:
            out["prefix_comment"] = prefix_variant(base, "comment", seed)
    return out
