"""A circuit as the attribution-graph JSON of circuit-tracer and Neuronpedia.

Those viewers read ``{"metadata", "qParams", "nodes", "links"}`` (the pydantic models in
circuit-tracer's ``circuit_tracer/frontend/graph_models.py``; the JSON Schema we check
against is ``docs/attribution_graph.schema.json``).  Their graphs are per prompt: every
node sits at a token position (``ctx_idx``) on a layer row.  Ours is a weight graph that
holds on every prompt of a task, so the export picks one prompt and places

* each ``embed:TOKEN`` node at every position where that token occurs in the prompt
  (``E_{token}_{pos}``, ``feature_type`` "embedding"); embed nodes whose token is not in
  the prompt are left out, with their links;
* every internal node at the prompt's last position, the one the answer is read at, on
  the row of its sublayer: ``2 * layer`` for the attention sites (attn_in, q, k, v,
  attn_out), ``2 * layer + 1`` for the MLP sites (mlp_in, neuron, mlp_out).  Its
  ``feature`` is the node's flat index (unique in the model), its ``clerp`` names the
  hook, index and head, and ``activation`` is the full model's value there.  The viewers
  draw only a few node kinds, so internal nodes carry circuit-tracer's feature kind
  ("cross layer transcoder");
* each ``logit:TOKEN`` node on row ``2 * n_layer + 1`` (circuit-tracer puts logits one
  past the last layer plus one), with the model's probability of that token and
  ``is_target_logit`` on the correct answer.

``influence`` is the node's ``ablation_delta`` from the circuit's details when present.
Links keep their signed weights; a link into a repeated embedding is repeated per position.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..circuits.circuit import Circuit
from ..circuits.nodes import NodeSet
from ..errors import UserError

GRAPH_SCHEMA_VERSION = 1
ATTN_SITES = ("attn_in", "q", "k", "v", "attn_out")
FEATURE_TYPE = "cross layer transcoder"


def _row(site: str, layer: int) -> int:
    return 2 * layer + (0 if site in ATTN_SITES else 1)


def _clerp(node: dict) -> str:
    head = "" if node.get("head") is None else f" head {node['head']}"
    return f"L{node['layer']} {node['site']}{head} #{node['index']} ({node['id']})"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "circuit"


@torch.no_grad()
def to_attribution_graph(circuit: Circuit | dict, run, prompt: str, correct: str | None = None,
                         slug: str | None = None) -> dict:
    """The attribution-graph JSON of ``circuit`` on ``prompt`` (see the module docstring).

    ``run`` is a loaded run (``sparsecircuits.load_run``) with a tokenizer; ``correct`` is
    the answer token's text, marking its logit node as the target.
    """
    raw = circuit.to_json() if isinstance(circuit, Circuit) else circuit
    details = raw.get("details") if isinstance(raw.get("details"), dict) else {}
    m = raw["model"]
    nodes = NodeSet(m["n_layer"], m["d_model"], m["n_head"], m["d_head"], m["d_mlp"])
    ids = run.encode(prompt)
    if not ids:
        raise UserError("the prompt encodes to no tokens")
    if len(ids) > run.model.cfg.block_size:
        raise UserError(f"the prompt is {len(ids)} tokens, longer than the model's context "
                        f"({run.model.cfg.block_size})")
    last = len(ids) - 1
    logits, cache = run.model.run_with_cache(torch.tensor([ids]))  # (1, T, V), hook -> (1, T, ...)
    probs = torch.softmax(logits[0, last].float(), dim=-1)  # (V,)
    target_id = None
    if correct is not None:
        enc = run.encode(correct)
        target_id = enc[0] if len(enc) == 1 else None
    logit_row = 2 * m["n_layer"] + 1

    out_nodes: list[dict] = []
    where: dict[str, list[str]] = {}  # our node id -> its graph node ids
    for node in raw["nodes"]:
        site, nid = node["site"], node["id"]
        if site == "embed":
            token = int(node["index"])
            for pos in (p for p, t in enumerate(ids) if t == token):
                gid = f"E_{token}_{pos}"
                out_nodes.append({"node_id": gid, "jsNodeId": f"E_{token}-{pos}", "feature": pos, "layer": "E",
                                  "ctx_idx": pos, "feature_type": "embedding", "clerp": node.get("token") or "",
                                  "influence": None, "activation": None})
                where.setdefault(nid, []).append(gid)
        elif site == "logit":
            token = int(node["index"])
            p = float(probs[token])
            gid = f"{logit_row}_{token}_{last}"
            out_nodes.append({"node_id": gid, "jsNodeId": f"L_{token}-{last}", "feature": token,
                              "layer": str(logit_row), "ctx_idx": last, "feature_type": "logit",
                              "token_prob": p, "is_target_logit": token == target_id,
                              "clerp": f'Output "{node.get("token") or token}" (p={p:.3f})',
                              "influence": None, "activation": float(logits[0, last, token])})
            where[nid] = [gid]
        else:
            flat = nodes.index(nid)
            row = _row(site, int(node["layer"]))
            act = cache[node["hook"]][0, last].reshape(-1)[int(node["index"])]  # q/k/v: (H, Dh) flattened
            delta = (details.get(nid) or {}).get("ablation_delta")
            gid = f"{row}_{flat}_{last}"
            out_nodes.append({"node_id": gid, "jsNodeId": f"{row}_{flat}-0", "feature": flat, "layer": str(row),
                              "ctx_idx": last, "feature_type": FEATURE_TYPE, "clerp": _clerp(node),
                              "influence": None if delta is None else float(delta), "activation": float(act)})
            where[nid] = [gid]

    links = [{"source": s, "target": t, "weight": float(link["weight"])}
             for link in raw["links"] for s in where.get(link["source"], []) for t in where.get(link["target"], [])]
    tokens = [run.decode([t]) for t in ids]
    name = slug or _slug(f"{Path(str(m.get('run', 'run'))).name}-{raw['task']}")
    return {
        "metadata": {"slug": name, "scan": Path(str(m.get("run", ""))).name or "sparsecircuits",
                     "transcoder_list": [], "prompt_tokens": tokens, "prompt": prompt, "node_threshold": None,
                     "schema_version": GRAPH_SCHEMA_VERSION,
                     "info": {"creator_name": "sparsecircuits", "task": raw["task"],
                              "description": "weight-sparse transformer circuit; nodes are model channels, "
                                             "neurons and q/k/v channels, links are weights"}},
        "qParams": {"pinnedIds": [n["node_id"] for n in out_nodes if n["feature_type"] == "logit"],
                    "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": out_nodes,
        "links": links,
    }


def default_prompt(task: str) -> tuple[str, str]:
    """The first held-out prompt of a built-in task and its correct answer."""
    from ..tasks import get_task

    item = get_task(task).generate(1, seed=0, split="test")[0]
    return item.a.prompt, item.a.correct
