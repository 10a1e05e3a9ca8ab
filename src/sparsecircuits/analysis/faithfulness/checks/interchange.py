"""interchange: the circuit's nodes carry the task's information in the model itself.

For each test pair, the full model runs on one prompt with only the circuit's nodes taken
from the pair's other prompt (their clean activations there, aligned at the last token as
resample ablation aligns them: ``circuits.masking.resample_sources``); every other node
keeps its own activation.  If the circuit is where the model computes the answer, the
model's answer flips to the other prompt's.  The value is the flip rate: among prompts the
model answers right, the fraction on which it prefers the other answer once patched.  It
passes at 0.8 or more.

Why the full model and not the circuit alone: inside the circuit every other node is
ablated, so patching its nodes nearly runs the circuit on the other prompt and flips
whatever the circuit is.  In the model, the paths the circuit left out still see the
prompt's own information, so a circuit that reached its loss by a path the model does not
use (mean-ablation offsets, a node in another role) leaves the answer where it was.  The
circuit's own flip rate (its nodes patched, the rest ablated as in the circuit) and that of
random node sets of the same composition are in ``data`` beside it.
"""
from __future__ import annotations

import torch

from ....circuits.circuit import calibrated_diff, circuit_diffs, orientation
from ....circuits.masking import Resample, resample_partners, resample_sources
from ....tasks.base import TaskBatch, answer_diff
from ..context import CheckContext, result
from ..registry import register
from .random_baseline import RANDOM_DRAWS, random_keeps

INTERCHANGE_MIN_FLIP = 0.8
CHUNK = 32  # prompts per forward; even, so that a pair's two prompts share a chunk
MAX_RANDOM_DRAWS = 10  # random node sets (a forward pass each, cheap but not free)


def _site_view(vec: torch.Tensor, site) -> torch.Tensor:
    """A site's slice of a flat (n,) vector, shaped to broadcast over its hook tensor."""
    part = vec[site.start:site.stop]
    return part.view(-1, site.d_head) if site.d_head else part


def _patched_hooks(nodes, patch: torch.Tensor, partner: dict, rest) -> list[tuple]:
    """Forward hooks: the ``patch`` nodes take the partner's activation; the others keep
    their own (``rest`` is "own") or take the circuit's ablation value (``rest`` a flat
    (n,) mean vector, None for zero, a ``Resample`` for the partner's)."""
    hooks = []
    for site in nodes.sites:
        def fn(x: torch.Tensor, hook, site=site) -> torch.Tensor:
            p = _site_view(patch, site).to(x.device)
            other = partner[site.hook].to(x.device, x.dtype)
            if isinstance(rest, str):
                base = x
            elif rest is None:
                base = torch.zeros((), dtype=x.dtype, device=x.device)
            elif isinstance(rest, Resample):
                base = other
            else:
                base = _site_view(rest, site).to(x.device, x.dtype)
            return torch.where(p, other, base)
        hooks.append((site.hook, fn))
    return hooks


@torch.no_grad()
def interchange_diffs(model, nodes, batch: TaskBatch, patches: list[torch.Tensor], rest="own",
                      chunk: int = CHUNK) -> torch.Tensor:
    """logit[correct] - logit[incorrect] (R, N) with each of R node sets (n,) bool patched
    from the pair's other prompt (rows 2i and 2i + 1 are partners); ``rest`` as in
    ``_patched_hooks``."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(batch), chunk):
        b = batch.select(slice(start, start + chunk)).to(device)
        partner = resample_sources(model, nodes, b.tokens, b.last_pos)  # per hook (b, T, ...)
        rows = [model.run_with_hooks(b.tokens, fwd_hooks=_patched_hooks(nodes, p, partner, rest),
                                     last_pos=b.last_pos) for p in patches]  # R x (b, V)
        out.append(answer_diff(torch.stack(rows), b).cpu())  # (R, b)
    return torch.cat(out, dim=1)


def paired_rows(batch: TaskBatch) -> torch.Tensor:
    """(N,) bool: rows whose partner's correct answer is their own incorrect one, so that
    "flipped" means answering as the partner (every row of a task's pairs)."""
    partner = resample_partners(len(batch))
    return batch.correct_id[partner] == batch.incorrect_id


def flip_rate(before: torch.Tensor, after: torch.Tensor, rows: torch.Tensor) -> tuple[float | None, int]:
    """Of the ``rows`` answered right ``before`` (diff > 0), the fraction wrong ``after``."""
    right = rows & (before > 0)
    n = int(right.sum())
    return (float((after[right] < 0).float().mean()) if n else None), n


@register("interchange", order=45)
def check_interchange(ctx: CheckContext) -> dict | None:
    batch = ctx.test
    rows = paired_rows(batch)
    if not rows.any():
        return None  # no pairs with swapped answers: nothing to flip
    draws = min(int(ctx.options.get("n_random", RANDOM_DRAWS)), MAX_RANDOM_DRAWS)
    randoms = random_keeps(ctx.nodes, ctx.keep, draws, ctx.seed)
    nothing = torch.zeros_like(ctx.keep)
    model = interchange_diffs(ctx.model, ctx.nodes, batch, [nothing, ctx.keep, *randoms])  # (2 + R, N)
    rate, n = flip_rate(model[0], model[1], rows)
    if rate is None:
        return None  # the model answers no pair right
    random_rates = [flip_rate(model[0], r, rows)[0] for r in model[2:]]
    # inside the circuit: its nodes patched, every other node ablated as in the circuit
    sign = orientation(batch)
    patched = calibrated_diff(interchange_diffs(ctx.model, ctx.nodes, batch, [ctx.keep], rest=ctx.baseline)[0],
                              sign, *ctx.cal)
    plain = calibrated_diff(circuit_diffs(ctx.masked, ctx.keep, batch), sign, *ctx.cal)
    circuit_rate, circuit_n = flip_rate(plain, patched, rows)
    med = float(torch.tensor(random_rates).median()) if random_rates else None
    detail = (f"the circuit's {int(ctx.keep.sum())} nodes taken from the pair's other prompt flip the model's answer "
              f"on {rate:.0%} of {n} prompts it answers right"
              + (f"; random node sets of the same composition: median {med:.0%}" if med is not None else "")
              + (f"; inside the circuit: {circuit_rate:.0%}" if circuit_rate is not None else ""))
    return result(rate, INTERCHANGE_MIN_FLIP, rate >= INTERCHANGE_MIN_FLIP, detail,
                  {"n": n, "circuit_flip_rate": circuit_rate, "circuit_n": circuit_n,
                   "random_flip_rates": random_rates, "random_median": med})

