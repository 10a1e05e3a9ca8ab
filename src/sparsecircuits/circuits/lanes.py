"""Lanes: the chunks of one masked evaluation or optimisation step run side by side.

Pruning, the checks and node details are many small passes through fixed weights: a few
thousand token rows, 128 wide, per forward.  torch's own threads split each op in two;
running whole chunks of prompts at once in worker threads, each with one torch thread,
does better: on an optimisation step's four length buckets, 1.73x over one thread
against 1.52x for two torch threads (a whole pruning 1.13x faster than with two torch
threads).  torch releases the GIL inside every op, and a chunk is a few hundred of them.

Each lane runs its own copy of the model, because a masked forward pass changes the
modules it runs (hooks are attached to its hook points, skipped modules are swapped for
stand-ins; ``masking.MaskedModel``, ``skip.py``).  The copies are made once, on entry to
``spread``, from the model as it then is (AbsTopK kernels included) with their weights
frozen, and dropped on exit.

Results never depend on the number of lanes: a chunk is computed the same way whichever
lane takes it, and ``map_masked`` returns the results in chunk order, so the caller
combines them in one fixed order (with one lane the chunks simply run in turn).
"""
from __future__ import annotations

import queue
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from .masking import MaskedModel

T = TypeVar("T")
R = TypeVar("R")

# A cap by judgement, not measurement (only two cores were at hand): every lane also runs
# the Python between its ops (hooks, modules) under the GIL, so many lanes would queue on it;
# past the cap, the threads are shared out among the lanes instead (``spread``).
MAX_LANES = 4

_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, Lanes]" = weakref.WeakKeyDictionary()


class Lanes:
    """``n`` worker threads and ``n`` copies of a model (the first is the model itself).

    A task borrows a free copy for its length; since there are as many copies as
    threads, one is always free.  Each worker runs ``threads`` torch threads.
    """

    def __init__(self, model: nn.Module, n: int, threads: int = 1) -> None:
        if n < 2:
            raise ValueError(f"lanes need n >= 2, got {n}")
        self.models = [model] + [_frozen_copy(model) for _ in range(n - 1)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(n):
            self._free.put(i)
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="lane", initializer=torch.set_num_threads,
                                        initargs=(max(1, threads),))

    def map(self, fn: Callable[[nn.Module, T], R], items: Sequence[T]) -> list[R]:
        """``[fn(model_copy, item) for item in items]``, the items spread over the lanes.

        The caller's grad mode holds in the workers too (it is thread-local in torch)."""
        grad = torch.is_grad_enabled()

        def task(item: T) -> R:
            i = self._free.get()
            try:
                with torch.set_grad_enabled(grad):
                    return fn(self.models[i], item)
            finally:
                self._free.put(i)

        futures = [self._pool.submit(task, item) for item in items]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.models = self.models[:1]


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose weights need no gradient (lanes only run fixed weights)."""
    from ..model.sparse_linear import copy_model

    clone = copy_model(model)  # a frozen model's copy keeps its frozen modules valid
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def lanes_of(model: nn.Module) -> Lanes | None:
    """The lanes ``spread`` set up for ``model``, if its block is running."""
    return _ACTIVE.get(model)


def default_lanes(threads: int) -> int:
    """Lanes for a budget of ``threads`` torch threads (0: torch's current count)."""
    threads = threads if threads > 0 else torch.get_num_threads()
    return max(1, min(threads, MAX_LANES))


@contextmanager
def spread(model: nn.Module, n: int, threads: int = 0) -> Iterator[Lanes | None]:
    """Run ``map_masked`` work on ``model`` over ``n`` lanes inside the block.

    Nothing happens (the work runs in turn on the caller's thread) for ``n`` < 2, a model
    that is not on the CPU, or one that already has lanes (an enclosing block's serve it).
    ``threads``: the torch threads of the whole block (0: torch's current count), shared
    out among the lanes.
    """
    param = next(model.parameters(), None)
    if n < 2 or param is None or param.device.type != "cpu" or model in _ACTIVE:
        yield None
        return
    total = threads if threads > 0 else torch.get_num_threads()
    lanes = Lanes(model, n, threads=max(1, total // n))
    _ACTIVE[model] = lanes
    try:
        yield lanes
    finally:
        _ACTIVE.pop(model, None)
        lanes.close()


def map_model(model: nn.Module, fn: Callable[[nn.Module, T], R], items: Sequence[T]) -> list[R]:
    """``[fn(model, item) for item in items]``, over ``model``'s lanes when it has some (``fn``
    then gets a lane's copy, which it may hook and swap modules of as it would the model)."""
    lanes = lanes_of(model)
    if lanes is None or len(items) < 2:
        return [fn(model, item) for item in items]
    return lanes.map(fn, items)


def map_masked(masked: MaskedModel, fn: Callable[[MaskedModel, T], R], items: Sequence[T]) -> list[R]:
    """``[fn(masked, item) for item in items]``, over the lanes of ``masked.model`` when it has
    some (each lane gets ``masked`` over its own copy of the model: ``MaskedModel.on_model``)."""
    def on_copy(model: nn.Module, item: T) -> R:
        return fn(masked if model is masked.model else masked.on_model(model), item)

    return map_model(masked.model, on_copy, items)
