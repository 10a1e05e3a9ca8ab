"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``checkpoints/step_000123/`` holding ``state.safetensors``
(model weights under ``model.*``, AdamW moments under ``optim.<param>.*``, the torch RNG
state) and ``state.json`` (step, tokens seen, config, metadata). It is written into a
hidden temporary folder and renamed into place, so a kill or a full disk mid-write
leaves the previous checkpoint whole; ``state.json`` is written last and names the
tensor file's sha256, so a truncated or altered checkpoint is detected on load.
Old checkpoints are also renamed to a hidden name before they are deleted, so a
visible ``step_*`` folder is always a complete one.

A damaged newest checkpoint is an error on resume (naming it, and naming the older
good one if there is one), never silently skipped: with atomic writes it can only come
from outside damage, and the user should see that before hours of training go on.
Hidden temporary folders left by a killed writer are ignored and cleaned up by the next
save.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..io import file_sha256

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
_NAME = re.compile(r"^step_(\d{7,})$")
# Test hook: "STEP:SECONDS" sleeps that long in the middle of writing checkpoint STEP
# (tensors written, state.json not yet), so a test can kill the process mid-save.
SLOW_SAVE_ENV = "SPARSECIRCUITS_TEST_SLOW_SAVE"


_sha256 = file_sha256


def pack_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten model weights, optimizer moments and the RNG state into named tensors."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        tensors[f"model.{name}"] = t.detach().cpu().contiguous()
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            for key, val in st.items():
                val = val if torch.is_tensor(val) else torch.tensor(val)
                tensors[f"optim.{names[id(p)]}.{key}"] = val.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    return tensors


def unpack_state(tensors: dict[str, torch.Tensor], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | None) -> None:
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_sd, strict=True)
    if optimizer is not None:
        params = dict(model.named_parameters())
        device = next(model.parameters()).device
        for key, val in tensors.items():
            if not key.startswith("optim."):
                continue
            pname, skey = key[len("optim."):].rsplit(".", 1)
            p = params[pname]
            state = optimizer.state.setdefault(p, {})
            state[skey] = val.clone() if skey == "step" else val.to(device).clone()
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path, ckpt_dir: Path) -> None:
    """Delete a checkpoint folder so it vanishes at once: rename to a hidden name, then rmtree."""
    hidden = ckpt_dir / f".trash.{path.name}.{os.getpid()}.{time.monotonic_ns()}"
    try:
        os.replace(path, hidden)
    except OSError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _slow_save_hook(step: int) -> None:
    spec = os.environ.get(SLOW_SAVE_ENV)
    if not spec:
        return
    at, _, seconds = spec.partition(":")
    if int(at) == step:
        time.sleep(float(seconds or 60))


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt_dir/step_{step}`` atomically and prune to the newest ``keep``.

    Any OSError (a full disk, say) propagates after the temporary folder is removed;
    the checkpoints already on disk are untouched.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".*"):  # left by a writer that was killed (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_dir / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:07d}.", dir=ckpt_dir))
    try:
        save_file(tensors, str(tmp / STATE_TENSORS))
        _slow_save_hook(step)
        meta = dict(meta, step=step, tensors_sha256=_sha256(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving a step: move the old one aside first, never a gap
            _remove(final, ckpt_dir)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        _remove(old, ckpt_dir)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders ``step_*``, oldest first (hidden temporary folders are ignored).

    A visible folder is complete unless damaged from outside; ``load_checkpoint`` says so.
    """
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint; any damage is a UserError naming the folder."""
    try:
        meta = json.loads((path / STATE_JSON).read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
            raise ValueError(f"{STATE_JSON} has no step")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"checkpoint {path} is corrupt: unreadable {STATE_JSON} ({exc})") from None
    tensor_file = path / STATE_TENSORS
    if not tensor_file.is_file():
        raise UserError(f"checkpoint {path} is corrupt: {STATE_TENSORS} is missing")
    if meta.get("tensors_sha256") != _sha256(tensor_file):
        raise UserError(f"checkpoint {path} is corrupt or truncated: checksum mismatch")
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"checkpoint {path} is corrupt: {exc}") from None
    return tensors, meta


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint folder (not verified: ``load_checkpoint`` does that)."""
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def load_latest(ckpt_dir: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """Load the newest checkpoint; if it is damaged, a UserError naming it (and any older one).

    We do not fall back silently: see the module docstring.
    """
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts:
        raise UserError(f"nothing to resume in {ckpt_dir.parent}: no checkpoint found")
    try:
        tensors, meta = load_checkpoint(ckpts[-1])
    except UserError as exc:
        older = [p for p in ckpts[:-1] if _loads(p)]
        hint = (f"; the older checkpoint {older[-1].name} is intact: delete {ckpts[-1].name} to resume from it"
                if older else "")
        raise UserError(f"{exc}{hint}") from None
    return ckpts[-1], tensors, meta


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except UserError:
        return False
    return True
