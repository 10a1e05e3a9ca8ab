"""Op-level and train-step timings of the model's fused kernels against the plain op-by-op versions.

Prints one JSON object. Each entry holds the median time of the plain version ("old"), of
the fused one ("new"), ``new_over_old`` and ``speedup`` (old / new). The two run in the same
process, interleaved round by round, so a busy machine slows both alike; by default the
clock is this process's CPU time, which other processes on the machine do not inflate.

- ``attention_sink`` / ``attention_no_sink``: causal attention forward + backward at the
  preset's shapes (``model.kernels.causal_attention`` against scores, mask, a concatenated
  sink column, softmax and a slice);
- ``rms_norm``: forward + backward of one RMSNorm over (B, T, d_model);
- ``abstopk_gather_scatter``: AbsTopK forward + backward as a gather/scatter of the kept
  entries (an autograd Function saving the indices) against today's mask multiply, at the
  MLP width. Kept here as the measurement behind keeping the mask multiply: its backward,
  one multiply, is cheaper than a gather and a scatter;
- ``train_step``: a full forward + loss + backward of the preset's model, with the plain
  attention and RMSNorm against the model as it is.

    python benchmarks/forward_ops.py [--preset cpu-small] [--batch B] [--seq-len T] [--rounds 15] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from sparsecircuits.config import build_config
from sparsecircuits.model import gpt
from sparsecircuits.model.kernels import causal_attention, rms_norm, topk_indices


# -- the plain versions ----------------------------------------------------------------
def plain_attention(q, k, v, sink, causal):
    """q, k, v (B, T, H, Dh) -> z (B, T, H, Dh): the op-by-op path of ``gpt.Attention``."""
    B, T, H, Dh = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(Dh))
    scores = scores.masked_fill(~causal, float("-inf"))
    if sink is not None:
        col = sink.view(1, H, 1, 1).expand(B, H, T, 1).to(scores.dtype)
        pattern = torch.softmax(torch.cat([scores, col], dim=-1), dim=-1)[..., :T]
    else:
        pattern = torch.softmax(scores, dim=-1)
    return (pattern @ v).transpose(1, 2)


def plain_rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class _KeepAt(torch.autograd.Function):
    """Keep x at ``idx`` along the last dim, zero elsewhere; linear, so its backward is itself."""

    @staticmethod
    def forward(x, idx):
        return torch.zeros_like(x).scatter_(-1, idx, x.gather(-1, idx))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return _KeepAt.apply(g, idx), None


def gather_scatter_abstopk(x, k):
    return _KeepAt.apply(x, topk_indices(x, k))


# -- timing ----------------------------------------------------------------------------
def compare(old: Callable[[], None], new: Callable[[], None], rounds: int, clock: Callable[[], float]) -> dict:
    """Median seconds of each over ``rounds`` interleaved runs, after one warm-up each."""
    old(), new()
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(rounds):
        for name, fn in (("old", old), ("new", new)):
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    return {"old_ms": round(o * 1e3, 3), "new_ms": round(n * 1e3, 3), "new_over_old": round(n / o, 4),
            "speedup": round(o / n, 4)}


def fwd_bwd(fn: Callable, inputs: list[torch.Tensor], grad: torch.Tensor) -> Callable[[], None]:
    """A closure running ``fn`` forward and backward on fresh leaf copies of ``inputs``."""
    def run() -> None:
        leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        fn(*leaves).backward(grad)
    return run


def train_step(model: gpt.GPT, x: torch.Tensor, y: torch.Tensor, plain: bool) -> Callable[[], None]:
    """One forward + loss + backward; ``plain`` swaps in the op-by-op attention and RMSNorm."""
    fused_norm = gpt.RMSNorm.forward

    def plain_norm(self, t):
        return plain_rms_norm(t, self.weight, self.eps)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        # a hook on the pattern makes every attention layer take its op-by-op path
        hooks = [(lambda n: n.endswith("hook_pattern"), lambda t, hook: None)] if plain else []
        gpt.RMSNorm.forward = plain_norm if plain else fused_norm
        try:
            with model.hooks(hooks):
                logits = model(x)
            F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        finally:
            gpt.RMSNorm.forward = fused_norm
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default: the preset's)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cfg = build_config(args.preset)
    mc = cfg.model
    B, T = args.batch or cfg.train.batch_size, args.seq_len or cfg.seq_len
    H, Dh, D = mc.n_head, mc.d_head, mc.d_model
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    out: dict = {"preset": args.preset, "threads": torch.get_num_threads(), "clock": args.clock,
                 "rounds": args.rounds, "batch": B, "seq_len": T}
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    bias = torch.zeros(T, T).masked_fill(~causal, float("-inf"))
    qkv, dz = [randn(B, T, H, Dh) for _ in range(3)], randn(B, T, H, Dh)
    scale = 1.0 / math.sqrt(Dh)
    for name, sink in (("attention_sink", randn(H)), ("attention_no_sink", None)):
        ins = qkv + ([sink] if sink is not None else [])
        out[name] = compare(
            fwd_bwd(lambda q, k, v, *s: plain_attention(q, k, v, s[0] if s else None, causal), ins, dz),
            fwd_bwd(lambda q, k, v, *s: causal_attention(q, k, v, s[0] if s else None, bias, scale), ins, dz),
            args.rounds, clock)
    x, w, eps = randn(B, T, D), 1 + 0.1 * randn(D), mc.norm_eps
    out["rms_norm"] = compare(fwd_bwd(lambda a, b: plain_rms_norm(a, b, eps), [x, w], randn(B, T, D)),
                              fwd_bwd(lambda a, b: rms_norm(a, b, eps), [x, w], randn(B, T, D)),
                              args.rounds, clock)
    k = gpt.topk_width(mc.afrac, mc.d_mlp)
    x, gx = randn(B, T, mc.d_mlp), randn(B, T, mc.d_mlp)
    out["abstopk_gather_scatter"] = compare(fwd_bwd(lambda a: gpt.abstopk(a, k), [x], gx),
                                            fwd_bwd(lambda a: gather_scatter_abstopk(a, k), [x], gx),
                                            args.rounds, clock)
    torch.manual_seed(cfg.seed)
    model = gpt.GPT(mc)
    toks = torch.randint(0, mc.vocab_size, (B, T + 1), generator=g)
    xs, ys = toks[:, :-1], toks[:, 1:]
    out["train_step"] = compare(train_step(model, xs, ys, plain=True), train_step(model, xs, ys, plain=False),
                                args.rounds, clock)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
