"""Edges and links of a circuit: what joins two kept nodes.

The circuit's size, ``n_edges``, is the paper's edge count: the nonzero weights joining
two kept nodes (``sparsecircuits.circuit_sizes`` explains the convention).  Kinds of
link, each ``(source, target, weight)``:

``weight`` (counted in ``n_edges``), within one block:

* ``attn_in`` channel ``c`` -> q/k/v channel ``j`` where ``attn.c_attn.weight[row, c]``
  is nonzero (row ``j``, ``H*Dh + j`` or ``2*H*Dh + j``);
* v channel ``j`` -> ``attn_out`` ``c`` where ``attn.c_proj.weight[c, j] != 0`` (the value
  reaches the output through the attention pattern);
* ``mlp_in`` ``c`` -> neuron ``n`` where ``mlp.c_fc.weight[n, c] != 0``;
* neuron ``n`` -> ``mlp_out`` ``c`` where ``mlp.c_proj.weight[c, n] != 0``.

``residual`` (``n_residual_links``): residual write -> residual read of the same channel
``c`` in a later sublayer: the ``attn_out`` of block ``i`` feeds the ``mlp_in`` of block
``i`` and every read of blocks after ``i``; the ``mlp_out`` of block ``i`` feeds every
read of later blocks.  The weight is the read's RMSNorm gain for ``c`` (a zero gain
means no link).  These are no weight matrix's entries: the stream is the identity.

``qk`` (``n_qk_pairs``): q channel ``j`` -> k channel ``j`` (same head, same channel
within the head) when both are kept: the score sums ``q_j * k_j`` over matching
channels, so the pair is one multiplicative link; its weight is the score's scale
``1 / sqrt(d_head)``.

``embed`` / ``logit`` (``n_io_edges``), which depend on the task's vocabulary rather than
on the circuit's computation:

* ``embed:<token>`` -> every kept residual read of channel ``c`` for each prompt token
  with ``wte[token, c] != 0`` (the embedding stays in the residual stream, so every
  later read sees it, the same rule as for a write); weight ``wte[token, c]`` times the
  read's gain;
* every kept residual write of channel ``c`` -> ``logit:<token>`` for each answer token,
  weight ``lm_head[token, c] * ln_final gain[c]`` when nonzero.

Not nodes and not links: positional embeddings, biases, attention sinks and the bigram
table, which are never masked.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from ..circuit_sizes import EDGE_COUNT, counts_from_kinds
from ..sites import READ_KINDS, WRITE_KINDS, hook_name
from .nodes import NodeSet

Edge = tuple[int, int, float]  # (source flat index, target flat index, weight)


LINK_KINDS = ("weight", "residual", "qk")  # internal links; "weight" ones are the edges


class _EdgeSink:
    """Collects links of one kind as tensors (fast even for a whole model), or only counts them."""

    def __init__(self, count_only: bool) -> None:
        self.count_only = count_only
        self.count = 0
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor) -> None:
        self.count += int(src.numel())
        if not self.count_only and src.numel():
            self.parts.append((src, dst, w.float()))

    def edges(self) -> list[Edge]:
        if not self.parts:
            return []
        src, dst, w = (torch.cat(x) for x in zip(*self.parts))
        return list(zip(src.tolist(), dst.tolist(), w.tolist()))


def _kept(nodes: NodeSet, keep: torch.Tensor, layer: int, kind: str) -> tuple[torch.Tensor, int]:
    """Kept local indices (k,) of a site, and the site's flat start."""
    s = nodes.site(hook_name(layer, kind))
    return keep[s.start:s.stop].nonzero().flatten(), s.start


def _matrix_edges(W: torch.Tensor, src: tuple, dst: tuple, sink: _EdgeSink) -> None:
    """Edges src -> dst for nonzero ``W[dst, src]`` (an nn.Linear weight (out, in))."""
    (si, s0), (di, d0) = src, dst
    if si.numel() == 0 or di.numel() == 0:
        return
    sub = W.detach()[di][:, si].cpu()  # (n_dst, n_src)
    if sink.count_only:
        sink.count += int(torch.count_nonzero(sub))
        return
    nz = sub.nonzero()  # (m, 2): (dst row, src col)
    sink.add(s0 + si[nz[:, 1]], d0 + di[nz[:, 0]], sub[nz[:, 0], nz[:, 1]])


def _diag_edges(gain: torch.Tensor, src: tuple, dst: tuple, d_model: int, sink: _EdgeSink) -> None:
    """Same-channel links src c -> dst c weighted by a nonzero per-channel gain."""
    (si, s0), (di, d0) = src, dst
    both = torch.zeros(d_model, dtype=torch.bool)
    both[si] = True
    other = torch.zeros(d_model, dtype=torch.bool)
    other[di] = True
    g = gain.detach().cpu()
    c = (both & other & (g != 0)).nonzero().flatten()
    sink.add(s0 + c, d0 + c, g[c])


