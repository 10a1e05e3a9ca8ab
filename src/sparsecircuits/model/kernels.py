"""Hand-written backward passes for ops that autograd would split into many small ones.

Each computes what the op-by-op version in ``gpt.py`` computes (the same forward values;
gradients equal up to float rounding) in one autograd node, so far fewer full-size
temporaries are written and read: on a CPU, at a small model's widths, that traffic costs
more than the arithmetic.

- ``topk_indices``: the positions AbsTopK keeps; ``site_abstopk``: AbsTopK by the C kernel
  of ``native.py``, the same kept set.
- ``causal_attention``: causal softmax attention with an optional sink. Its backward uses
  sum_j p_j dp_j = dz . z (the "D" term of FlashAttention), so no softmax backward over
  the sink column, no mask and no concatenation is built.
- ``rms_norm``: RMSNorm with a closed-form backward.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from . import native


def topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (..., k) of the ``k`` largest-magnitude entries along the last dim, unsorted."""
    mag = x.abs()
    if mag.dtype == torch.float32 and mag.device.type == "cpu":
        # Non-negative IEEE floats order like their bit patterns; integer top-k is ~20%
        # faster on CPU, where AbsTopK is a quarter of a small model's training step.
        mag = mag.view(torch.int32)
    return mag.topk(k, dim=-1, sorted=False).indices


def native_abstopk(x: torch.Tensor, k: int, exact_keep: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """x (R, w) float32 contiguous -> (x times keep, keep (R, w): 1.0 at the k largest magnitudes, else 0.0).

    Rows whose k-th magnitude is tied with a dropped entry are redone with ``topk_indices``,
    the model's own rule, so the kept set is the plain model's on every row.  With
    ``exact_keep`` False (no gradient will flow, so only the values matter) rows tied at
    zero, those with fewer than k nonzeros, are not redone: their values are x itself
    whichever zeros are kept, but ``keep`` there is 1.0 everywhere.  Such rows are common
    in a trained model (whole rows of some q and MLP sites), and redoing them made the
    kernel slower than torch.topk there.
    """
    lib = native.library()
    R, w = x.shape
    out, keep = torch.empty_like(x), torch.empty_like(x)
    tied = torch.empty(R, dtype=torch.uint8)

    def run(r0: int, r1: int) -> None:
        scratch = torch.empty(2 * w, dtype=torch.int32)
        lib.abstopk_rows(native.ptr(x), native.ptr(out), native.ptr(keep), native.ptr(tied), w, k, r0, r1,
                         native.ptr(scratch))
    native.split_rows(run, R)
    rows = (tied != 0 if exact_keep else tied == 1).nonzero()[:, 0]  # (r,)
    if rows.numel():
        sub = x[rows]  # (r, w)
        mask = torch.zeros_like(sub).scatter_(-1, topk_indices(sub, k), 1.0)
        keep[rows] = mask
        out[rows] = sub * mask
    return out, keep


class NativeAbsTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        out, keep = native_abstopk(x, k)
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return g * keep, None


def site_abstopk(x: torch.Tensor, k: int) -> torch.Tensor | None:
    """AbsTopK of ``x`` (..., w) by the C kernel, or None where it does not apply (another
    device or dtype, autocast, a graph being compiled, no compiler).

    The kept set is ``topk_indices``'s on every row (tied rows are redone with it), so the
    values and gradients are exactly those of ``gpt.abstopk``: a model trains to the same
    weights either way.  At the cpu-small widths the kernel is 2.5x torch's top-k, scatter
    and multiply, forward and backward (``benchmarks/train_throughput.py``)."""
    if (x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling() or native.library() is None):
        return None
    lead, w = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, w).contiguous()  # (N, w)
    if x.requires_grad and torch.is_grad_enabled():
        return NativeAbsTopK.apply(rows, k).view(*lead, w)
    return native_abstopk(rows, k, exact_keep=False)[0].view(*lead, w)


def _is_power_of_two(s: float) -> bool:
    return s > 0 and math.frexp(s)[0] == 0.5


