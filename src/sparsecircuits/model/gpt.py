"""A GPT-2-style decoder for weight-sparse training (docs/method.md §1), readable top to bottom.

Differences from GPT-2, each chosen so that circuits are easier to read:
- RMSNorm without bias, so zero means "off" in the residual stream;
- untied embedding and unembedding, no positional embedding by default;
- an optional attention sink (a per-head learnable logit for an extra key slot whose key
  and value are zero), which lets a head attend to "nothing";
- an optional dense bigram table added to the logits, which frees sparse weights from
  memorising bigrams;
- AbsTopK activation sparsity at up to eight sites (keep the k largest-magnitude entries
  per token, zero the rest).

Every interesting activation passes through a named ``HookPoint`` (TransformerLens names),
so ``run_with_cache`` and ``run_with_hooks`` can read and edit it; the pruning code masks
nodes through the same hooks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .hooks import HookedMixin, HookPoint
from .kernels import causal_attention, rms_norm, site_abstopk, topk_indices


def abstopk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest-magnitude entries along the last dim, zero the rest."""
    if k >= x.shape[-1]:
        return x
    idx = topk_indices(x, k)  # (..., k)
    mask = torch.zeros_like(x).scatter_(-1, idx, 1.0)
    return x * mask


def topk_width(afrac: float, width: int) -> int:
    """Entries kept by AbsTopK at a site of this width; at least one."""
    return max(1, int(afrac * width))


def at_positions(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Each row's entry at its own position: x (B, T, ...), pos (B,) -> (B, 1, ...)."""
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, pos.to(x.device)][:, None]


def _hooked(module: nn.Module) -> bool:
    """Whether any hook point inside ``module`` has a hook attached."""
    return any(m._fns for m in module.modules() if isinstance(m, HookPoint))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return rms_norm(x, self.weight, self.eps)  # the same values, a cheaper backward


