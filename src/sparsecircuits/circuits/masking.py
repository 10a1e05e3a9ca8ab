"""The masked forward pass: every node either kept or replaced by its ablation value.

One mask value per node, shared over prompts and positions (docs/method.md §3).  At each site's
hook point an activation ``x`` becomes ``m * x + (1 - m) * baseline`` where ``baseline``
is the node's mean activation over the pretraining distribution (``ablation="mean"``),
zero (``ablation="zero"``), or the node's activation on another prompt of the task
(``ablation="resample"``, see ``Resample``).  Two ways to give ``m``:

* a float vector, differentiable: during pruning ``m = heaviside_ste(tau)``, exactly 0
  or 1 on the forward pass, with the derivative of ``sigmoid(tau / temperature)`` on the
  backward pass (a straight-through estimator), so the loss sees the discrete circuit;
* a boolean keep vector, for evaluation and for ablating a chosen node set
  ("ablate only these nodes", the necessity check).  Kept nodes pass through untouched
  (``_blend`` is exact for a 0/1 mask), so keeping every node reproduces the model's
  logits bit for bit.

Means are averaged over every position of a few hundred validation windows and cached in
``RUN_DIR/node_means.safetensors`` (keyed by the weights file's size and mtime, so a
retrained model never reuses stale means).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ABLATIONS
from ..errors import UserError
from ..model.gpt import GPT  # only a GPT takes last_only
from ..rundir import RunDir
from .nodes import NodeSet
from .skip import skippable, skipping



# ---------------------------------------------------------------------------- STE


class _HeavisideSTE(torch.autograd.Function):
    """Forward: 1 where tau > 0 else 0.  Backward: d/dtau sigmoid(tau / temperature)."""

    @staticmethod
    def forward(ctx, tau: torch.Tensor, temperature: float) -> torch.Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (tau,) = ctx.saved_tensors
        t = ctx.temperature
        s = torch.sigmoid(tau / t)
        return grad * s * (1 - s) / t, None


def heaviside_ste(tau: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Heaviside(tau) (open iff tau > 0) with a sigmoid-derivative surrogate gradient."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _HeavisideSTE.apply(tau, float(temperature))


# ---------------------------------------------------------------------------- resample


class Resample:
    """Resample ablation: a pruned node takes its activation from the pair's other member.

    Mean ablation can let a circuit pass on the mean offsets alone; here a pruned node
    carries the *other* prompt's information, so a circuit missing a node that tells the
    two prompts apart gets the other prompt's answer.  Rows ``2i`` and ``2i + 1`` of every
    batch are partners (pruning and ``encode_for_run`` keep ``TaskItem`` pairs adjacent);
    for plain examples, the partner is simply the neighbouring row, another item of the
    task.  An odd last row takes row 0.  Prompts of different lengths are aligned at their
    last token; positions before the partner's first token take its first position.
    """

    def __repr__(self) -> str:
        return "Resample()"


def resample_partners(batch_size: int) -> torch.Tensor:
    """The partner row of every row (B,): 1, 0, 3, 2, ...; an odd last row takes row 0."""
    partner = torch.arange(batch_size) ^ 1
    if batch_size % 2:
        partner[-1] = 0
    return partner


@torch.no_grad()
def resample_sources(model: nn.Module, nodes: NodeSet, tokens: torch.Tensor,
                     last_pos: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every site's ablation values for ``tokens`` (B, T): the partner's clean activations.

    Row ``i`` gets row ``p = partner[i]``'s activation at position ``t + last_pos[p] -
    last_pos[i]`` (clamped into ``[0, T)``), so last tokens line up.  (B, T, width) or
    (B, T, H, Dh) per hook.
    """
    B, T = tokens.shape
    _, cache = model.run_with_cache(tokens, names_filter=[s.hook for s in nodes.sites])
    partner = resample_partners(B).to(tokens.device)  # (B,)
    lp = (torch.full((B,), T - 1) if last_pos is None else last_pos).to(tokens.device)
    pos = (torch.arange(T, device=tokens.device)[None, :] + (lp[partner] - lp)[:, None]).clamp(0, T - 1)  # (B, T)
    return {s.hook: cache[s.hook][partner[:, None], pos] for s in nodes.sites}


# ---------------------------------------------------------------------------- masked model


