"""Hook points: identity modules that name an activation, TransformerLens-style.

A hook function gets ``(activation, hook)`` and may return a replacement tensor. Hooks
are attached for the duration of one call (``run_with_hooks`` / ``run_with_cache``) and
always removed afterwards, even when the forward pass raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]
NameFilter = "str | Callable[[str], bool] | Iterable[str] | None"


class HookPoint(nn.Module):
    """Identity on the forward pass, plus any hook functions attached for a call."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self._fns: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self._fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x


def _matcher(names) -> Callable[[str], bool]:
    if names is None:
        return lambda n: True
    if isinstance(names, str):
        return lambda n: n == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda n: n in wanted


class HookedMixin:
    """``run_with_hooks`` and ``run_with_cache`` for any module holding HookPoints."""

    def setup_hooks(self) -> None:
        self._hook_points: dict[str, HookPoint] = {}
        for name, mod in self.named_modules():  # type: ignore[attr-defined]
            if isinstance(mod, HookPoint):
                mod.name = name
                self._hook_points[name] = mod

    def hook_points(self) -> dict[str, HookPoint]:
        return dict(self._hook_points)

    @contextmanager
    def hooks(self, fwd_hooks: list[tuple]) -> Iterator[None]:
        """Attach ``[(name_or_filter, fn), ...]`` for the body of the ``with``."""
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                match = _matcher(names)
                hits = [hp for n, hp in self._hook_points.items() if match(n)]
                if isinstance(names, str) and not hits:
                    raise KeyError(f"no hook point named {names!r}")
                for hp in hits:
                    hp._fns.append(fn)
                    attached.append((hp, fn))
            yield
        finally:
            for hp, fn in attached:
                hp._fns.remove(fn)

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: list[tuple] = (), **kwargs):
        with self.hooks(list(fwd_hooks)):
            return self(tokens, **kwargs)  # type: ignore[operator]

    def run_with_cache(self, tokens: torch.Tensor, names_filter=None, detach: bool = True,
                       fwd_hooks: list[tuple] = (), **kwargs):
        """Return ``(logits, cache)`` where cache maps hook names to activations."""
        cache: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        with self.hooks(list(fwd_hooks) + [(names_filter, save)]):
            logits = self(tokens, **kwargs)  # type: ignore[operator]
        return logits, cache