class SiteSparsity(nn.Module):
    """AbsTopK at one named site, or the identity when the site is switched off."""

    def __init__(self, cfg: ModelConfig, site: str, width: int) -> None:
        super().__init__()
        on = site in cfg.afrac_sites and cfg.afrac < 1.0
        self.k = topk_width(cfg.afrac, width) if on else width
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k >= x.shape[-1]:
            return x
        fast = site_abstopk(x, self.k)  # the same kept set by the C kernel, where it applies
        return abstopk(x, self.k) if fast is None else fast


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        inner = cfg.n_head * cfg.d_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * inner, bias=cfg.bias)  # packs q, k, v
        self.c_proj = nn.Linear(inner, cfg.d_model, bias=cfg.bias)
        self.sink_logit = nn.Parameter(torch.zeros(cfg.n_head)) if cfg.attn_sink else None
        self.sparse_q = SiteSparsity(cfg, "attn_q", inner)
        self.sparse_k = SiteSparsity(cfg, "attn_k", inner)
        self.sparse_v = SiteSparsity(cfg, "attn_v", inner)
        self.hook_q = HookPoint()  # (B, T, H, Dh)
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_pattern = HookPoint()  # (B, H, T, T), the sink's share left out
        self.hook_z = HookPoint()  # (B, T, H, Dh)
        causal = torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)
        # the same mask as an additive bias (0 or -inf), for the fused kernel
        self.register_buffer("causal_bias", torch.zeros(causal.shape).masked_fill(~causal, float("-inf")),
                             persistent=False)

    def forward(self, x: torch.Tensor, last_pos: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); with ``last_pos`` (B,), the output at those positions only,
        (B, 1, D): q, the pattern and z are then computed for one query per row (keys and
        values still for every position), see ``GPT.forward``'s ``last_only``."""
        B, T, _ = x.shape
        H, Dh = self.n_head, self.d_head
        q, k, v = self.c_attn(x).split(H * Dh, dim=-1)  # each (B, T, H*Dh)
        if last_pos is not None:
            q = at_positions(q, last_pos)  # (B, 1, H*Dh)
        Tq = q.shape[1]
        # AbsTopK acts on all heads' channels together, per token, before the head split.
        q = self.hook_q(self.sparse_q(q).view(B, Tq, H, Dh))
        k = self.hook_k(self.sparse_k(k).view(B, T, H, Dh))
        v = self.hook_v(self.sparse_v(v).view(B, T, H, Dh))
        if last_pos is not None:
            # each row's one query sees the keys up to its own position (B, 1, 1, T)
            seen = torch.arange(T, device=x.device)[None, :] <= last_pos.to(x.device)[:, None]
            bias = torch.zeros(B, 1, 1, T, dtype=q.dtype, device=x.device).masked_fill(~seen[:, None, None, :],
                                                                                       float("-inf"))
            z = causal_attention(q, k, v, self.sink_logit, bias, 1.0 / math.sqrt(Dh))
        elif self.hook_pattern._fns or torch.is_autocast_enabled(x.device.type):
            z = self._explicit_attention(q, k, v)
        else:
            # no one reads or edits the pattern: one autograd node, same values
            z = causal_attention(q, k, v, self.sink_logit, self.causal_bias[:T, :T], 1.0 / math.sqrt(Dh))
        z = self.hook_z(z)  # (B, Tq, H, Dh)
        return self.c_proj(z.reshape(B, Tq, H * Dh))

    def _explicit_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Op-by-op attention that passes the pattern through ``hook_pattern``; (B, T, H, Dh) in and out."""
        pattern = self.hook_pattern(self.pattern(q, k))  # (B, H, T, T)
        return (pattern @ v.transpose(1, 2)).transpose(1, 2)  # (B, T, H, Dh); the sink's value is 0

    def pattern(self, q: torch.Tensor, k: torch.Tensor, heads: list[int] | None = None) -> torch.Tensor:
        """Causal attention pattern, the sink's share left out: q, k (B, T, H', c) -> (B, H', T, T).

        ``heads`` names the H' heads given (default: all, in order), for their sink logits.
        q and k may hold a subset of each head's channels: the scores are then the part
        those channels contribute, at the head's own scale, which is how a circuit that
        keeps some q/k channels of a head attends.
        """
        B, T, H, _ = q.shape
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H', T, c)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H', T, T)
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        if self.sink_logit is None:
            return torch.softmax(scores, dim=-1)
        sink = self.sink_logit if heads is None else self.sink_logit[heads]  # (H',)
        sink = sink.view(1, H, 1, 1).expand(B, H, T, 1).to(scores.dtype)
        return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :T]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.bias)
        self.sparse_neuron = SiteSparsity(cfg, "mlp_neuron", cfg.d_mlp)
        self.act = F.relu if cfg.mlp_activation == "relu" else F.gelu
        self.hook_post = HookPoint()  # (B, T, d_mlp), after GELU and AbsTopK

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(self.sparse_neuron(self.act(self.c_fc(x))))
        return self.c_proj(post)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D = cfg.d_model
        self.ln_1 = RMSNorm(D, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = RMSNorm(D, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.sparse_attn_in = SiteSparsity(cfg, "attn_in", D)
        self.sparse_attn_out = SiteSparsity(cfg, "attn_out", D)
        self.sparse_mlp_in = SiteSparsity(cfg, "mlp_in", D)
        self.sparse_mlp_out = SiteSparsity(cfg, "mlp_out", D)
        # "relu": after the whole block; "relu_sublayer": after each residual add (OpenAI's)
        self.residual_relu = cfg.residual_activation in ("relu", "relu_sublayer")
        self.residual_relu_mid = cfg.residual_activation == "relu_sublayer"
        self.hook_resid_pre = HookPoint()
        self.hook_attn_in = HookPoint()  # residual reads of the attention, (B, T, D)
        self.hook_attn_out = HookPoint()  # residual writes of the attention, (B, T, D)
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_in = HookPoint()  # residual reads of the MLP
        self.hook_mlp_out = HookPoint()  # residual writes of the MLP
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, last_pos: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); with ``last_pos`` (B,), the output at those positions only,
        (B, 1, D): everything after the attention's keys and values runs on one position per row."""
        x = self.hook_resid_pre(x)  # (B, T, D)
        h = self.hook_attn_in(self.sparse_attn_in(self.ln_1(x)))
        if last_pos is None:
            a = self.attn(h)
        elif isinstance(self.attn, Attention):
            a = self.attn(h, last_pos)  # (B, 1, D)
        else:  # a stand-in (circuits/skip.py), whose output the hook replaces
            a = self.attn(at_positions(h, last_pos))
        if last_pos is not None:
            x = at_positions(x, last_pos)  # (B, 1, D)
        x = x + self.hook_attn_out(self.sparse_attn_out(a))
        if self.residual_relu_mid:
            x = F.relu(x)
        x = self.hook_resid_mid(x)
        h = self.hook_mlp_in(self.sparse_mlp_in(self.ln_2(x)))
        x = x + self.hook_mlp_out(self.sparse_mlp_out(self.mlp(h)))
        if self.residual_relu:
            x = F.relu(x)
        return self.hook_resid_post(x)


class FinalNorm(nn.Module):
    """The last RMSNorm, with its TransformerLens hook name ``ln_final.hook_normalized``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(self.norm(x))


class GPT(HookedMixin, nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.pos_emb else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_final = FinalNorm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied_unembed:
            self.lm_head.weight = self.wte.weight
        self.final_logits_bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.final_logits_bias else None
        self.bigram_table = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.vocab_size)) if cfg.bigram_table else None
        self.hook_embed = HookPoint()  # (B, T, D), token (+ position) embedding
        self.reset_parameters()
        self.setup_hooks()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), output projections N(0, 0.02 / sqrt(2 * n_layer))."""
        proj_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, proj_std)
            elif p.dim() >= 2 and name != "bigram_table":
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith(".bias") or name in ("final_logits_bias", "bigram_table"):
                nn.init.zeros_(p)
            # norm gains stay 1, sink logits stay 0

    def forward(self, input: torch.Tensor, *, start_at_layer: int | None = None, stop_at_layer: int | None = None,
                tokens: torch.Tensor | None = None, last_pos: torch.Tensor | None = None,
                last_only: bool | None = None) -> torch.Tensor:
        """tokens (B, T) long -> logits (B, T, V), or a part of that pass (TransformerLens's arguments).

        ``start_at_layer=L``: ``input`` is the residual stream entering block ``L`` (B, T, D),
        e.g. ``blocks.L.hook_resid_pre`` from a cache, and the embedding is skipped; a
        model with a bigram table then needs the ``tokens`` too.  ``stop_at_layer=S``:
        return the residual stream entering block ``S`` (B, T, D) instead of logits.  Both
        index ``blocks`` as a slice does, so negative layers count from the end.
        ``last_pos`` (B,): logits only at each row's position ``last_pos``, (B, V); the
        final norm and the unembedding then run on those positions alone (a large share
        of a small model's cost when only the next token after a prompt matters).
        ``last_only`` (with ``last_pos``): the last block also runs at those positions only,
        past its keys and values (a tenth to a fifth less work for a 4-layer model).  Its
        hook points from ``hook_q`` on then see (B, 1, ...) activations, so by default
        (None) this is done only when no hook is attached to the last block; True does
        it anyway, for hooks that do not depend on position (a node mask).  The logits
        are the same up to rounding (a one-query attention product sums in another
        order), and every ``last_pos`` caller gets the same path.  Never under autocast
        or with a hook on the last block's pattern.
        """
        if start_at_layer is None:
            tokens = input
            x = self.embed(tokens)
        else:
            x = input  # (B, T, D)
        blocks = list(self.blocks[start_at_layer:stop_at_layer])
        trim = (last_pos is not None and stop_at_layer is None and bool(blocks)
                and not torch.is_autocast_enabled(x.device.type)
                and not getattr(getattr(blocks[-1].attn, "hook_pattern", None), "_fns", None)
                and (last_only or (last_only is None and not _hooked(blocks[-1]))))
        for i, block in enumerate(blocks):
            x = block(x, last_pos) if trim and i == len(blocks) - 1 else block(x)
        if stop_at_layer is not None:
            return x  # (B, T, D)
        if trim:  # x is (B, 1, D) already
            return self._logits(x, None if tokens is None else at_positions(tokens, last_pos))[:, 0]
        return self.unembed(x, tokens, last_pos)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) long -> the residual stream entering block 0, (B, T, D)."""
        B, T = tokens.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.wte(tokens)  # (B, T, D)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=tokens.device))
        return self.hook_embed(x)

    def unembed(self, x: torch.Tensor, tokens: torch.Tensor | None = None,
                last_pos: torch.Tensor | None = None) -> torch.Tensor:
        """The residual stream after the last block (B, T, D) -> logits (B, T, V), or (B, V) at ``last_pos``."""
        if last_pos is not None:
            x = at_positions(x, last_pos)  # (B, 1, D)
            if tokens is not None:
                tokens = at_positions(tokens, last_pos)  # (B, 1)
        logits = self._logits(x, tokens)  # (B, T, V), or (B, 1, V)
        return logits if last_pos is None else logits[:, 0]

    def _logits(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """The final norm, unembedding, bias and bigram table: x (B, T, D), tokens (B, T) -> (B, T, V)."""
        if self.bigram_table is not None and tokens is None:
            raise ValueError("this model adds a bigram table to its logits: pass tokens= with start_at_layer")
        logits = self.lm_head(self.ln_final(x))  # (B, T, V)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias
        if self.bigram_table is not None:
            logits = logits + self.bigram_table[tokens]
        return logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6 x parameters in matmuls plus attention (PaLM's count)."""
        T = seq_len or self.cfg.block_size
        matmul_params = sum(p.numel() for n, p in self.named_parameters()
                            if p.dim() == 2 and n not in ("wte.weight", "wpe.weight", "bigram_table"))
        attn = 6 * self.cfg.n_layer * self.cfg.n_head * self.cfg.d_head * T  # QK^T and PV, fwd+bwd
        return 6 * matmul_params + attn

    @torch.no_grad()
    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """tokens (B, T) -> (B, T + max_new_tokens), sampled one token at a time.

        No autograd graph, and the unembedding runs at the last position only (each step
        reads no other): about a quarter less work per step at the demo model's size."""
        for _ in range(max_new_tokens):
            ctx = tokens[:, -self.cfg.block_size:]
            last = torch.full((ctx.shape[0],), ctx.shape[1] - 1, device=ctx.device)  # (B,)
            logits = self(ctx, last_pos=last)  # (B, V)
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens
