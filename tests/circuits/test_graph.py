import math

import torch

from circuit_fixtures import random_model
from sparsecircuits.circuits.graph import (
    build_graph,
    count_edges,
    internal_edges,
    internal_links,
    io_edges,
    link_counts,
)
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT

KEEP = [
    "blocks.0.hook_attn_in:1", "blocks.0.hook_attn_in:3", "blocks.0.attn.hook_q:0", "blocks.0.attn.hook_q:1",
    "blocks.0.attn.hook_k:0", "blocks.0.attn.hook_v:1", "blocks.0.hook_attn_out:2", "blocks.0.hook_mlp_in:2",
    "blocks.0.mlp.hook_post:1", "blocks.0.hook_mlp_out:3",
    "blocks.1.hook_attn_in:2", "blocks.1.hook_attn_in:3", "blocks.1.hook_mlp_in:2", "blocks.1.hook_mlp_in:3",
]


def _patterned_model() -> GPT:
    cfg = ModelConfig(vocab_size=8, n_layer=2, d_model=4, n_head=1, d_head=2, d_mlp=3, block_size=8,
                      attn_sink=False, afrac=1.0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "norm.weight")) else 0.0)
        b0 = model.blocks[0]
        b0.attn.c_attn.weight[0, 1] = 0.5  # q0 <- c1
        b0.attn.c_attn.weight[1, 0] = 0.9  # q1 <- c0 (c0 not kept)
        b0.attn.c_attn.weight[2 + 0, 1] = 0.7  # k0 <- c1
        b0.attn.c_attn.weight[4 + 1, 3] = -0.2  # v1 <- c3
        b0.attn.c_proj.weight[2, 1] = 1.5  # attn_out2 <- v1
        b0.mlp.c_fc.weight[1, 2] = 2.0  # neuron1 <- mlp_in2
        b0.mlp.c_proj.weight[3, 1] = -1.0  # mlp_out3 <- neuron1
        model.blocks[1].ln_1.weight[2] = 0.0  # block 1's attention ignores channel 2
        model.wte.weight[5] = torch.tensor([0.0, 1.0, 0.0, 0.5])
        model.lm_head.weight[7] = torch.tensor([0.0, 0.0, 2.0, 3.0])
        model.ln_final.norm.weight[2] = 0.5
    return model.eval()


# the nonzero weights between kept nodes, by hand (q:1 <- attn_in:0 is a weight, but attn_in:0 is not kept)
WEIGHT_EDGES = {
    ("blocks.0.hook_attn_in:1", "blocks.0.attn.hook_q:0"): 0.5,
    ("blocks.0.hook_attn_in:1", "blocks.0.attn.hook_k:0"): 0.7,
    ("blocks.0.hook_attn_in:3", "blocks.0.attn.hook_v:1"): -0.2,
    ("blocks.0.attn.hook_v:1", "blocks.0.hook_attn_out:2"): 1.5,
    ("blocks.0.hook_mlp_in:2", "blocks.0.mlp.hook_post:1"): 2.0,
    ("blocks.0.mlp.hook_post:1", "blocks.0.hook_mlp_out:3"): -1.0,
}
RESIDUAL_LINKS = {
    ("blocks.0.hook_attn_out:2", "blocks.0.hook_mlp_in:2"): 1.0,  # same block, MLP read
    ("blocks.0.hook_attn_out:2", "blocks.1.hook_mlp_in:2"): 1.0,  # (attn_in:2 of block 1 has gain 0)
    ("blocks.0.hook_mlp_out:3", "blocks.1.hook_attn_in:3"): 1.0,
    ("blocks.0.hook_mlp_out:3", "blocks.1.hook_mlp_in:3"): 1.0,
}
QK_PAIRS = {("blocks.0.attn.hook_q:0", "blocks.0.attn.hook_k:0"): 1 / math.sqrt(2)}


def test_edges_are_the_nonzero_weights_between_kept_nodes():
    model = _patterned_model()
    ns = NodeSet.from_model(model)
    keep = ns.keep_from_names(KEEP)
    got = {(ns.name(s), ns.name(t)): w for s, t, w in internal_edges(model, ns, keep)}
    assert got.keys() == WEIGHT_EDGES.keys()
    for key, w in WEIGHT_EDGES.items():
        assert math.isclose(got[key], w, rel_tol=1e-6), key
    assert count_edges(model, ns, keep) == 6
    assert link_counts(model, ns, keep) == {"n_edges": 6, "n_residual_links": 4, "n_qk_pairs": 1}


def test_internal_links_keep_residual_and_qk_links_under_their_kind():
    model = _patterned_model()
    ns = NodeSet.from_model(model)
    keep = ns.keep_from_names(KEEP)
    got = {(ns.name(s), ns.name(t)): (w, kind) for s, t, w, kind in internal_links(model, ns, keep)}
    expected = {**{k: (w, "weight") for k, w in WEIGHT_EDGES.items()},
                **{k: (w, "residual") for k, w in RESIDUAL_LINKS.items()},
                **{k: (w, "qk") for k, w in QK_PAIRS.items()}}
    assert got.keys() == expected.keys()
    for key, (w, kind) in expected.items():
        assert got[key][1] == kind and math.isclose(got[key][0], w, rel_tol=1e-6), key


