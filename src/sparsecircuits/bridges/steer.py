"""Editing the dense model through one node of its sparse twin (Gao et al. 2025, A.4, Figure 9).

The node is a post-RMSNorm residual read of the sparse model, ``blocks.{l}.hook_attn_in:c``
or ``blocks.{l}.hook_mlp_in:c``. Its activation is taken on the counterfactual and on the
presented prompt of each task pair; the difference at every token is carried into the
dense model through column c of the bridge decoder at the residual location the read
follows (``hook_resid_pre`` for the attention, ``hook_resid_mid`` for the MLP), and added,
scaled by a steering strength in [0, 1], to the dense model's read at the same place.

Why at the read and not in the residual stream: the bridge maps pre-norm residuals, but
the node lives after the RMSNorm, where both models have activations of sqrt(d) scale.
So the decoder column is rescaled from the sparse to the dense scale: times the sparse
model's mean residual RMS at that location over its norm gain for channel c, times the
dense model's norm gains over its mean residual RMS (means over reference validation
windows). With an exact bridge (two copies of one model, identity maps) the scale is 1
and strength 1 is exactly the patch of the counterfactual activation into that read.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError
from ..train.trainer import VAL_SEED_OFFSET
from .model import BridgedRun

NODE_RE = re.compile(r"^blocks\.(\d+)\.hook_(attn|mlp)_in:(\d+)$")
DEFAULT_STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def parse_read_node(node: str, n_layer: int, d_model: int) -> tuple[str, str, int]:
    """``blocks.{l}.hook_attn_in:c`` -> (read hook, bridge location, channel); a UserError
    for anything that is not a residual read of this model."""
    m = NODE_RE.match(node)
    if not m:
        raise UserError(f"node {node!r} is not a residual read; expected blocks.L.hook_attn_in:C "
                        "or blocks.L.hook_mlp_in:C")
    layer, kind, channel = int(m.group(1)), m.group(2), int(m.group(3))
    if layer >= n_layer:
        raise UserError(f"node {node!r}: the model has {n_layer} layers")
    if channel >= d_model:
        raise UserError(f"node {node!r}: the residual stream has {d_model} channels")
    loc = f"blocks.{layer}.hook_resid_{'pre' if kind == 'attn' else 'mid'}"
    return f"blocks.{layer}.hook_{kind}_in", loc, channel


def _norm_gain(model, read: str) -> torch.Tensor:
    layer = int(read.split(".")[1])
    block = model.blocks[layer]
    return (block.ln_1 if read.endswith("attn_in") else block.ln_2).weight.detach()  # (D,)


@torch.no_grad()
def mean_residual_rms(model, location: str, tokens: torch.Tensor) -> float:
    """Mean over tokens of the residual's RMS at ``location``: what the RMSNorm divides by."""
    _, cache = model.run_with_cache(tokens, names_filter=location)
    return cache[location].float().pow(2).mean(-1).sqrt().mean().item()


def reference_tokens(br: BridgedRun, n_batches: int = 2) -> torch.Tensor:
    """Validation windows of the sparse run's data, (n_batches * B, T)."""
    from ..data.shards import TokenShards

    cfg = br.sparse.config
    shards = TokenShards(br.sparse.data_dir)
    xs = [shards.get_batch("val", cfg.train.batch_size, cfg.seq_len, step=i, seed=cfg.seed + VAL_SEED_OFFSET)[0]
          for i in range(n_batches)]
    return torch.cat(xs)


@torch.no_grad()
def dense_direction(br: BridgedRun, read: str, location: str, channel: int,
                    rms_sparse: float, rms_dense: float) -> torch.Tensor:
    """(D_dense,): the dense read's change per unit change of the sparse read's ``channel``."""
    column = br.bridges.bridges[br.bridges.index(location)].decoder.weight[:, channel]  # (Dd,)
    g_s = _norm_gain(br.sparse.model, read)[channel]
    g_d = _norm_gain(br.dense.model, read)  # (Dd,)
    return column * (rms_sparse / g_s) * (g_d / rms_dense)