def _blend(x: torch.Tensor, m: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``m * x + (1 - m) * b`` for a 0/1 mask ``m`` broadcast against ``x``; ``b`` None is zero.

    One fused pass over ``x`` (``addcmul`` onto the small ``(1 - m) * b``) instead of
    ``torch.where`` or four elementwise ops: 2-3x faster on the activations, which makes the
    mask hooks a small share of a masked forward pass.  Exact for a 0/1 mask: a kept entry
    is ``0 + x``, an ablated one ``b + 0``, so keeping every node still gives the model's
    own logits; the gradient to ``m`` is ``g * (x - b)`` either way.
    """
    if b is None:
        return x * m
    return torch.addcmul((1 - m) * b, x, m)


class MaskedModel(nn.Module):
    """A GPT whose nodes can be masked; the GPT itself is shared, never copied.

    ``baseline`` is the flat (n,) ablation value of every node (node means), ``None``
    for zero ablation, or a ``Resample`` (each forward pass first runs the clean model
    once, without gradients, for the partners' activations).
    """

    def __init__(self, model: nn.Module, baseline: torch.Tensor | None = None,
                 nodes: NodeSet | None = None) -> None:
        super().__init__()
        self.model = model
        self.nodes = nodes or NodeSet.from_model(model)
        if isinstance(baseline, torch.Tensor) and baseline.shape != (self.nodes.n,):
            raise ValueError(f"baseline has shape {tuple(baseline.shape)}, expected ({self.nodes.n},)")
        self.baseline = baseline

    def on_model(self, model: nn.Module) -> "MaskedModel":
        """This masked model (its class, baseline and nodes) over another copy of the GPT,
        for a lane of ``lanes.py``; ``self`` is left as it was."""
        clone = copy.copy(self)
        clone._modules = {**self._modules, "model": model}
        return clone

    def _site_views(self, vec: torch.Tensor, x: torch.Tensor, site) -> torch.Tensor:
        """The site's slice of a flat vector, shaped to broadcast against ``x``."""
        part = vec[site.start:site.stop]
        if site.d_head:  # (B, T, H, Dh)
            return part.view(x.shape[-2], x.shape[-1])
        return part

    def hooks(self, mask: torch.Tensor, sources: dict | None = None) -> list[tuple]:
        """``fwd_hooks`` applying ``mask`` (float (n,) soft, or bool (n,) keep).

        ``sources`` (resample ablation): per hook, the ablation values of every row and
        position, used instead of the flat baseline.  A mask (R, n) holds R masks for a
        batch of R groups of rows, group-major (row ``r * P + p`` uses ``mask[r]``;
        ``sources`` then has the P rows of one group).
        """
        if mask.shape[-1:] != (self.nodes.n,) or mask.dim() not in (1, 2):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected ({self.nodes.n},) or (R, {self.nodes.n})")
        hard = mask.dtype == torch.bool
        R = mask.shape[0] if mask.dim() == 2 else None
        hooks = []
        for site in self.nodes.sites:
            def fn(x: torch.Tensor, hook, site=site) -> torch.Tensor:
                shape = x.shape  # (B, T, width) or (B, T, H, Dh)
                if R is not None:  # (R, P, T, ...) against masks (R, 1, 1, ...)
                    x = x.reshape(R, shape[0] // R, *shape[1:])
                    m = mask[:, site.start:site.stop].reshape(R, 1, 1, *shape[2:]).to(x.device)
                else:
                    m = self._site_views(mask, x, site).to(x.device)
                if sources is not None:
                    b = sources[site.hook].to(x.device, x.dtype)
                elif self.baseline is None:
                    b = None
                else:
                    b = self._site_views(self.baseline, x, site).to(x.device, x.dtype)
                if sources is not None and hard:
                    out = torch.where(m, x, b)  # b is as large as x: one pass
                else:
                    out = _blend(x, m.to(x.dtype), b)
                return out.reshape(shape)
            hooks.append((site.hook, fn))
        return hooks

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                last_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V); with ``last_pos`` (B,), only each row's last position: (B, V).

        ``last_pos`` skips the unembedding of every other position (the vocabulary
        projection is a large share of a small model's cost).  A boolean mask also skips
        the work feeding sites it ablates whole (``skip.py``): the same logits.  A mask
        (R, n) runs R masks over the same prompts in one pass: logits (R, B, ...).
        """
        sources = None
        if mask is not None and isinstance(self.baseline, Resample):
            sources = resample_sources(self.model, self.nodes, tokens, last_pos)
        hooks = [] if mask is None else self.hooks(mask, sources)
        swaps = []
        if mask is not None and mask.dtype == torch.bool:
            swaps = skippable(self.model, self.nodes, mask if mask.dim() == 1 else mask.any(0))
        # the mask hooks do not depend on position, so the last block may run at last_pos only;
        # resample ablation's sources are per position
        trim = {"last_only": True} if sources is None and isinstance(self.model, GPT) else {}
        if mask is None or mask.dim() == 1:
            with skipping(swaps):
                return self.model.run_with_hooks(tokens, fwd_hooks=hooks, last_pos=last_pos, **trim)
        R, B = mask.shape[0], tokens.shape[0]
        rows = tokens.repeat(R, 1)  # (R * B, T), group-major
        last = None if last_pos is None else last_pos.repeat(R)
        with skipping(swaps):
            out = self.model.run_with_hooks(rows, fwd_hooks=hooks, last_pos=last, **trim)
        return out.view(R, B, *out.shape[1:])

    def fixed(self, keep: torch.Tensor) -> "FixedMask":
        """A ``tokens -> logits`` module with this keep vector, for ``evaluate_task``."""
        return FixedMask(self, keep)


class FixedMask(nn.Module):
    """A masked model frozen to one boolean keep vector."""

    def __init__(self, masked: MaskedModel, keep: torch.Tensor) -> None:
        super().__init__()
        if keep.dtype != torch.bool:
            raise ValueError("keep must be a boolean vector")
        self.masked = masked
        self.keep = keep

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.masked(tokens, self.keep)


def ablate_only(nodes: NodeSet, names) -> torch.Tensor:
    """The keep vector that ablates exactly the named nodes and keeps all others."""
    return ~nodes.keep_from_names(names)


# ---------------------------------------------------------------------------- means


@torch.no_grad()
def compute_node_means(model: nn.Module, windows: torch.Tensor, nodes: NodeSet | None = None,
                       batch_size: int = 32) -> torch.Tensor:
    """Mean activation of every node over all positions of ``windows`` (N, T) -> (n,)."""
    from .lanes import map_model

    nodes = nodes or NodeSet.from_model(model)
    device = next(model.parameters()).device
    hooks = [s.hook for s in nodes.sites]

    def chunk_sums(lane_model: nn.Module, start: int) -> torch.Tensor:
        chunk = windows[start:start + batch_size].to(device)  # (b, T)
        _, cache = lane_model.run_with_cache(chunk, names_filter=hooks)
        return torch.cat([cache[s.hook].reshape(-1, s.width).double().sum(0).cpu() for s in nodes.sites])  # (n,)

    sums = torch.zeros(nodes.n, dtype=torch.float64)
    for part in map_model(model, chunk_sums, range(0, windows.shape[0], batch_size)):  # chunks side by side
        sums += part  # in chunk order, whatever the lanes
    return (sums / max(windows.numel(), 1)).float()


def val_tokens(run) -> np.ndarray:
    """The validation tokens of the data the run was trained on (``config.data.data_dir``),
    or of the default data for a run that records none (an imported model)."""
    if getattr(run, "data_dir", None):
        data_dir = Path(run.data_dir)
    else:
        from ..data.build import default_data_dir

        data_dir = default_data_dir()
    if not (data_dir / "val.bin").is_file():
        raise UserError(f"mean ablation needs the run's validation tokens but {data_dir} has no val.bin; "
                        "rebuild the data or use --ablation zero")
    from ..data.shards import TokenShards

    return TokenShards(data_dir).val


def _weights_key(run) -> str:
    """The weights file's size and mtime: a retrained model never reuses stale means."""
    w = RunDir(run.path).weights
    if not w.is_file():
        return "no-weights-file"
    st = w.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def val_windows(tokens: np.ndarray, n_windows: int, block_size: int) -> torch.Tensor:
    """``n_windows`` evenly spaced windows of ``block_size`` tokens (N, T) long."""
    n = len(tokens)
    if n < 2:
        raise UserError("the validation split has fewer than 2 tokens; cannot compute node means")
    T = min(block_size, n)
    last = n - T
    n_windows = max(1, min(n_windows, last + 1))
    starts = np.linspace(0, last, n_windows).astype(np.int64)
    return torch.from_numpy(np.stack([np.asarray(tokens[s:s + T], dtype=np.int64) for s in starts]))


def node_means(run, n_windows: int = 256, cache: bool = True) -> torch.Tensor:
    """Flat (n,) node means of a run, from ``RUN_DIR/node_means.safetensors`` if fresh.

    Computed once over ``n_windows`` validation windows of the model's context length,
    averaged over all positions; written atomically so a crash never leaves a bad cache.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ..io import atomic_path

    model = run.model
    nodes = NodeSet.from_model(model)
    path = RunDir(run.path).node_means
    meta = {"weights": _weights_key(run), "n_windows": str(n_windows), "shape": json.dumps(nodes.shape)}
    if cache and path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                stored = fh.metadata() or {}
            if all(stored.get(k) == v for k, v in meta.items()):
                tensors = load_file(str(path))
                flat = torch.cat([tensors[s.hook].reshape(-1) for s in nodes.sites])
                if flat.shape == (nodes.n,) and torch.isfinite(flat).all():
                    return flat.float()
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
            pass  # unreadable or stale cache: recompute
    windows = val_windows(val_tokens(run), n_windows, model.cfg.block_size)
    flat = compute_node_means(model, windows, nodes)
    if cache:
        tensors = {s.hook: flat[s.start:s.stop].clone().contiguous() for s in nodes.sites}
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError:
            pass  # a read-only run directory still works, just without the cache
    return flat


def ablation_baseline(run, ablation: str, means: torch.Tensor | None = None) -> "torch.Tensor | Resample | None":
    """The baseline for an ablation kind: node means for "mean", None for "zero", a ``Resample``."""
    if ablation not in ABLATIONS:
        raise UserError(f"unknown ablation {ablation!r}; expected one of: {', '.join(ABLATIONS)}")
    if ablation == "zero":
        return None
    if ablation == "resample":
        return Resample()
    if means is not None:
        return means
    return node_means(run)
