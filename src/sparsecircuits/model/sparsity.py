"""Weight sparsity: exact top-k magnitude projection and the training schedules.

Weight-sparse training keeps, after every optimizer step, only the largest-magnitude
entries of each parameter and zeroes the rest. Gradients and Adam moments stay dense,
so a zeroed weight can come back when its update makes it large again.

Everything here is plain torch and independent of the model:

- ``topk_mask`` / ``project_``: keep exactly ``k`` entries (ties broken arbitrarily
  but the count is always exact, which a threshold compare cannot promise), optionally
  with a floor of ``j`` entries per node (below).
- ``density_at``: the L0 anneal, from dense to the target density.
- ``lr_at``: warmup, linear decay, times ``1/sqrt(density)`` (the "sharkfin").
- ``WeightSparsifier``: applies the projection to a set of named parameters.

The per-node floor ``j`` (the paper's appendix A.2: zeroing never leaves "a neuron or
attention channel" with fewer than ``j = 4`` nonzero values, to keep neurons from dying)
is counted over a node's own weights in each matrix that has them (``NODE_AXES``):

- ``mlp.c_fc.weight`` (d_mlp, D): each neuron's input weights, a row;
- ``mlp.c_proj.weight`` (D, d_mlp): each neuron's output weights, a column;
- ``attn.c_attn.weight`` (3*H*Dh, D): each q, k and v channel's input weights, a row;
- ``attn.c_proj.weight`` (D, H*Dh): each v channel's output weights, a column.

Embeddings, the unembedding and biases get no floor: a token's row is not a node.  Each
matrix keeps its own exact budget, so the floor must fit in it: ``j x nodes <= k``.  When
it does not at the target density, ``WeightSparsifier`` refuses to start (a ``UserError``
naming the matrix and the density it would need) instead of quietly lowering ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "DENSE_PATTERNS",
    "NODE_AXES",
    "WeightSparsifier",
    "check_node_floor",
    "density_at",
    "is_dense_name",
    "lr_at",
    "node_axis",
    "nonzero_target",
    "project_",
    "sparse_parameter_names",
    "topk_mask",
]

# Substrings of parameter names that stay dense: norm gains, the attention-sink logits
# and the bigram table (the paper keeps the bigram table dense; gains and sinks are tiny).
DENSE_PATTERNS: tuple[str, ...] = ("ln_", "ln_f", "norm", "sink_logit", "bigram_table")

_KINDS = ("linear", "geometric")

# Parameter-name suffix -> (axis indexing the nodes, what one node is).  Axis 0: node i owns
# row ``w[i, :]``; axis 1: node i owns column ``w[:, i]`` (an ``nn.Linear`` weight is (out, in)).
NODE_AXES: dict[str, tuple[int, str]] = {
    "attn.c_attn.weight": (0, "q/k/v channel"),
    "attn.c_proj.weight": (1, "v channel"),
    "mlp.c_fc.weight": (0, "neuron"),
    "mlp.c_proj.weight": (1, "neuron"),
}


def _node_entry(name: str) -> tuple[int, str] | None:
    for suffix, entry in NODE_AXES.items():
        if name == suffix or name.endswith("." + suffix):
            return entry
    return None


def node_axis(name: str) -> int | None:
    """The axis of parameter ``name`` whose slices are single nodes' weights, or None (no floor)."""
    entry = _node_entry(name)
    return None if entry is None else entry[0]


def _floor_need(shape: Sequence[int], axis: int, j: int) -> tuple[int, int]:
    """(number of nodes, entries the floor reserves) for a 2-D weight of ``shape``."""
    nodes, length = shape[axis], shape[1 - axis]
    return nodes, nodes * min(j, length)


