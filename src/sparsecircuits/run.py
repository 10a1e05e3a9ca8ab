"""Loading a finished run directory: model, tokenizer and config in one object."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig
from .errors import UserError
from .model.gpt import GPT


@dataclass
class Run:
    path: Path
    config: RunConfig
    model: GPT
    tokenizer: "object"  # tokenizers.Tokenizer

    @property
    def data_dir(self) -> Path | None:
        d = self.config.data.data_dir
        return Path(d) if d else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))


def load_weights(model: GPT, path: Path) -> None:
    """Load ``model.safetensors`` strictly; a damaged file is a one-line UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"weights file {path} is unreadable: {exc}") from None
    if model.cfg.tied_unembed and "lm_head.weight" not in sd and "wte.weight" in sd:
        sd["lm_head.weight"] = sd["wte.weight"]
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise UserError(f"weights file {path} does not match config.json: {str(exc).splitlines()[0]}") from None


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Open ``runs/NAME``: the model in eval mode, its tokenizer and its config."""
    from .data.tokenizer import load_tokenizer

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a run directory (no config.json)")
    cfg = RunConfig.load(path / "config.json")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{path} has no model.safetensors (training not finished? try 'train --resume')")
    model = GPT(cfg.model)
    load_weights(model, weights)
    model.to(device).eval()
    tokenizer = load_tokenizer(path / "tokenizer.json")
    return Run(path=path, config=cfg, model=model, tokenizer=tokenizer)
