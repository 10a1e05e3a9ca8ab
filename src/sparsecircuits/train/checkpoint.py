"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``checkpoints/step_000123/`` holding ``state.safetensors``
(model weights under ``model.*``, AdamW moments under ``optim.<param>.*``, the torch RNG
state) and ``state.json`` (step, tokens seen, config, metadata). It is written into a
hidden temporary folder and renamed into place, so a kill or a full disk mid-write
leaves the previous checkpoint whole; ``state.json`` is written last and names the
tensor file's sha256, so a truncated or altered checkpoint is detected on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt_dir/step_{step}`` atomically and prune to the newest ``keep``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:07d}.", dir=ckpt_dir))
    try:
        save_file(tensors, str(tmp / STATE_TENSORS))
        meta = dict(meta, step=step, tensors_sha256=_sha256(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are ignored)."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir()
             if p.is_dir() and p.name.startswith("step_") and (p / STATE_JSON).is_file()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint; any damage is a UserError naming the folder."""
    try:
        meta = json.loads((path / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None
