"""``frontier --ray``: the grid's trainings and prunings as Ray tasks.

One task per model to train and one per model and task to prune.  A pruning task takes
its model's training task as an argument, so Ray starts it as soon as that model exists
and pruning one model overlaps training the next.  The tasks are the serial path's own
functions (``frontier.train_model`` / ``prune_model``) and read and write the same files
(``OUT/<model>/``, its circuits), so a second call reuses what either path made.  That
also means ``OUT`` and the data folder must be on a filesystem every node sees, as for
multi-machine training, and every node needs this package installed.

Each task takes one CPU (plus one GPU when the grid runs on CUDA) and runs torch on one
thread, whatever the machine has: the driver gathers the records in grid order, so
``frontier.json`` matches a serial run at one thread (``OMP_NUM_THREADS=1``), timings aside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

TASK_THREADS = 1  # torch threads per Ray task: one CPU reserved, one thread used


def _one_thread() -> None:
    import torch

    torch.set_num_threads(TASK_THREADS)


def _train_task(point, out: Path, data_dir: Path, device: str) -> dict:
    from .frontier import train_model

    _one_thread()
    return train_model(point, out, data_dir, device, progress=False)


def _prune_task(rec: dict, out: Path, task: str, targets: Sequence[float], settings: dict, force: bool,
                device: str) -> dict:
    from .frontier import prune_model

    _one_thread()
    return prune_model(out / rec["name"], task, targets, settings, force, device, progress=False)


def frontier_on_ray(address: str, points: list, out: Path, data_dir: Path, tasks: Sequence[str],
                    targets: Sequence[float], settings: dict, force: bool, device: str,
                    progress: bool = True) -> list[dict]:
    """The model records of ``points``, trained and pruned on the Ray cluster at ``address``.

    ``"local"`` starts a Ray instance on this machine for the call (shut down after); a
    process already connected to Ray keeps its connection.  A task that fails on bad input
    is re-raised here as the ``UserError`` it was, and the tasks still queued are cancelled.
    """
    from ..cluster import connect, raise_task_error
    from .frontier import _say, model_line, task_line

    ray, started = connect(address)
    pending: list = []
    try:
        res = {"num_cpus": 1, "num_gpus": 1 if device.startswith("cuda") else 0}
        train = ray.remote(**res)(_train_task)
        prune = ray.remote(**res)(_prune_task)
        out, data_dir = Path(out).resolve(), Path(data_dir).resolve()  # workers may start elsewhere
        trained = [train.remote(p, out, data_dir, device) for p in points]
        pruned = [[prune.remote(ref, out, task, list(targets), settings, force, device) for task in tasks]
                  for ref in trained]
        what = {ref: (p.name, None) for p, ref in zip(points, trained)}
        what.update({ref: (p.name, task) for p, row in zip(points, pruned) for task, ref in zip(tasks, row)})
        cpus = ray.cluster_resources().get("CPU", 0)
        _say(f"frontier on Ray ({address}, {cpus:g} CPUs): {len(points)} models to train, "
             f"{len(points) * len(tasks)} pruning runs", progress)
        pending = list(what)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            r = ray.get(ready[0])
            name, task = what[ready[0]]
            line = model_line({**r, "seconds": r["train_seconds"]}) if task is None else task_line(task, r)
            _say(f"{name}: {line.strip()}", progress)
        models = ray.get(trained)
        for rec, row in zip(models, pruned):
            rec["tasks"] = dict(zip(tasks, ray.get(row)))
            rec["seconds"] = round(rec["train_seconds"] + sum(r["seconds"] for r in rec["tasks"].values()), 1)
        return models
    except BaseException as exc:
        _cancel(ray, pending)
        if isinstance(exc, ray.exceptions.RayTaskError):
            raise_task_error(exc)
        raise
    finally:
        if started:
            ray.shutdown()


def _cancel(ray, refs: list) -> None:
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
            pass
