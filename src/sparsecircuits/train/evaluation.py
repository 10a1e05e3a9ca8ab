"""Pretraining evaluation: val loss next to a unigram baseline, and nonzeros per tensor."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..model.sparsity import is_dense_name


def unigram_baseline(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val under train's add-one-smoothed unigram frequencies.

    The loss a model gets by ignoring context: a trained model must beat it clearly.
    """
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(val_tokens)].mean())


@torch.no_grad()
def nonzero_table(model: torch.nn.Module) -> list[dict[str, Any]]:
    """One row per parameter: shape, numel, nonzeros, density, and whether it is kept dense."""
    rows = []
    for name, p in model.named_parameters():
        nz = int(torch.count_nonzero(p).item())
        rows.append({"name": name, "shape": list(p.shape), "numel": p.numel(), "nonzero": nz,
                     "density": nz / p.numel(), "dense_by_design": is_dense_name(name)})
    return rows


def evaluate_run(run, n_batches: int = 40) -> dict[str, Any]:
    from ..data.shards import TokenShards
    from .trainer import evaluate_loss

    if run.data_dir is None or not (run.data_dir / "val.bin").is_file():
        from ..errors import UserError

        raise UserError(f"the run's data directory {run.data_dir} is missing; rebuild it with 'data build'")
    shards = TokenShards(run.data_dir)
    val = evaluate_loss(run.model, shards, run.config, "cpu", n_batches=n_batches)
    base = unigram_baseline(shards.train, shards.val, run.config.model.vocab_size)
    rows = nonzero_table(run.model)
    sparse = [r for r in rows if not r["dense_by_design"]]
    total = sum(r["numel"] for r in sparse)
    nz = sum(r["nonzero"] for r in sparse)
    return {"val_loss": val, "unigram_loss": base, "val_bits_per_token": val / math.log(2),
            "nonzero_frac": nz / max(total, 1), "nonzero": nz, "sparse_numel": total,
            "params": run.model.num_params(), "tensors": rows}
