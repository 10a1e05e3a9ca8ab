"""Loading a finished run directory: model, tokenizer and config in one object."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig
from .errors import UserError
from .model.gpt import GPT
from .rundir import RunDir


class MissingTokenizer:
    """Stands in for the tokenizer of a run that has none (an imported model released
    without one): false in a boolean test, and any use (encode, decode, a vocabulary
    lookup) is a one-line UserError, so code that needs text fails clearly while the
    model keeps working on token ids."""

    def __init__(self, run_path: Path) -> None:
        self._run_path = run_path

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise UserError(f"{self._run_path} has no tokenizer.json, so it cannot turn text into tokens or back; "
                        "its model still takes token ids (run.model(tokens)); add one with "
                        "'import-openai SRC --out RUN --tokenizer PATH' or copy a tokenizer.json into the run")


@dataclass
class Run:
    path: Path
    config: RunConfig
    model: GPT
    tokenizer: "object"  # tokenizers.Tokenizer, or a MissingTokenizer for a run without one

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


def load_run(path: str | Path, device: str = "cpu", checkpoint: int | None = None) -> Run:
    """Open ``runs/NAME``: the model in eval mode, its tokenizer and its config.

    ``checkpoint=STEP`` opens the weights of that step instead (kept during training, or a
    resumable checkpoint still on disk; ``train/kept.py``): the run's path is then the kept
    step's own folder, so node means and circuits computed from it are cached there, apart
    from the final model's.

    A run without ``tokenizer.json`` (an imported model released without one) still
    loads, with a ``MissingTokenizer``: its model works on token ids, and only encoding or
    decoding text raises, saying how to add a tokenizer.
    """
    from .data.tokenizer import load_tokenizer

    path = Path(path)
    run_dir = RunDir(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    if not run_dir.is_run():
        raise UserError(f"{path} is not a run directory (no config.json)")
    cfg = run_dir.read_config()
    weights_dir = run_dir
    if checkpoint is not None:
        from .train.kept import kept_run_dir

        weights_dir = kept_run_dir(run_dir, int(checkpoint))
    elif not run_dir.weights.is_file():
        raise UserError(f"{path} has no model.safetensors (training not finished? try 'train --resume')")
    model = GPT(cfg.model)
    load_weights(model, weights_dir.weights)
    model.to(device).eval()
    tokenizer = load_tokenizer(run_dir.tokenizer) if run_dir.tokenizer.exists() else MissingTokenizer(path)
    return Run(path=weights_dir.path, config=cfg, model=model, tokenizer=tokenizer)