class _CausalAttention(torch.autograd.Function):
    """q (B, Tq, H, Dh), k, v (B, T, H, Dh), sink (H,) or None -> z (B, Tq, H, Dh), contiguous."""

    @staticmethod
    def forward(ctx, q, k, v, sink, causal_bias, scale):
        B, T, H, Dh = k.shape
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        # Scaling q instead of the scores is exact when the scale is a power of two
        # (d_head 4, 16, 64, ...); otherwise scale the scores in place, as the plain op does.
        fold = _is_power_of_two(scale)
        qs = q * scale if fold else q
        if sink is not None:
            # A zero key row makes the scores (B, H, T, T + 1) with a zero last column, into
            # which the sink logit is added: the softmax row then covers the sink slot.
            k = torch.cat([k, k.new_zeros(B, H, 1, Dh)], dim=2)  # (B, H, T + 1, Dh)
        scores = qs @ k.transpose(-2, -1)  # (B, H, T, T) or (B, H, T, T + 1)
        if not fold:
            scores.mul_(scale)
        scores[..., :T].add_(causal_bias)  # 0 on and below the diagonal, -inf above
        if sink is not None:
            scores[..., T].add_(sink.to(scores.dtype).view(1, H, 1))
        probs = torch.softmax(scores, dim=-1)
        pattern = probs[..., :T]  # (B, H, T, T), the sink's share left out
        z = pattern @ v  # (B, H, T, Dh); the sink's value is zero
        ctx.scale, ctx.has_sink = scale, sink is not None
        ctx.sink_dtype = None if sink is None else sink.dtype
        ctx.save_for_backward(qs, k[:, :, :T], v, probs, z)
        return z.transpose(1, 2).contiguous()  # (B, Tq, H, Dh)

    @staticmethod
    @once_differentiable
    def backward(ctx, dz):
        qs, k, v, probs, z = ctx.saved_tensors  # qs, k, v, z (B, H, T, Dh); probs (B, H, T, T[+1])
        T = k.shape[2]
        dz = dz.transpose(1, 2)  # (B, H, T, Dh)
        pattern = probs[..., :T]
        need_q, need_k, need_v, need_sink = ctx.needs_input_grad[:4]
        dq = dk = dv = dsink = None
        if need_v:
            dv = (pattern.transpose(-2, -1) @ dz).transpose(1, 2)
        if need_q or need_k or need_sink:
            # softmax backward: ds_j = p_j (dp_j - sum_l p_l dp_l), where the sink slot's dp
            # is 0 and sum_l p_l dp_l = dz . z
            rowdot = (dz * z).sum(-1, keepdim=True)  # (B, H, T, 1)
            if need_sink:
                dsink = -(probs[..., T] * rowdot[..., 0]).sum((0, 2)).to(ctx.sink_dtype)  # (H,)
            if need_q or need_k:
                ds = dz @ v.transpose(-2, -1)  # (B, H, T, T): dp
                ds.sub_(rowdot).mul_(pattern)  # zero wherever the causal mask was
                if need_q:
                    dq = (ds @ k).mul_(ctx.scale).transpose(1, 2)
                if need_k:
                    dk = ds.transpose(-2, -1) @ qs
                    if not _is_power_of_two(ctx.scale):
                        dk.mul_(ctx.scale)
                    dk = dk.transpose(1, 2)
        return dq, dk, dv, dsink, None, None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sink: torch.Tensor | None,
                     causal_bias: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax attention; q, k, v (B, T, H, Dh) -> z (B, T, H, Dh).

    ``causal_bias`` (T, T) is 0 on and below the diagonal and -inf above; ``sink`` (H,) is
    each head's logit for an extra key whose key and value are zero (None: no sink).  The
    queries may be a few positions of each row instead, q (B, Tq, H, Dh), with a bias
    that broadcasts to (B, 1, Tq, T) saying which keys each may see (``Attention``'s
    ``last_pos``).
    """
    return _CausalAttention.apply(q, k, v, sink, causal_bias, scale)


class _RMSNorm(torch.autograd.Function):
    """x (..., D), weight (D,) -> x * rsqrt(mean(x^2) + eps) * weight, in that order."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        xhat = x * r  # (..., D)
        ctx.save_for_backward(xhat, r, weight)
        return xhat * weight

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        xhat, r, weight = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[1]:
            dw = (g * xhat).sum(tuple(range(g.dim() - 1)))  # (D,)
        if ctx.needs_input_grad[0]:
            # d/dx of xhat = x r with r = mean(x^2 + eps)^(-1/2):  r (gw - xhat mean(gw xhat))
            gw = g * weight
            dx = (gw - xhat * (gw * xhat).mean(-1, keepdim=True)).mul_(r)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, without bias; x (..., D), weight (D,)."""
    return _RMSNorm.apply(x, weight, eps)