@torch.no_grad()
def read_activations(br: BridgedRun, presented: torch.Tensor, counterfactual: torch.Tensor,
                     read: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The twin's activations at ``read`` on both prompts, (N, T, Ds) each."""
    _, cp = br.sparse.model.run_with_cache(presented, names_filter=read)
    _, cc = br.sparse.model.run_with_cache(counterfactual, names_filter=read)
    return cp[read], cc[read]


@torch.no_grad()
def steered_logits(br: BridgedRun, presented: torch.Tensor, counterfactual: torch.Tensor, read: str,
                   channel: int, direction: torch.Tensor, strength: float,
                   acts: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Dense logits (N, T, V) on ``presented`` (N, T) with the edit of ``channel`` at ``strength``.
    ``acts``: ``read_activations``'s result when the caller has it (a curve reuses it)."""
    cp, cc = acts if acts is not None else read_activations(br, presented, counterfactual, read)
    delta = cc[..., channel] - cp[..., channel]  # (N, T)
    edit = strength * delta[..., None] * direction  # (N, T, Dd)
    return br.dense.model.run_with_hooks(presented, [(read, lambda x, hook: x + edit)])


@torch.no_grad()
def patched_sparse_logits(br: BridgedRun, presented: torch.Tensor, counterfactual: torch.Tensor, read: str,
                          channel: int, acts: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The twin's own logits (N, T, V) on ``presented`` with ``channel`` of ``read`` set to its
    counterfactual activation at every token: how much of the task that one node carries in
    the sparse model, before any bridge.  ``acts`` as in ``steered_logits``."""
    _, cc = acts if acts is not None else read_activations(br, presented, counterfactual, read)
    value = cc[..., channel]  # (N, T)

    def patch(x, hook):
        x = x.clone()
        x[..., channel] = value
        return x

    return br.sparse.model.run_with_hooks(presented, [(read, patch)])


def task_pairs(br: BridgedRun, task_name: str, n_pairs: int, seed: int):
    """Presented and counterfactual prompts of one task, both ways round, held-out items:
    (presented (N, T), counterfactual (N, T), last_pos (N,), counterfactual answer id (N,)).
    Pairs whose prompts differ in length are left out (the edit is taken token by token)."""
    from ..tasks import encode_examples, get_task

    task = get_task(task_name)
    items = task.generate(n_pairs, seed=seed, split="test")
    presented = [it.a for it in items] + [it.b for it in items]
    counter = [it.b for it in items] + [it.a for it in items]
    batch = encode_examples(br.sparse.tokenizer, presented + counter, task_name=task_name,
                            max_len=min(br.sparse.model.cfg.block_size, br.dense.model.cfg.block_size))
    n = len(presented)
    keep = (batch.last_pos[:n] == batch.last_pos[n:]).nonzero().flatten()  # (K,)
    if keep.numel() == 0:
        raise UserError(f"task {task_name}: no pair has prompts of equal length; the edit needs them")
    return (batch.tokens[:n][keep], batch.tokens[n:][keep], batch.last_pos[:n][keep],
            batch.correct_id[n:][keep])


@torch.no_grad()
def _p_answer(logits: torch.Tensor, last_pos: torch.Tensor, answer: torch.Tensor) -> float:
    rows = torch.arange(logits.shape[0])
    probs = torch.softmax(logits[rows, last_pos].float(), dim=-1)  # (N, V)
    return probs[rows, answer].mean().item()


@torch.no_grad()
def steer_curve(br: BridgedRun, task_name: str, node: str, strengths=DEFAULT_STRENGTHS, n_random: int = 4,
                n_pairs: int = 32, seed: int = 0, ref_batches: int = 2) -> dict:
    """The dense model's mean P(counterfactual answer) against strength, for ``node`` and for
    ``n_random`` random channels of the same read whose activation differs between the prompts."""
    sparse = br.sparse.model
    read, location, channel = parse_read_node(node, sparse.cfg.n_layer, sparse.cfg.d_model)
    if any(not 0.0 <= s <= 1.0 for s in strengths):
        raise UserError(f"steering strengths must lie in [0, 1], got {list(strengths)}")
    presented, counter, last_pos, answer = task_pairs(br, task_name, n_pairs, seed)
    ref = reference_tokens(br, ref_batches)
    rms_s = mean_residual_rms(sparse, location, ref)
    rms_d = mean_residual_rms(br.dense.model, location, ref)
    acts = read_activations(br, presented, counter, read)  # once for every curve
    moved = ((acts[1] - acts[0]) != 0).flatten(0, 1).any(0)  # (Ds,): channels the prompts move
    moved[channel] = False
    pool = moved.nonzero().flatten()
    gen = torch.Generator().manual_seed(seed)
    randoms = pool[torch.randperm(pool.numel(), generator=gen)[:n_random]].tolist()

    def curve(ch: int) -> list[float]:
        direction = dense_direction(br, read, location, ch, rms_s, rms_d)
        return [_p_answer(steered_logits(br, presented, counter, read, ch, direction, s, acts), last_pos, answer)
                for s in strengths]

    node_curve = curve(channel)
    random_curves = {f"{read}:{ch}": curve(ch) for ch in randoms}
    mean_random = ([sum(c[i] for c in random_curves.values()) / len(random_curves) for i in range(len(strengths))]
                   if random_curves else None)
    return {"run": str(br.path), "dense_run": str(br.dense.path), "task": task_name, "node": node,
            "location": location, "n_prompts": int(presented.shape[0]), "strengths": list(strengths),
            "rms_sparse": rms_s, "rms_dense": rms_d,
            "p_counterfactual": node_curve, "random": random_curves, "random_mean": mean_random,
            "p_counterfactual_unsteered_on_counterfactual_prompt": _p_answer(br.dense.model(counter), last_pos, answer),
            # the same node in the twin itself, no bridge: presented, node patched, counterfactual
            "sparse_p_counterfactual": {
                "presented": _p_answer(sparse(presented), last_pos, answer),
                "node_patched": _p_answer(patched_sparse_logits(br, presented, counter, read, channel, acts), last_pos,
                                          answer),
                "counterfactual_prompt": _p_answer(sparse(counter), last_pos, answer)}}


def format_curve(result: dict) -> str:
    lines = [f"{'strength':>9}{'P(node)':>11}{'P(random)':>11}"]
    rnd = result["random_mean"]
    for i, s in enumerate(result["strengths"]):
        r = f"{rnd[i]:>11.4f}" if rnd else f"{'-':>11}"
        lines.append(f"{s:>9.2f}{result['p_counterfactual'][i]:>11.4f}{r}")
    lines.append(f"dense P(counterfactual answer) on the counterfactual prompt itself: "
                 f"{result['p_counterfactual_unsteered_on_counterfactual_prompt']:.4f}")
    twin = result.get("sparse_p_counterfactual")
    if twin:
        lines.append(f"the twin itself, no bridge: P {twin['presented']:.4f} on the presented prompt, "
                     f"{twin['node_patched']:.4f} with the node patched, {twin['counterfactual_prompt']:.4f} "
                     "on the counterfactual prompt")
    return "\n".join(lines)


def plot_curve(result: dict, path) -> None:
    """Figure 9 of the paper for one node: the node's curve and the random nodes', log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = result["strengths"]
    for name, ys in result["random"].items():
        ax.plot(xs, ys, color="0.75", lw=1)
    if result["random_mean"]:
        ax.plot(xs, result["random_mean"], color="0.4", lw=1.5, ls="--", label="random (mean)")
    ax.plot(xs, result["p_counterfactual"], color="C0", lw=2, marker="o", ms=3, label=result["node"])
    ax.axhline(result["p_counterfactual"][0], color="C3", lw=0.8, ls=":", label="no steering")
    ax.set_yscale("log")
    ax.set_xlabel("steering strength (toward the counterfactual)")
    ax.set_ylabel("dense P(counterfactual answer)")
    ax.set_title(result["task"], fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
