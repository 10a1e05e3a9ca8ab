"""Ray, for the sweeps that spread over a cluster: ``prune --search --ray`` and ``frontier --ray``.

Both connect the same way (``connect``) and turn a task's failure back into the one-line
error it was (``raise_task_error``), so a bad input on a worker reads as it would on one
machine.  Ray is an optional dependency (``pip install 'sparsecircuits[cluster]'``);
nothing here imports it until a sweep asks for it.
"""
from __future__ import annotations

import logging
import os

from .errors import UserError

LOCAL = "local"  # start a Ray instance on this machine, even if one is already running


def local_cpus() -> int:
    """The cores this process may use (its affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'sparsecircuits[cluster]' (or: pip install ray)") from None
    return ray


def connect(address: str):
    """Ray, connected to the cluster at ``address``; returns ``(ray, started)``.

    ``address`` is what ``ray.init`` takes (``"auto"``, ``"HOST:6379"``,
    ``"ray://HOST:10001"``), or ``"local"`` for a new Ray instance on this machine with
    one CPU per core this process may use.  A process that is already connected (it
    called ``ray.init`` itself) keeps its connection and ``started`` is False; otherwise
    the caller owns the connection and should ``ray.shutdown()`` when done.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    options = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address == LOCAL:
        options.update(num_cpus=local_cpus(), include_dashboard=False)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception when a local node starts too slowly
        where = "start a local Ray" if address == LOCAL else f"connect to the Ray cluster at {address!r}"
        raise UserError(f"cannot {where}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray, True


def raise_task_error(exc: BaseException) -> None:
    """Re-raise a Ray task's ``UserError`` as itself (one line, no remote traceback).

    Any other failure is left to the caller (it propagates with Ray's traceback, which is
    what a bug needs).
    """
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UserError):
        raise UserError(str(cause)) from None
