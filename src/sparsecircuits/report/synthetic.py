"""Generated circuits with the shape of pruned ones, at sizes a small model never gives.

The viewer has to hold circuits of thousands of nodes and tens of thousands of links
(the paper's bracket circuit alone touches 1,500 edges); its tests and
``benchmarks/viewer.py`` need such circuits without training a large model. Links
follow the model's wiring: residual reads feed q/k/v channels and neurons within a
layer, values and neurons feed residual writes, writes feed later reads (residual
links), q channels pair with k channels of their head, token embeddings feed reads and
writes feed answer logits.
"""
from __future__ import annotations

import random

from ..sites import hook_name

_SHARE = {"attn_in": 0.13, "q": 0.07, "k": 0.07, "v": 0.10,  # site -> share of internal nodes
          "attn_out": 0.13, "mlp_in": 0.13, "neuron": 0.24, "mlp_out": 0.13}
_WITHIN = [("attn_in", "q"), ("attn_in", "k"), ("attn_in", "v"), ("v", "attn_out"),
           ("mlp_in", "neuron"), ("neuron", "mlp_out"), ("attn_out", "mlp_in")]
_TOKENS = ["(", ")", "('", '("', "')", '")', "[", "]", "]]", " in", " for", " if", ":", " =", " return",
           " def", "self", ".", ",", " lambda", " x", " i", "\n", "    ", " None", " True"]


def synthetic_circuit(n_nodes: int, n_links: int, *, n_layer: int | None = None, d_head: int = 16,
                      seed: int = 0, task: str = "synthetic") -> dict:
    """A circuit.json-shaped dict with about ``n_nodes`` nodes (a fifth of them tokens)
    and ``n_links`` links; deterministic for a seed."""
    rng = random.Random(seed)
    n_layer = n_layer or max(2, min(12, n_nodes // 90))
    n_logit = max(2, min(12, n_nodes // 100))
    n_embed = max(2, n_nodes // 5)
    n_internal = max(len(_SHARE), n_nodes - n_embed - n_logit)
    nodes: list[dict] = []
    by_site: dict[tuple[str, int], list[int]] = {}
    used: set[str] = set()

    def add(hook: str, index: int, site: str, layer: int | None, **extra) -> None:
        nid = f"{hook}:{index}"
        if nid in used:
            return
        used.add(nid)
        by_site.setdefault((site, layer if layer is not None else -1), []).append(len(nodes))
        nodes.append({"id": nid, "hook": hook, "index": index, "layer": layer, "site": site, "mask": 1.0, **extra})

    for k in range(n_embed):
        add("hook_embed", k, "embed", None, token=f"{_TOKENS[k % len(_TOKENS)]}{k // len(_TOKENS) or ''}")
    sites = list(_SHARE)
    share = [_SHARE[s] for s in sites]
    for _ in range(n_internal):
        site = rng.choices(sites, share)[0]
        layer = rng.randrange(n_layer)
        index = rng.randrange(8 * 16 if site in ("q", "k", "v") else 512)
        head = index // d_head if site in ("q", "k", "v") else None
        add(hook_name(layer, site), index, site, layer, head=head)
    for k in range(n_logit):
        add("unembed", 1000 + k, "logit", None, token=_TOKENS[(k * 7) % len(_TOKENS)])

    # Each node gets a latent place in [0, 1) and links prefer near places, as features
    # in a real circuit do; a good layout finds that order again.
    place = [rng.random() for _ in nodes]

    def pick(site: str, layer: int | None, near: int | None = None) -> int | None:
        pool = by_site.get((site, layer if layer is not None else -1))
        if not pool:
            return None
        if near is None:
            return rng.choice(pool)
        return min((rng.choice(pool) for _ in range(6)), key=lambda j: abs(place[j] - place[near]))

    links: dict[tuple[int, int], float] = {}
    kinds = ["within", "residual", "qk", "embed", "logit"]
    kind_share = [0.55, 0.25, 0.02, 0.12, 0.06]
    attempts = 0
    while len(links) < n_links and attempts < 50 * n_links:
        attempts += 1
        kind = rng.choices(kinds, kind_share)[0]
        layer = rng.randrange(n_layer)
        if kind == "within":
            a, b = rng.choice(_WITHIN)
            s = pick(a, layer)
            t = pick(b, layer, s)
        elif kind == "residual":
            later = rng.randrange(layer, n_layer) if layer < n_layer - 1 else layer
            if later == layer:
                s = pick("attn_out", layer)
                t = pick("mlp_in", layer, s)
            else:
                s = pick(rng.choice(["attn_out", "mlp_out"]), layer)
                t = pick(rng.choice(["attn_in", "mlp_in"]), later, s)
        elif kind == "qk":
            s = pick("q", layer)
            t = None
            if s is not None:
                same = [j for j in by_site.get(("k", layer), []) if nodes[j]["head"] == nodes[s]["head"]]
                t = rng.choice(same) if same else None
        elif kind == "embed":
            t = pick(rng.choice(["attn_in", "mlp_in"]), layer)
            s = pick("embed", None, t)
        else:
            s = pick(rng.choice(["attn_out", "mlp_out"]), layer)
            t = pick("logit", None, s)
        if s is None or t is None or s == t or (s, t) in links:
            continue
        links[(s, t)] = round(rng.choice([-1, 1]) * rng.lognormvariate(-1.0, 0.8), 4)
    details = {nodes[i]["id"]: {"ablation_delta": round(rng.uniform(0.0, 1.5) ** 2, 4)}
               for i in rng.sample(range(len(nodes)), min(len(nodes), 40)) if nodes[i]["site"] not in ("embed", "logit")}
    return {
        "schema_version": 1,
        "model": {"run": "synthetic", "n_layer": n_layer, "d_model": 512, "n_head": 8, "d_head": d_head},
        "task": task, "forced": False,
        "metrics": {"n_nodes": sum(1 for n in nodes if n["site"] not in ("embed", "logit")), "n_edges": len(links)},
        "nodes": nodes,
        "links": [{"source": nodes[s]["id"], "target": nodes[t]["id"], "weight": w} for (s, t), w in links.items()],
        "details": details,
    }
