"""Continuing a run by itself after ``torchrun --max-restarts=N`` restarts the process group.

When a worker dies (a SIGKILL, a lost node), torchrun stops the other workers and starts
the group again with the same command line and ``TORCHELASTIC_RESTART_COUNT`` one higher.
That command names an ``--out`` folder which the first attempt already created, so a plain
start would refuse it ("already holds a run"). Instead, a restarted group continues the
run, from its newest checkpoint, but only when all of these hold:

- this process was restarted by torchrun (the restart count is above 0 on some rank);
- the run directory was created by this same torchrun launch: ``launch.json`` records the
  launch's ``TORCHELASTIC_RUN_ID`` (a fresh uuid per ``--standalone`` launch; the
  ``--rdzv-id`` on several nodes), written before anything else in the folder;
- its ``config.json`` equals this command's config, field for field.

So a restart never picks up someone else's run, nor a run of another config: those are
errors that name the folder (and the first differing setting). Without a checkpoint yet,
the run starts over in the same folder. Resuming is bitwise exact (see ``trainer``), so
the restarted run ends with the weights an uninterrupted run would have had.

Resuming reads the checkpoint on every rank, so with several nodes the run directory
must be on a filesystem that all of them see.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_json
from ..rundir import RunDir
from . import checkpoint as ckpt

FRESH, RESUME, START_OVER = 0, 1, 2  # what a restarted group does with its run directory


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 outside torchrun)."""
    try:
        return max(0, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def launch_id() -> str | None:
    """The torchrun launch this process belongs to, or None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def restarted_store(world_size: int):
    """A key space of this attempt's own in torchrun's store for a restarted group on one
    node, or None to let ``init_process_group`` make its store as usual.

    Why: torchrun keeps one TCPStore for every attempt of a job, and the keys of a failed
    attempt stay in it, so a restarted rank can read a dead peer's address there and
    fail to connect to it ("connectFullMesh failed ... Connection refused"). On one node
    every worker has the same restart count, which then names a prefix of its own. With
    several nodes the counts differ (only the node that failed counts the restart), so
    there torchrun must be told not to share its store: ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``.
    """
    attempt = restart_count()
    if (attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
            or os.environ.get("GROUP_WORLD_SIZE", "1") != "1"):
        return None
    import torch.distributed as dist
    from torch.distributed.constants import default_pg_timeout

    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world_size,
                          is_master=False, timeout=default_pg_timeout)
    return dist.PrefixStore(f"sparsecircuits/attempt_{attempt}", store)


def write_launch(out: Path) -> None:
    """Record the torchrun launch that creates ``out`` (a no-op outside torchrun)."""
    run_id = launch_id()
    if run_id is not None:
        atomic_write_json(RunDir(out).launch, {"torchelastic_run_id": run_id})


def _recorded_launch(out: Path) -> str | None:
    try:
        data = json.loads(RunDir(out).launch.read_text())
    except (OSError, ValueError):
        return None
    return data.get("torchelastic_run_id") if isinstance(data, dict) else None


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted name of the first setting where the JSON values ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}{key}"
            found = first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "(config)"


def plan_after_restart(out: Path, config: dict[str, Any]) -> int:
    """FRESH, RESUME or START_OVER for a restarted group; a UserError if ``out`` is not ours.

    ``config`` is this command's resolved config (``RunConfig.to_dict()``).
    """
    run_dir = RunDir(out)
    has_config = run_dir.config.is_file()
    has_checkpoint = bool(ckpt.list_checkpoints(run_dir.checkpoints))
    recorded = _recorded_launch(out)
    if recorded is None and not has_config and not has_checkpoint:
        return FRESH  # the first attempt died before it created anything
    if recorded is None or recorded != launch_id():
        raise UserError(f"{out} already holds a run from another launch; use --resume to continue it "
                        "or choose another --out")
    if not has_config:
        if has_checkpoint:
            raise UserError(f"cannot continue {out} after a restart: it has checkpoints but no config.json")
    else:
        try:
            saved = json.loads(run_dir.config.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot continue {out} after a restart: unreadable config.json ({exc})") from None
        mine = json.loads(json.dumps(config))  # the same JSON types as the saved file
        diff = first_difference(saved, mine)
        if diff:
            raise UserError(f"cannot continue {out} after a restart: its config differs from this "
                            f"command's in {diff}")
    return RESUME if has_checkpoint else START_OVER
