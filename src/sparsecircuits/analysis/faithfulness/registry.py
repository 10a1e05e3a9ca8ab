"""The checks by name: each module of ``faithfulness/checks/`` registers its own.

A check is a function ``(CheckContext) -> result or None`` (None: nothing to measure, e.g.
no shifted prompt fits the context).  ``register`` records it with its place in the report
card's order and, for a check that only makes sense for some tasks, those tasks.  Adding a
check is adding a module to ``checks/``: every module there is imported on first use.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

_REGISTRY: dict[str, "Check"] = {}


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable  # (CheckContext) -> dict | None
    order: int  # place in the report card
    tasks: tuple[str, ...] = ()  # the only tasks it applies to; () = every task

    def applies_to(self, task_name: str) -> bool:
        return not self.tasks or task_name in self.tasks


def register(name: str, order: int, tasks: tuple[str, ...] = ()) -> Callable:
    """Decorator: make ``fn`` the check called ``name``."""

    def add(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"two checks are called {name!r}")
        _REGISTRY[name] = Check(name, fn, order, tuple(tasks))
        return fn

    return add


def all_checks() -> list[Check]:
    """Every registered check, in report-card order."""
    from . import checks

    for mod in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"{checks.__name__}.{mod.name}")
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))
