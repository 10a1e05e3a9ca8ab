"""Builders for a synthetic run directory with realistic shapes, for the report and viewer tests.

Four layers, a 20-node / 25-link quote-style circuit with details (snippets, class
activations, ablation deltas, attention patterns), a smaller forced circuit without
details, and hostile strings wherever text from the corpus or the user can appear.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

SCRIPT_TOKEN = "<script>window.__pwned=1</script>"
IMG_TOKEN = '"><img src=x onerror=window.__pwned=2>'
HOSTILE_CONFIG = "<script>alert(1)</script>"


def _node(hook: str, index: int, site: str, layer: int | None, head: int | None = None,
          token: str | None = None, mask: float | None = 0.8) -> dict:
    nid = f"{hook}:{index}"
    return {"id": nid, "hook": hook, "index": index, "layer": layer, "site": site, "head": head,
            "token": token, "mask": mask}


def quote_circuit() -> dict:
    """20 nodes over 4 layers, 25 links, details on most nodes."""
    rng = random.Random(0)
    e = "hook_embed"
    nodes = [
        _node(e, 7, "embed", None, token='("'),
        _node(e, 8, "embed", None, token="('"),
        _node(e, 900, "embed", None, token=SCRIPT_TOKEN),
        _node(e, 901, "embed", None, token=IMG_TOKEN),
        _node("blocks.0.hook_mlp_in", 12, "mlp_in", 0),
        _node("blocks.0.mlp.hook_post", 301, "neuron", 0),
        _node("blocks.0.mlp.hook_post", 77, "neuron", 0),
        _node("blocks.0.hook_mlp_out", 40, "mlp_out", 0),
        _node("blocks.0.hook_mlp_out", 9, "mlp_out", 0),
        _node("blocks.1.hook_attn_in", 40, "attn_in", 1),
        _node("blocks.1.hook_attn_in", 9, "attn_in", 1),
        _node("blocks.1.attn.hook_q", 53, "q", 1, head=3),
        _node("blocks.1.attn.hook_k", 53, "k", 1, head=3),
        _node("blocks.1.attn.hook_v", 50, "v", 1, head=3),
        _node("blocks.1.attn.hook_v", 88, "v", 1, head=5),
        _node("blocks.1.hook_attn_out", 55, "attn_out", 1),
        _node("blocks.3.hook_mlp_in", 55, "mlp_in", 3),
        _node("blocks.3.mlp.hook_post", 120, "neuron", 3),
        _node("unembed", 14, "logit", None, token="')", mask=None),
        _node("unembed", 15, "logit", None, token='")', mask=None),
    ]
    ids = [n["id"] for n in nodes]
    pairs = [
        (0, 4, 0.9), (1, 4, -0.8), (2, 4, 0.1), (0, 10, 0.5), (1, 10, -0.45), (3, 9, 0.05),
        (4, 5, 1.2), (4, 6, -0.7), (5, 7, 0.95), (6, 8, 0.6), (5, 8, -0.3),
        (7, 9, 0.8), (8, 10, 0.75), (9, 12, 0.6), (9, 11, 0.2), (10, 13, 0.9), (10, 14, 0.3),
        (13, 15, 1.1), (14, 15, -0.25), (15, 16, 0.7), (16, 17, 0.85), (17, 18, -0.9),
        (17, 19, 0.95), (15, 18, -0.4), (11, 12, 0.25),
    ]
    links = [{"source": ids[s], "target": ids[t], "weight": w} for s, t, w in pairs]
    prompt = ["x", " =", " foo", '("', "hello", " world", SCRIPT_TOKEN]
    details = {}
    for k, n in enumerate(nodes):
        if k in (3, 16):  # partial: some nodes have no details at all
            continue
        snippets = []
        for j in range(4):
            toks = ["def", " f", "(", "):", "\n", "    ", "return", ' ("', "a", IMG_TOKEN if j == 1 else "'", ")"]
            if j == 2:
                toks[3] = SCRIPT_TOKEN
            acts = [round(rng.uniform(-0.3, 1.0) * (1.0 - 0.2 * j), 3) for _ in toks]
            snippets.append({"tokens": toks, "acts": acts, "max": max(acts)})
        det: dict = {
            "snippets": snippets,
            "class_acts": {"a": [round(rng.gauss(1.0, 0.3), 3) for _ in range(32)],
                           "b": [round(rng.gauss(-0.2, 0.3), 3) for _ in range(32)]},
            "ablation_delta": round(rng.uniform(0.01, 2.0), 3),
        }
        if n["site"] in ("q", "k"):
            T = len(prompt)
            matrix = []
            for q in range(T):
                row = [rng.random() if kk <= q else 0.0 for kk in range(T)]
                tot = sum(row)
                matrix.append([round(v / tot, 4) for v in row])
            det["pattern"] = {"tokens": prompt, "matrix": matrix}
        details[n["id"]] = det
    curve = [{"step": s, "loss": round(0.05 + 2.0 * math.exp(-s / 300), 4), "n_open": int(4000 * math.exp(-s / 200)) + 20}
             for s in range(0, 2001, 100)]
    size = [{"target_loss": t, "n_nodes": int(20 * (0.15 / t) ** 0.8), "n_edges": int(25 * (0.15 / t) ** 1.1),
             "loss": t * 0.95} for t in (0.05, 0.1, 0.15, 0.3, 0.5)]
    return {
        "schema_version": 1,
        "model": {"run": "tiny", "n_layer": 4, "d_model": 128, "n_head": 8, "d_head": 16, "d_mlp": 512},
        "task": "single_double_quote",
        "forced": False,
        "metrics": {"full_loss": 0.08, "full_accuracy": 0.97, "circuit_loss": 0.142, "circuit_accuracy": 0.95,
                    "n_nodes": 20, "n_edges": 25, "edge_count": "weights", "target_loss": 0.15, "ablation": "mean",
                    "curve": curve,
                    "size_vs_target": size, "settings": {"k_coef": 1e-4, "lr": 3e-3, "steps": 2000}, "seed": 0},
        "nodes": nodes,
        "links": links,
        "details": details,
        "checks": {
            "necessity": {"value": 3.1, "threshold": 1.0, "verdict": "pass", "detail": "ablating the circuit wrecks the task"},
            "nonsense_ratio": {"value": 1.4, "threshold": 3.0, "verdict": "flag",
                               "detail": "a nonsense task prunes to a similar size <b>bold</b>"},
        },
    }


def bracket_circuit() -> dict:
    """A small forced circuit with no details at all."""
    nodes = [
        _node("hook_embed", 31, "embed", None, token="["),
        _node("blocks.0.hook_attn_in", 3, "attn_in", 0),
        _node("blocks.0.attn.hook_v", 10, "v", 0, head=1),
        _node("blocks.0.hook_attn_out", 3, "attn_out", 0),
        _node("blocks.2.hook_attn_in", 3, "attn_in", 2),
        _node("unembed", 40, "logit", None, token="]"),
        _node("unembed", 41, "logit", None, token="]]"),
    ]
    ids = [n["id"] for n in nodes]
    links = [{"source": ids[s], "target": ids[t], "weight": w}
             for s, t, w in [(0, 1, 0.7), (1, 2, 0.9), (2, 3, 0.8), (3, 5, -0.6)]]
    return {"schema_version": 1, "model": {"run": "tiny", "n_layer": 4, "d_model": 128, "n_head": 8},
            "task": "bracket_counting", "forced": True,
            "metrics": {"full_loss": 0.2, "full_accuracy": 0.9, "circuit_loss": 0.31, "circuit_accuracy": 0.81,
                        "n_nodes": 7, "n_edges": 4, "edge_count": "weights", "target_loss": 0.15,
                        "ablation": "zero", "curve": [],
                        "size_vs_target": [], "settings": {}, "seed": 1},
            "nodes": nodes, "links": links}


def make_run(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {"model": {"vocab_size": 2048, "n_layer": 4, "d_model": 128, "n_head": 8, "d_head": 16, "d_mlp": 512,
                        "afrac_sites": ["attn_in", "mlp_neuron"]},
              "train": {"steps": 1000, "lr": 0.01, "batch_size": 16},
              "data": {"src": HOSTILE_CONFIG}, "seed": 0}
    (path / "config.json").write_text(json.dumps(config))
    lines = []
    for step in range(10, 1001, 10):
        rec = {"step": step, "tokens": step * 16 * 128, "lr": 0.01 * min(1, step / 50) * (1 - step / 1000),
               "train_loss": 7.0 * math.exp(-step / 200) + 2.0 + 0.05 * math.sin(step),
               "nonzero_frac": max(0.01, 1 - step / 500 * 0.99), "density": max(0.01, 1 - step / 500 * 0.99),
               "tokens_per_s": 50000 + 1000 * math.cos(step)}
        if step % 100 == 0:
            rec["val_loss"] = 7.0 * math.exp(-step / 200) + 2.1
        lines.append(json.dumps(rec))
    lines.append('{"step": 1001, "train_loss": NaN}')
    lines.append("{not json")
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "tasks.json").write_text(json.dumps({"tasks": {
        "single_double_quote": {"accuracy": 0.97, "loss": 0.08},
        "bracket_counting": {"accuracy": 0.9, "loss": 0.2},
        "with_as": {"accuracy": 0.99, "loss": 0.03}}}))
    for data in (quote_circuit(), bracket_circuit()):
        d = path / "circuits" / data["task"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "circuit.json").write_text(json.dumps(data))
    return path
