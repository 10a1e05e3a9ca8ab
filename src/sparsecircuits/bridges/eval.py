"""How well the bridges translate: NMSE per location and the KL of every hybrid path.

Measured on the validation windows of the sparse run's data, the same windows at every
call (the trainer's val stream), so two evaluations of one run agree exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..io import atomic_write_json
from ..rundir import RunDir
from ..train.trainer import VAL_SEED_OFFSET
from .model import BridgedRun, bridge_terms, kl_from



@torch.no_grad()
def evaluate_bridges(br: BridgedRun, n_batches: int | None = None) -> dict:
    """Per location: NMSE of the encoder and the decoder, KL(dense || hybrid) both ways; plus
    both models' val loss and KL(dense || sparse) of the whole sparse model."""
    from ..data.shards import TokenShards

    cfg = br.sparse.config
    shards = TokenShards(br.sparse.data_dir)
    n = n_batches or cfg.train.eval_batches
    locs = br.bridges.locations
    sums = {k: [0.0] * len(locs) for k in ("nmse_encoder", "nmse_decoder", "kl_dense_to_sparse",
                                           "kl_sparse_to_dense")}
    totals = {"sparse_val_loss": 0.0, "dense_val_loss": 0.0, "kl_dense_to_sparse_model": 0.0}
    device = next(br.sparse.model.parameters()).device
    for i in range(n):
        x, y = shards.get_batch("val", cfg.train.batch_size, cfg.seq_len, step=i, seed=cfg.seed + VAL_SEED_OFFSET)
        x, y = x.to(device), y.to(device)  # (B, T)
        terms = bridge_terms(br.dense.model, br.sparse.model, br.bridges, x)
        for key in sums:
            for j, v in enumerate(getattr(terms, key)):
                sums[key][j] += float(v) / n
        totals["sparse_val_loss"] += F.cross_entropy(terms.sparse_logits.flatten(0, 1).float(), y.flatten()).item() / n
        totals["dense_val_loss"] += F.cross_entropy(terms.dense_logits.flatten(0, 1).float(), y.flatten()).item() / n
        totals["kl_dense_to_sparse_model"] += kl_from(terms.dense_logits, terms.sparse_logits).item() / n
    rows = [{"location": loc, **{k: sums[k][j] for k in sums}} for j, loc in enumerate(locs)]
    return {"run": str(br.path), "dense_run": str(br.dense.path), "batches": n,
            "tokens": n * cfg.train.batch_size * cfg.seq_len, **totals, "locations": rows}


def write_eval(br: BridgedRun, result: dict) -> None:
    atomic_write_json(RunDir(br.path).bridge_eval, result)


def format_table(result: dict) -> str:
    """A plain-text table, one row per location."""
    head = f"{'location':<26}{'NMSE enc':>10}{'NMSE dec':>10}{'KL d->s':>10}{'KL s->d':>10}"
    lines = [head, "-" * len(head)]
    for r in result["locations"]:
        lines.append(f"{r['location']:<26}{r['nmse_encoder']:>10.4f}{r['nmse_decoder']:>10.4f}"
                     f"{r['kl_dense_to_sparse']:>10.4f}{r['kl_sparse_to_dense']:>10.4f}")
    lines.append(f"val loss: sparse {result['sparse_val_loss']:.4f}, dense {result['dense_val_loss']:.4f}; "
                 f"KL(dense || sparse) {result['kl_dense_to_sparse_model']:.4f} over {result['tokens']} tokens")
    return "\n".join(lines)