@torch.no_grad()
def _collect(model, nodes: NodeSet, keep: torch.Tensor, sinks: dict[str, _EdgeSink]) -> None:
    """Feed every internal link between kept nodes to the sink of its kind (kinds without a sink are skipped)."""
    keep = keep.to("cpu", torch.bool)
    inner = nodes.n_head * nodes.d_head
    D = nodes.d_model
    blocks = model.blocks
    weight, residual, qk_sink = sinks.get("weight"), sinks.get("residual"), sinks.get("qk")
    for i in range(nodes.n_layer):
        blk = blocks[i]
        if weight is not None:
            reads_a = _kept(nodes, keep, i, "attn_in")
            W = blk.attn.c_attn.weight  # (3*H*Dh, D) packing q, k, v
            for part, kind in enumerate(("q", "k", "v")):
                _matrix_edges(W[part * inner:(part + 1) * inner], reads_a, _kept(nodes, keep, i, kind), weight)
            _matrix_edges(blk.attn.c_proj.weight, _kept(nodes, keep, i, "v"), _kept(nodes, keep, i, "attn_out"),
                          weight)
            _matrix_edges(blk.mlp.c_fc.weight, _kept(nodes, keep, i, "mlp_in"), _kept(nodes, keep, i, "neuron"),
                          weight)
            _matrix_edges(blk.mlp.c_proj.weight, _kept(nodes, keep, i, "neuron"), _kept(nodes, keep, i, "mlp_out"),
                          weight)
        if qk_sink is not None:
            (q, q0), (k, k0) = _kept(nodes, keep, i, "q"), _kept(nodes, keep, i, "k")
            qk = torch.zeros(inner, dtype=torch.bool)
            qk[q] = True
            kk = torch.zeros(inner, dtype=torch.bool)
            kk[k] = True
            j = (qk & kk).nonzero().flatten()
            qk_sink.add(q0 + j, k0 + j, torch.full((j.numel(),), 1.0 / math.sqrt(nodes.d_head)))
        if residual is not None:
            # residual stream: writes of block i -> later reads of the same channel
            attn_w, mlp_w = _kept(nodes, keep, i, "attn_out"), _kept(nodes, keep, i, "mlp_out")
            _diag_edges(blk.ln_2.weight, attn_w, _kept(nodes, keep, i, "mlp_in"), D, residual)
            for j_layer in range(i + 1, nodes.n_layer):
                later = blocks[j_layer]
                for writes in (attn_w, mlp_w):
                    _diag_edges(later.ln_1.weight, writes, _kept(nodes, keep, j_layer, "attn_in"), D, residual)
                    _diag_edges(later.ln_2.weight, writes, _kept(nodes, keep, j_layer, "mlp_in"), D, residual)


def internal_links(model, nodes: NodeSet, keep: torch.Tensor) -> list[tuple[int, int, float, str]]:
    """Every internal link between kept nodes, as flat ``(source, target, weight, kind)``."""
    sinks = {kind: _EdgeSink(count_only=False) for kind in LINK_KINDS}
    _collect(model, nodes, keep, sinks)
    return [(s, t, w, kind) for kind in LINK_KINDS for s, t, w in sinks[kind].edges()]


def internal_edges(model, nodes: NodeSet, keep: torch.Tensor) -> list[Edge]:
    """The circuit's edges: nonzero weights between kept nodes, as flat ``(source, target, weight)``."""
    sink = _EdgeSink(count_only=False)
    _collect(model, nodes, keep, {"weight": sink})
    return sink.edges()


def count_edges(model, nodes: NodeSet, keep: torch.Tensor) -> int:
    """The circuit's size: the number of nonzero weights between kept nodes (the paper's edges)."""
    sink = _EdgeSink(count_only=True)
    _collect(model, nodes, keep, {"weight": sink})
    return sink.count


def link_counts(model, nodes: NodeSet, keep: torch.Tensor) -> dict[str, int]:
    """``{"n_edges", "n_residual_links", "n_qk_pairs"}`` of the kept nodes."""
    sinks = {kind: _EdgeSink(count_only=True) for kind in LINK_KINDS}
    _collect(model, nodes, keep, sinks)
    return {"n_edges": sinks["weight"].count, "n_residual_links": sinks["residual"].count,
            "n_qk_pairs": sinks["qk"].count}


