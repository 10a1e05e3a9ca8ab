"""Attribution pruning: the paper's baseline for the learned masks.

Every node is scored once, with every node kept, by attribution patching: the gradient of
the task loss with respect to the node's mask at ``m = 1``.  Under the masked forward
``x * m + (1 - m) * baseline`` that gradient is ``sum over positions of dL/dx * (x -
baseline)``, the first-order estimate of what ablating the node would change, so one
forward and one backward pass over the train items score every node.  Nodes are ranked by
the absolute value (a node whose ablation would *help* the task is still one the task
uses), and the smallest top-``K`` meeting the target is found with the very same
bisection and calibration the learned pruner uses (``prune._Prober``); the circuit is
finished by ``prune.finish``, so its ``circuit.json`` has the same shape, with
``metrics["method"] = "attribution"``.

Why this baseline: it is cheap and needs no hyperparameters, so whatever the learned
masks gain over it (the paper reports far smaller circuits) is what the optimisation buys.
"""
from __future__ import annotations

import time
from functools import partial

import torch

from ..config import TARGET_LOSS, PruneSettings
from .circuit import Circuit
from .graph import count_edges
from .lanes import map_masked, spread
from .masking import MaskedModel
from .prune import _Context, _frozen, _Prober, _prepare, _threads, bucket_loss, finish, lane_count, make_settings
from .tying import qk_tie, unit_sum

METHODS = ("learned", "attribution")


def attribution_scores(masked: MaskedModel, batch, batch_size: int = 64) -> torch.Tensor:
    """dL/dm at m = 1 for every node (n,): gradient x (activation - ablation value).

    ``L`` is the mean task loss over ``batch``; chunks of ``batch_size`` prompts are
    weighted by their share so the sum is the gradient of the mean.
    """
    n = masked.nodes.n
    device = next(masked.model.parameters()).device
    total = len(batch)
    chunks = list(torch.arange(total).split(batch_size))
    shares = map_masked(masked, partial(bucket_loss, batch=batch, mask=torch.ones(n), n_rows=total, device=device),
                        chunks)  # chunks side by side: (loss share, its gradient (n,)) each
    out = torch.zeros(n)
    for _, g in shares:  # in chunk order: the sum does not depend on the lanes
        out += g
    return out


def attribution_order(nodes, scores: torch.Tensor, tie_qk: bool = False) -> torch.Tensor:
    """Nodes (n,) by decreasing ``|score|``; with ``tie_qk`` a tied q/k pair is ranked by
    the sum of its two scores, the gradient of the mask they share."""
    if tie_qk:
        scores = unit_sum(scores, qk_tie(nodes))
    return torch.argsort(-scores.abs(), stable=True)


def attribution_candidate(ctx: _Context, s: PruneSettings) -> dict:
    """Score, rank and bisect: a candidate in the learned pruner's format (for ``finish``)."""
    tick = time.perf_counter()
    with _frozen(ctx.model):
        scores = attribution_scores(ctx.masked, ctx.probe, s.eval_batch)  # (n,)
    ctx.timings["optimise"] += time.perf_counter() - tick
    tick = time.perf_counter()
    order = attribution_order(ctx.nodes, scores, s.tie_qk)
    prober = _Prober(ctx.masked, order, ctx.probe, s, ctx.order_free)
    k, met = prober.smallest(s.target_loss, 1)  # no open set to start from: double up from 1
    edges = count_edges(ctx.model, ctx.nodes, prober.keep(k))
    ctx.timings["bisect"] += time.perf_counter() - tick
    return {"k_coef": None, "tau": None, "curve": [], "prober": prober, "k": k, "met": met, "edges": edges,
            "train_loss": prober.loss(k), "n_open": 1, "scores": scores}


def prune_attribution(run, task, target_loss: float = TARGET_LOSS, ablation: str = "mean", seed: int = 0,
                      force: bool = False, n_train: int = 256, n_test: int = 128, name: str | None = None,
                      means: torch.Tensor | None = None, **overrides) -> Circuit:
    """``prune``'s contract with attribution scores instead of learned masks.

    Optimiser settings (``steps``, ``k_coefs``, ``lr``...) are accepted and ignored, so
    the same keywords drive both methods; ``progress`` is accepted too.
    """
    t0 = time.perf_counter()
    overrides.pop("progress", None)
    steps = overrides.pop("steps", None)
    k_coefs = overrides.pop("k_coefs", None)
    s = make_settings(target_loss, ablation, steps, k_coefs, n_train, n_test, **overrides)
    with _threads(s.threads), spread(run.model, lane_count(s), s.threads):
        ctx = _prepare(run, task, s, seed=int(seed), force=force, name=name, means=means, t0=t0)
        cand = attribution_candidate(ctx, s)
        circuit = finish(ctx, s, [cand], cand, int(seed), t0)
    circuit.metrics["method"] = "attribution"
    # the learned pruner's sweep and curve do not apply; the scores of the kept nodes do
    circuit.settings.pop("k_coef", None)
    circuit.settings["sweep"] = []
    kept = circuit.keep.nonzero().flatten()
    circuit.settings["attribution"] = {name_: float(cand["scores"][i])
                                       for name_, i in zip(ctx.nodes.names(kept.tolist()), kept.tolist())}
    return circuit