def check_node_floor(shapes: Iterable[tuple[str, Sequence[int]]], density: float, j: int) -> None:
    """Raise a ``UserError`` if the per-node floor ``j`` does not fit a matrix's budget at ``density``.

    ``shapes``: ``(name, shape)`` of the parameters to be sparsified; only those with a
    node axis (``NODE_AXES``) are checked.  The anneal only shrinks budgets towards the
    target, so fitting at ``density`` means fitting at every step.
    """
    if j <= 0:
        return
    bad: list[tuple[float, str]] = []
    need = 0.0
    for name, shape in shapes:
        entry = _node_entry(name)
        if entry is None or len(shape) != 2:
            continue
        (axis, what), numel = entry, int(shape[0]) * int(shape[1])
        nodes, reserved = _floor_need(shape, axis, j)
        if reserved > nonzero_target(numel, density):
            bad.append((-reserved / numel, f"{name} has {nodes} {what}s x {j} = {reserved} > "
                                           f"{nonzero_target(numel, density)} nonzeros"))
            need = max(need, reserved / numel)
    if bad:
        worst = min(bad, key=lambda b: b[0])[1]  # the matrix needing the highest density (first on ties)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"the floor of j = {j} nonzero weights per neuron / attention channel "
                        f"(train.min_per_row) does not fit the budget at density {density:.6g}: {worst}{more}; "
                        f"raise train.density to at least {need:.6g} or lower train.min_per_row")