def _read_gain(model, layer: int, kind: str) -> torch.Tensor:
    blk = model.blocks[layer]
    return (blk.ln_1.weight if kind == "attn_in" else blk.ln_2.weight).detach().cpu()


@torch.no_grad()
def io_edges(model, nodes: NodeSet, keep: torch.Tensor, prompt_token_ids: Iterable[int],
             answer_token_ids: Iterable[int]) -> list[tuple[str, str, float]]:
    """Embedding -> read and write -> logit edges, as ``(source id, target id, weight)``."""
    keep = keep.to("cpu", torch.bool)
    out: list[tuple[str, str, float]] = []
    tokens = torch.tensor(sorted(set(int(t) for t in prompt_token_ids)), dtype=torch.long)
    if tokens.numel():
        emb = model.wte.weight.detach().cpu()[tokens]  # (n_tok, D)
        for layer in range(nodes.n_layer):
            for kind in READ_KINDS:
                idx, _ = _kept(nodes, keep, layer, kind)
                w = emb[:, idx] * _read_gain(model, layer, kind)[idx]  # (n_tok, k)
                for ti, ci in w.nonzero().tolist():
                    out.append((f"embed:{int(tokens[ti])}", f"{hook_name(layer, kind)}:{int(idx[ci])}",
                                float(w[ti, ci])))
    answers = torch.tensor(sorted(set(int(t) for t in answer_token_ids)), dtype=torch.long)
    if answers.numel():
        unembed = model.lm_head.weight.detach().cpu()[answers] * model.ln_final.norm.weight.detach().cpu()  # (n_ans, D)
        for layer in range(nodes.n_layer):
            for kind in WRITE_KINDS:
                idx, _ = _kept(nodes, keep, layer, kind)
                w = unembed[:, idx]  # (n_ans, k)
                for ai, ci in w.nonzero().tolist():
                    out.append((f"{hook_name(layer, kind)}:{int(idx[ci])}", f"logit:{int(answers[ai])}",
                                float(w[ai, ci])))
    return out


def _token_text(tokenizer, t: int) -> str | None:
    if tokenizer is None:
        return None
    try:
        return tokenizer.decode([t])
    except Exception:  # noqa: BLE001 - a label only
        tok = tokenizer.id_to_token(t)
        return None if tok is None else str(tok)


def build_graph(model, nodes: NodeSet, keep: torch.Tensor, tau: torch.Tensor | None = None,
                prompt_token_ids: Iterable[int] = (), answer_token_ids: Iterable[int] = (),
                tokenizer=None) -> dict:
    """Node-link form of a circuit: ``{"nodes", "links", "counts"}`` plus each count at the top.

    Every link carries its ``kind`` (``weight``, ``residual``, ``qk``, ``embed``,
    ``logit``); ``counts`` holds ``n_edges`` (weights only), ``n_residual_links``,
    ``n_qk_pairs``, ``n_io_edges``, ``n_edges_with_io`` and the ``edge_count`` marker.
    Internal nodes carry ``mask`` (their final tau, or null); embed and logit nodes are
    listed only when they have at least one link, with their token's text.
    """
    keep = keep.to("cpu", torch.bool)
    flat = keep.nonzero().flatten().tolist()
    node_list = []
    for f in flat:
        d = nodes.describe(f)
        d["token"] = None
        d["mask"] = None if tau is None else float(tau[f])
        node_list.append(d)
    links = [{"source": nodes.name(s), "target": nodes.name(t), "weight": w, "kind": kind}
             for s, t, w, kind in internal_links(model, nodes, keep)]
    io = io_edges(model, nodes, keep, prompt_token_ids, answer_token_ids)
    embeds = sorted({int(s.split(":")[1]) for s, _, _ in io if s.startswith("embed:")})
    logits = sorted({int(t.split(":")[1]) for _, t, _ in io if t.startswith("logit:")})
    io_nodes = [{"id": f"embed:{t}", "hook": "embed", "index": t, "layer": -1, "site": "embed",
                 "head": None, "token": _token_text(tokenizer, t), "mask": None} for t in embeds]
    io_nodes += [{"id": f"logit:{t}", "hook": "logit", "index": t, "layer": nodes.n_layer, "site": "logit",
                  "head": None, "token": _token_text(tokenizer, t), "mask": None} for t in logits]
    links += [{"source": s, "target": t, "weight": w, "kind": "embed" if s.startswith("embed:") else "logit"}
              for s, t, w in io]
    counts = {**counts_from_kinds(lk["kind"] for lk in links), "edge_count": EDGE_COUNT}
    return {"nodes": io_nodes[:len(embeds)] + node_list + io_nodes[len(embeds):], "links": links,
            "counts": counts, **counts}