def test_io_edges_and_node_link_form():
    model = _patterned_model()
    ns = NodeSet.from_model(model)
    keep = ns.keep_from_names(KEEP)
    io = {(s, t): w for s, t, w in io_edges(model, ns, keep, prompt_token_ids=[5, 1], answer_token_ids=[7, 6])}
    assert io == {
        ("embed:5", "blocks.0.hook_attn_in:1"): 1.0,
        ("embed:5", "blocks.0.hook_attn_in:3"): 0.5,
        ("embed:5", "blocks.1.hook_attn_in:3"): 0.5,
        ("embed:5", "blocks.1.hook_mlp_in:3"): 0.5,
        ("blocks.0.hook_attn_out:2", "logit:7"): 1.0,  # lm_head 2 x final gain 0.5
        ("blocks.0.hook_mlp_out:3", "logit:7"): 3.0,
    }
    g = build_graph(model, ns, keep, tau=torch.linspace(-1, 1, ns.n), prompt_token_ids=[5, 1],
                    answer_token_ids=[7, 6])
    assert len(g["links"]) == 17  # residual and q.k links stay in the graph ...
    assert g["counts"] == {"n_edges": 6, "n_residual_links": 4, "n_qk_pairs": 1, "n_io_edges": 6,
                           "n_edges_with_io": 12, "edge_count": "weights"}  # ... but not in n_edges
    assert g["n_edges"] == 6 and g["n_edges_with_io"] == 12
    kinds = {(lk["source"], lk["target"]): lk["kind"] for lk in g["links"]}
    assert kinds[("blocks.0.attn.hook_q:0", "blocks.0.attn.hook_k:0")] == "qk"
    assert kinds[("blocks.0.hook_mlp_out:3", "blocks.1.hook_attn_in:3")] == "residual"
    assert kinds[("embed:5", "blocks.0.hook_attn_in:1")] == "embed"
    assert kinds[("blocks.0.hook_mlp_out:3", "logit:7")] == "logit"
    assert sum(k == "weight" for k in kinds.values()) == 6
    ids = {n["id"] for n in g["nodes"]}
    assert ids == set(KEEP) | {"embed:5", "logit:7"}  # token 1 and answer 6 have no edge: not listed
    for link in g["links"]:
        assert link["source"] in ids and link["target"] in ids
    q = next(n for n in g["nodes"] if n["id"] == "blocks.0.attn.hook_q:1")
    assert q["site"] == "q" and q["head"] == 0 and q["layer"] == 0 and q["index"] == 1
    assert q["mask"] == float(torch.linspace(-1, 1, ns.n)[ns.index("blocks.0.attn.hook_q:1")])
    embed = next(n for n in g["nodes"] if n["id"] == "embed:5")
    assert embed["site"] == "embed" and embed["layer"] == -1 and embed["mask"] is None


def test_edges_join_kept_nodes_only_and_count_matches():
    model = random_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make the weights sparse, as trained models are
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_((torch.rand(p.shape, generator=g) < 0.2).float())
    ns = NodeSet.from_model(model)
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(ns.n, generator=g) < 0.3
    edges = internal_links(model, ns, keep)
    assert sum(k == "weight" for *_, k in edges) == count_edges(model, ns, keep) > 0
    for s, t, w, _ in edges:
        assert keep[s] and keep[t] and w != 0
    # dropping a node removes exactly the links touching it
    node = edges[0][0]
    keep2 = keep.clone()
    keep2[node] = False
    touching = sum(1 for s, t, *_ in edges if node in (s, t))
    assert len(internal_links(model, ns, keep2)) == len(edges) - touching


def test_n_edges_is_a_brute_force_count_of_nonzero_weights():
    """Entry by entry over the four matrices, independently of the vectorised code."""
    model = random_model()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_((torch.rand_like(p) < 0.3).float())
    ns = NodeSet.from_model(model)
    keep = torch.rand(ns.n, generator=torch.Generator().manual_seed(5)) < 0.4
    kept = {ns.name(i) for i in keep.nonzero().flatten().tolist()}
    inner = ns.n_head * ns.d_head
    count = 0
    for i, blk in enumerate(model.blocks):
        pre = f"blocks.{i}."
        mats = [(blk.attn.c_attn.weight[part * inner:(part + 1) * inner], pre + "hook_attn_in", pre + f"attn.hook_{kind}")
                for part, kind in enumerate("qkv")]
        mats += [(blk.attn.c_proj.weight, pre + "attn.hook_v", pre + "hook_attn_out"),
                 (blk.mlp.c_fc.weight, pre + "hook_mlp_in", pre + "mlp.hook_post"),
                 (blk.mlp.c_proj.weight, pre + "mlp.hook_post", pre + "hook_mlp_out")]
        for W, src, dst in mats:
            for r in range(W.shape[0]):
                for c in range(W.shape[1]):
                    if W[r, c] != 0 and f"{src}:{c}" in kept and f"{dst}:{r}" in kept:
                        count += 1
    assert count > 0
    assert count_edges(model, ns, keep) == count == len(internal_edges(model, ns, keep))
    counts = link_counts(model, ns, keep)
    assert counts["n_edges"] == count and counts["n_residual_links"] > 0
