"""Pretraining evaluation: val loss next to a unigram baseline, nonzeros per tensor, and
the model's own measures the paper tracks beside loss (residual kurtosis, dead nodes,
activation density per AbsTopK site)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..model.sparsity import is_dense_name
from ..sites import SITES


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


# The AbsTopK sites (by their model.afrac_sites names) and their hook name suffix per block.
SITE_HOOKS = {s.switch: s.hook for s in SITES}


@torch.no_grad()
def model_measures(model: torch.nn.Module, windows) -> dict[str, Any]:
    """Measures of the trained network itself, over val ``windows`` ((b, T) token batches).

    - ``residual_kurtosis``: the kurtosis across channels of each token's final residual
      stream (before the last norm), averaged over tokens; 3 for a Gaussian. A residual
      basis the model uses channel by channel (what weight sparsity encourages) has a few
      large channels per token and a high kurtosis.
    - ``dead_neuron_frac`` / ``dead_attn_channel_frac``: MLP neurons, and q/k/v channels,
      that are zero at every token seen (never kept by AbsTopK or without weights).
    - ``activation_density``: the fraction of nonzero entries at each AbsTopK site.
    """
    n_layer = len(model.blocks)
    last = f"blocks.{n_layer - 1}.hook_resid_post"
    names = {f"blocks.{i}.{h}" for i in range(n_layer) for h in SITE_HOOKS.values()} | {last}
    kurt_sum, n_tok = 0.0, 0
    nonzero = {site: 0 for site in SITE_HOOKS}
    total = {site: 0 for site in SITE_HOOKS}
    alive: dict[str, torch.Tensor] = {}
    for x in windows:
        _, cache = model.run_with_cache(x, names_filter=lambda n: n in names)
        r = cache[last].double()  # (b, T, D)
        c = r - r.mean(-1, keepdim=True)
        var = c.pow(2).mean(-1)  # (b, T)
        kurt = c.pow(4).mean(-1) / var.pow(2).clamp_min(1e-30)
        kurt_sum += float(kurt.sum())
        n_tok += kurt.numel()
        for i in range(n_layer):
            for site, hook in SITE_HOOKS.items():
                a = cache[f"blocks.{i}.{hook}"]
                nonzero[site] += int(torch.count_nonzero(a))
                total[site] += a.numel()
                if site in ("attn_q", "attn_k", "attn_v", "mlp_neuron"):
                    used = (a != 0).flatten(0, -3 if a.dim() == 4 else -2).any(0)  # (H, Dh) or (d_mlp,)
                    key = f"{i}.{site}"
                    alive[key] = used if key not in alive else alive[key] | used
    def dead(sites) -> float:
        masks = [m for k, m in alive.items() if k.split(".")[1] in sites]
        return 1.0 - sum(int(m.sum()) for m in masks) / max(sum(m.numel() for m in masks), 1)
    return {
        "residual_kurtosis": kurt_sum / max(n_tok, 1),
        "dead_neuron_frac": dead(("mlp_neuron",)),
        "dead_attn_channel_frac": dead(("attn_q", "attn_k", "attn_v")),
        "activation_density": {site: nonzero[site] / max(total[site], 1) for site in SITE_HOOKS},
        "tokens": n_tok,
    }


def save_evaluation(run_dir, result: dict[str, Any]) -> None:
    """Write ``evaluate_run``'s result (without the per-tensor table) to ``RUN/eval.json``,
    whose measures the report's index page shows."""
    from ..rundir import RunDir

    RunDir(run_dir).write_eval({k: v for k, v in result.items() if k != "tensors"})


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
    run.model.eval()
    windows = (x for x, _ in shards.iter_val_windows(run.config.model.block_size, max_windows=8 * n_batches,
                                                      batch_size=8))
    return {"val_loss": val, "unigram_loss": base, "val_bits_per_token": val / math.log(2),
            "nonzero_frac": nz / max(total, 1), "nonzero": nz, "sparse_numel": total,
            "params": run.model.num_params(), "measures": model_measures(run.model, windows), "tensors": rows}
