"""The node-link form of a circuit, field by field (found open by benchmarks/mutation.py).

``build_graph`` output goes into ``circuit.json`` and the viewer, so every node's fields
are pinned here exactly, with token labels from a tokenizer (and its fallbacks), and the
embedding edges are checked on a model whose two residual reads of a block have
different RMSNorm gains, so a read weighted by the wrong gain shows.
"""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.circuits.graph import build_graph, io_edges
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT

KEEP = ["blocks.0.hook_attn_in:1", "blocks.0.hook_mlp_in:1", "blocks.0.attn.hook_q:0", "blocks.0.hook_mlp_out:2"]


def _model() -> GPT:
    """1 layer, d_model 4; token 5 writes channel 1, read with gain 2 (attention) and 3 (MLP);
    channel 2 of the MLP's output reaches logit 7 with weight 4 x final gain 0.5."""
    cfg = ModelConfig(vocab_size=8, n_layer=1, d_model=4, n_head=1, d_head=2, d_mlp=3, block_size=8,
                      attn_sink=False, afrac=1.0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0 if p.dim() == 1 else 0.0)
        model.blocks[0].ln_1.weight[1] = 2.0
        model.blocks[0].ln_2.weight[1] = 3.0
        model.wte.weight[5, 1] = 1.0
        model.lm_head.weight[7, 2] = 4.0
        model.ln_final.norm.weight[2] = 0.5
    return model.eval()


class _Tokenizer:
    """decode gives the text; id_to_token (the fallback) a different spelling, or None."""

    def __init__(self, decodes: bool = True, known: bool = True) -> None:
        self.decodes, self.known = decodes, known

    def decode(self, ids: list[int]) -> str:
        if not self.decodes:
            raise ValueError("cannot decode")
        return "".join(f"<{i}>" for i in ids)

    def id_to_token(self, i: int) -> str | None:
        return f"tok{i}" if self.known else None


def test_embedding_edges_use_each_reads_own_gain():
    model = _model()
    ns = NodeSet.from_model(model)
    edges = io_edges(model, ns, ns.keep_from_names(KEEP), prompt_token_ids=[5], answer_token_ids=[7])
    assert sorted(edges) == sorted([
        ("embed:5", "blocks.0.hook_attn_in:1", 2.0),  # ln_1's gain
        ("embed:5", "blocks.0.hook_mlp_in:1", 3.0),  # ln_2's gain
        ("blocks.0.hook_mlp_out:2", "logit:7", 2.0),
    ])


@pytest.mark.parametrize("tokenizer,embed_text,logit_text", [
    (_Tokenizer(), "<5>", "<7>"),
    (_Tokenizer(decodes=False), "tok5", "tok7"),
    (_Tokenizer(decodes=False, known=False), None, None),
    (None, None, None),
])
def test_every_node_field_exactly(tokenizer, embed_text, logit_text):
    model = _model()
    ns = NodeSet.from_model(model)
    g = build_graph(model, ns, ns.keep_from_names(KEEP), prompt_token_ids=[5], answer_token_ids=[7],
                    tokenizer=tokenizer)
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["embed:5"] == {"id": "embed:5", "hook": "embed", "index": 5, "layer": -1, "site": "embed",
                                "head": None, "token": embed_text, "mask": None}
    assert nodes["logit:7"] == {"id": "logit:7", "hook": "logit", "index": 7, "layer": 1, "site": "logit",
                                "head": None, "token": logit_text, "mask": None}
    assert nodes["blocks.0.attn.hook_q:0"] == {"id": "blocks.0.attn.hook_q:0", "hook": "blocks.0.attn.hook_q",
                                               "index": 0, "layer": 0, "site": "q", "head": 0, "token": None,
                                               "mask": None}  # no tau given: no mask value
    assert [n["id"] for n in g["nodes"]][0] == "embed:5" and g["nodes"][-1]["id"] == "logit:7"