def nonzero_target(numel: int, density: float) -> int:
    """Number of entries to keep: ``round(density * numel)`` clamped to ``[1, numel]``.

    At least one entry survives so no parameter is ever entirely zero.
    """
    if numel < 1:
        raise ValueError(f"numel must be >= 1, got {numel}")
    if not (0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    return min(numel, max(1, round(density * numel)))


def _flat_topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask (same shape as ``scores``) with exactly ``k`` True at the largest scores.

    ``torch.topk`` returns exactly ``k`` indices even with ties, which a threshold
    compare cannot. For ``k > numel / 2`` the complement (the ``numel - k`` smallest)
    is cheaper to select, and removing exactly those keeps exactly ``k``.
    """
    flat = scores.reshape(-1)  # (N,)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k > n // 2:
        drop = torch.topk(flat, n - k, largest=False, sorted=False).indices
        mask = torch.ones(n, dtype=torch.bool, device=flat.device)
        mask[drop] = False
    else:
        keep = torch.topk(flat, k, largest=True, sorted=False).indices
        mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
        mask[keep] = True
    return mask.view(scores.shape)


@torch.no_grad()
def topk_mask(w: Tensor, k: int, min_per_node: int = 0, node_axis: int = 0) -> Tensor:
    """Mask of exactly ``k`` entries of ``w`` with the largest ``|w|``.

    With ``min_per_node = j > 0`` (2-D ``w`` only), the ``j`` largest-magnitude entries of
    every node's slice are kept first (``node_axis`` 0: every row ``w[i, :]``, e.g. a
    neuron's input weights in ``c_fc``; 1: every column ``w[:, i]``, e.g. its output
    weights in ``c_proj``), and the rest of the budget goes to the globally largest of
    the rest.  ``j`` is clamped to the slice length.  A floor that does not fit
    (``nodes * j > k``) is a ``ValueError``: the count stays exactly ``k`` and the floor
    is never lowered behind the caller's back.

    Non-finite weights (NaN/inf) are not supported: the result is undefined for them.
    """
    numel = w.numel()
    if not (0 <= k <= numel):
        raise ValueError(f"k must be in [0, {numel}], got {k}")
    if min_per_node < 0:
        raise ValueError(f"min_per_node must be >= 0, got {min_per_node}")
    if min_per_node > 0 and w.dim() != 2:
        raise ValueError(f"min_per_node needs a 2-D tensor, got shape {tuple(w.shape)}")
    if node_axis not in (0, 1):
        raise ValueError(f"node_axis must be 0 or 1, got {node_axis}")
    if min_per_node > 0 and numel > 0:
        nodes, reserved = _floor_need(w.shape, node_axis, min_per_node)
        if reserved > k:
            raise ValueError(f"a floor of {min_per_node} per node needs {reserved} entries "
                             f"({nodes} nodes), more than k = {k}")
    if k == numel:
        return torch.ones_like(w, dtype=torch.bool)
    scores = w.detach().abs()
    if min_per_node > 0 and numel > 0:
        j = min(min_per_node, w.shape[1 - node_axis])
        # Guaranteed entries get +inf so the single global top-k keeps all of them
        # (there are nodes * j <= k of them) and fills the rest by magnitude.
        view = scores if node_axis == 0 else scores.t()  # (nodes, length), shares storage
        idx = torch.topk(view, j, dim=1, sorted=False).indices  # (nodes, j)
        view.scatter_(1, idx, math.inf)
    return _flat_topk_mask(scores, k)


@torch.no_grad()
def project_(w: Tensor, k: int, min_per_node: int = 0, node_axis: int = 0) -> Tensor:
    """Zero, in place, every entry of ``w`` outside ``topk_mask(w, k, min_per_node, node_axis)``.

    Returns the mask. ``k == w.numel()`` is a no-op apart from building the all-True mask.
    """
    mask = topk_mask(w, k, min_per_node, node_axis)
    if k < w.numel():
        w.masked_fill_(~mask, 0)
    return mask


def _check_step(step: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def density_at(
    step: int,
    total_steps: int,
    target_density: float,
    anneal_frac: float = 0.5,
    kind: str = "linear",
) -> float:
    """Fraction of entries kept after optimizer step ``step`` (the L0 anneal).

    1.0 at step 0, ``target_density`` from ``step >= anneal_frac * total_steps`` on.
    ``linear``: the density (hence the number of nonzeros) goes linearly from 1 to the
    target, as in the paper. ``geometric``: ``target ** (step / T)`` with ``T`` the
    anneal length, i.e. the same factor of pruning per step.
    With ``anneal_frac == 0`` the target applies from step 0.
    """
    _check_step(step, total_steps)
    if not (0.0 < target_density <= 1.0):
        raise ValueError(f"target_density must be in (0, 1], got {target_density}")
    if not (0.0 <= anneal_frac <= 1.0):
        raise ValueError(f"anneal_frac must be in [0, 1], got {anneal_frac}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    anneal_steps = anneal_frac * total_steps
    if step >= anneal_steps:
        return float(target_density)
    t = step / anneal_steps  # in [0, 1)
    if kind == "linear":
        return 1.0 + (target_density - 1.0) * t
    return float(target_density**t)


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    warmup_frac: float = 0.01,
    density: float = 1.0,
) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup over the first ``max(1, ceil(warmup_frac * total_steps))`` steps
    (step 0 already gets ``base_lr / warmup`` so the first update is not wasted), then
    linear decay reaching 0 at ``total_steps``. Multiplied by ``1 / sqrt(density)``
    (``density`` = current fraction of nonzero weights): sparser models need larger steps.
    """
    _check_step(step, total_steps)
    if base_lr < 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr}")
    if not (0.0 <= warmup_frac <= 1.0):
        raise ValueError(f"warmup_frac must be in [0, 1], got {warmup_frac}")
    if not (0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    warmup = max(1, math.ceil(warmup_frac * total_steps))
    if step < warmup:
        frac = (step + 1) / warmup
    elif step >= total_steps:
        frac = 0.0
    else:
        frac = (total_steps - step) / (total_steps - warmup)
    return base_lr * frac / math.sqrt(density)


def is_dense_name(name: str, extra_dense: Sequence[str] = ()) -> bool:
    """True if the parameter ``name`` contains any dense pattern (substring match)."""
    return any(p in name for p in (*DENSE_PATTERNS, *extra_dense))


def sparse_parameter_names(
    named_parameters: Iterable[tuple[str, Tensor]],
    extra_dense: Sequence[str] = (),
) -> list[str]:
    """Names of the parameters to sparsify, in iteration order.

    Everything is sparsified (weights, biases and embeddings, as in the paper's baseline)
    except names containing a ``DENSE_PATTERNS`` entry or one of ``extra_dense``.
    """
    return [n for n, _ in named_parameters if not is_dense_name(n, extra_dense)]


class WeightSparsifier:
    """Projects a set of named parameters to the scheduled number of nonzeros.

    Call ``apply(step)`` after each optimizer step with the number of the step just
    completed; ``apply(total_steps)`` gives the final target density. The state is a
    pure function of ``step``, so nothing needs checkpointing.
    ``min_per_node`` (the paper's ``j``) applies to the node-owning matrices of
    ``NODE_AXES`` only, per neuron and per attention channel; a floor that does not fit
    a matrix's budget at the target density is a ``UserError`` here, before training.
    """

    def __init__(
        self,
        params: Iterable[tuple[str, Tensor]],
        target_density: float,
        total_steps: int,
        anneal_frac: float = 0.5,
        kind: str = "linear",
        min_per_node: int = 0,
    ) -> None:
        self.params: list[tuple[str, Tensor]] = list(params)
        self.target_density = float(target_density)
        self.total_steps = int(total_steps)
        self.anneal_frac = float(anneal_frac)
        self.kind = kind
        if min_per_node < 0:
            raise ValueError(f"min_per_node must be >= 0, got {min_per_node}")
        self.min_per_node = int(min_per_node)
        self.density(0)  # validate the schedule arguments now, not mid-training
        check_node_floor(((n, tuple(p.shape)) for n, p in self.params), self.target_density, self.min_per_node)
        # per parameter: the node axis its floor runs along, or None
        self.node_axes: list[int | None] = [node_axis(n) if self.min_per_node and p.dim() == 2 else None
                                            for n, p in self.params]

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        target_density: float,
        total_steps: int,
        anneal_frac: float = 0.5,
        kind: str = "linear",
        min_per_node: int = 0,
        extra_dense: Sequence[str] = (),
    ) -> WeightSparsifier:
        """Sparsify every parameter of ``module`` not matched by the dense patterns."""
        params = [(n, p) for n, p in module.named_parameters() if not is_dense_name(n, extra_dense)]
        return cls(params, target_density, total_steps, anneal_frac, kind, min_per_node)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.params]

    def density(self, step: int) -> float:
        """Scheduled fraction of entries kept after step ``step``."""
        return density_at(step, self.total_steps, self.target_density, self.anneal_frac, self.kind)

    @torch.no_grad()
    def apply(self, step: int) -> float:
        """Project every parameter in place; returns the density used."""
        d = self.density(step)
        for (_, p), axis in zip(self.params, self.node_axes):
            if p.numel() == 0:
                continue
            k = nonzero_target(p.numel(), d)
            if k == p.numel():
                continue  # dense: nothing to zero, skip the top-k entirely
            if axis is None:
                project_(p.data, k)
            else:
                project_(p.data, k, self.min_per_node, axis)
        return d

    @torch.no_grad()
    def min_nonzero_per_node(self) -> dict[str, int]:
        """Per floored parameter: the fewest nonzeros any node has in it (>= j once projected)."""
        return {n: int((p != 0).sum(dim=1 - axis).min()) for (n, p), axis in zip(self.params, self.node_axes)
                if axis is not None and p.numel()}

    @torch.no_grad()
    def stats(self) -> dict[str, dict[str, int]]:
        """Per parameter: ``numel`` and current ``nonzero`` count."""
        return {
            n: {"numel": p.numel(), "nonzero": int(torch.count_nonzero(p).item())}
            for n, p in self.params
        }

    def nonzero_fraction(self) -> float:
        """Total nonzeros over total entries of the sparsified parameters (1.0 if none)."""
        s = self.stats().values()
        total = sum(v["numel"] for v in s)
        return sum(v["nonzero"] for v in s) / total if total else 1.0
