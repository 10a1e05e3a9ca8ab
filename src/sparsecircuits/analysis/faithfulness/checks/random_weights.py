"""random_weights: could the mask have built this answer out of weights that know nothing?

The task is pruned again, with the circuit's own settings, seed and ablation, forced, on
two models of the same shape that never learned it: one with fresh random weights (the
model's own initialisation, seeded by the checks' seed) and one with the entries of each
weight matrix of the trained model shuffled (the same values and density, no learned
structure).  Mean ablation takes each control's own node means over the run's validation
windows.  If a control reaches the target on held-out items with fewer than twice the
real circuit's nodes, the mask and the calibration are building the answer themselves,
and the real circuit's low loss says little about the model: flag.  The value is the
smaller of the two controls' node ratios (control / circuit); nodes rather than edges,
because the random model is dense and its edge counts cannot be compared.

The controls' circuits are cached under ``RUN/controls/`` like the nonsense control's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ....circuits.circuit import Circuit
from ....model.gpt import GPT
from ..context import CheckContext, result
from ..controls import control_circuit, control_path
from ..registry import register

RANDOM_WEIGHTS_MIN_RATIO = 2.0
KINDS = ("random", "shuffled")


def random_weights(model: GPT, seed: int) -> GPT:
    """A model of ``model``'s shape with fresh initial weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = GPT(model.cfg)
    return fresh.to(next(model.parameters()).device).eval()


def shuffled_weights(model: GPT, seed: int) -> GPT:
    """A copy of ``model`` with the entries of every matrix (2-D or more) permuted at
    random; vectors (norm gains, biases, sink logits) are left as they are."""
    g = torch.Generator().manual_seed(seed)
    copy = GPT(model.cfg)
    state = {}
    for name, t in model.state_dict().items():
        if t.dim() >= 2:
            flat = t.detach().reshape(-1)
            t = flat[torch.randperm(flat.numel(), generator=g).to(flat.device)].reshape(t.shape)
        state[name] = t.detach().clone()
    copy.load_state_dict(state)
    return copy.to(next(model.parameters()).device).eval()


def _task_arg(ctx: CheckContext):
    """What ``prune`` takes for the circuit's task: its name when built in, a user task's
    examples (split the same way), else the items the checks draw."""
    from ....tasks.python_tasks import CONTROL_TASKS, TASKS

    if isinstance(getattr(ctx.task, "items", None), list):
        return ctx.task.items
    if ctx.task_name in TASKS or ctx.task_name in CONTROL_TASKS:
        return ctx.task_name
    train = ctx.task.generate(ctx.n_train, seed=ctx.prune_seed, split="train")
    return list(train) + list(ctx.test_items)


def _means(run, model: GPT) -> torch.Tensor:
    """The control's own node means over the run's validation windows (not cached: the
    run's cache belongs to its real weights)."""
    from ....circuits.frozen import kernel_sites
    from ....circuits.lanes import default_lanes, spread
    from ....circuits.masking import compute_node_means, val_tokens, val_windows

    with kernel_sites(model), spread(model, default_lanes(0)):
        return compute_node_means(model, val_windows(val_tokens(run), 256, model.cfg.block_size))


def weights_control(ctx: CheckContext, kind: str) -> Circuit:
    """The task pruned on the ``kind`` control model ("random" or "shuffled"), cached."""
    from ....run import Run

    name = f"{kind}_weights-{ctx.task_name}-seed{ctx.seed}"
    path = control_path(ctx, name)
    model = (random_weights if kind == "random" else shuffled_weights)(ctx.model, ctx.seed)
    control = Run(path=path.parent if path is not None else Path(name), config=ctx.run.config, model=model,
                  tokenizer=ctx.run.tokenizer)
    means = _means(ctx.run, model) if ctx.ablation == "mean" else None
    return control_circuit(ctx, name, control, _task_arg(ctx), means=means)


@register("random_weights", order=55)
def check_random_weights(ctx: CheckContext) -> dict:
    real = max(ctx.circuit.n_nodes, 1)
    rows, flagged = {}, []
    for kind in KINDS:
        c = weights_control(ctx, kind)
        met = bool(c.metrics.get("target_met", True))
        ratio = c.n_nodes / real
        rows[kind] = {"n_nodes": c.n_nodes, "n_edges": c.n_edges, "nodes_ratio": ratio, "target_met": met,
                      "circuit_loss": c.metrics.get("circuit_loss")}
        if met and ratio < RANDOM_WEIGHTS_MIN_RATIO:
            flagged.append(kind)
    value = min(r["nodes_ratio"] for r in rows.values())
    parts = [f"{kind} weights: {r['n_nodes']} nodes ({r['nodes_ratio']:.2f}x), loss {r['circuit_loss']:.3f}"
             f" ({'target met' if r['target_met'] else 'target not met'})" for kind, r in rows.items()]
    note = (f"; the mask builds the answer on {' and '.join(flagged)} weights" if flagged else "")
    return result(value, RANDOM_WEIGHTS_MIN_RATIO, not flagged,
                  f"circuit {ctx.circuit.n_nodes} nodes; " + "; ".join(parts) + note, rows)
