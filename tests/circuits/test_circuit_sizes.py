"""Circuit size the paper's way: counts by link kind, old files, and the geometric mean over tasks."""
from __future__ import annotations

import json
import re

import pytest

from circuit_fixtures import toy_examples
from sparsecircuits.circuit_sizes import (
    counts_from_kinds,
    exclusion_reason,
    geometric_mean,
    internal_nodes,
    jaccard,
    link_counts,
    link_kind,
    met_on_heldout,
    size_summary,
    upgrade_circuit_json,
)
from sparsecircuits.circuits import Circuit, prune
from sparsecircuits.report.html import write_report

MODEL = {"run": "r", "n_layer": 2, "d_model": 4, "n_head": 1, "d_head": 2, "d_mlp": 3, "vocab_size": 8}


def _node(nid: str, site: str) -> dict:
    layer = -1 if site == "embed" else (2 if site == "logit" else int(nid.split(".")[1]))
    return {"id": nid, "hook": nid.split(":")[0], "index": int(nid.split(":")[1]), "layer": layer, "site": site,
            "head": None, "token": None, "mask": None}


def old_circuit_json() -> dict:
    """A file as written before residual links and q.k pairs were counted apart: n_edges = every internal link."""
    nodes = [_node("embed:5", "embed"), _node("blocks.0.hook_attn_in:1", "attn_in"),
             _node("blocks.0.attn.hook_q:0", "q"), _node("blocks.0.attn.hook_k:0", "k"),
             _node("blocks.0.attn.hook_v:1", "v"), _node("blocks.0.hook_attn_out:2", "attn_out"),
             _node("blocks.1.hook_mlp_in:2", "mlp_in"), _node("blocks.1.mlp.hook_post:0", "neuron"),
             _node("blocks.1.hook_mlp_out:3", "mlp_out"), _node("logit:7", "logit")]
    pairs = [("embed:5", "blocks.0.hook_attn_in:1"),  # embed
             ("blocks.0.hook_attn_in:1", "blocks.0.attn.hook_q:0"),  # weight
             ("blocks.0.hook_attn_in:1", "blocks.0.attn.hook_k:0"),  # weight
             ("blocks.0.hook_attn_in:1", "blocks.0.attn.hook_v:1"),  # weight
             ("blocks.0.attn.hook_q:0", "blocks.0.attn.hook_k:0"),  # q.k pair
             ("blocks.0.attn.hook_v:1", "blocks.0.hook_attn_out:2"),  # weight
             ("blocks.0.hook_attn_out:2", "blocks.1.hook_mlp_in:2"),  # residual
             ("blocks.1.hook_mlp_in:2", "blocks.1.mlp.hook_post:0"),  # weight
             ("blocks.1.mlp.hook_post:0", "blocks.1.hook_mlp_out:3"),  # weight
             ("blocks.1.hook_mlp_out:3", "logit:7")]  # logit
    links = [{"source": s, "target": t, "weight": 0.5} for s, t in pairs]
    metrics = {"n_nodes": 8, "n_edges": 8, "n_edges_with_io": 10, "circuit_loss": 0.1, "target_loss": 0.15,
               "size_vs_target": [{"target_loss": 0.15, "n_nodes": 8, "n_edges": 8, "loss": 0.1, "met": True}]}
    return {"schema_version": 1, "model": MODEL, "task": "t", "forced": False, "metrics": metrics,
            "nodes": nodes, "links": links}


def test_link_kinds():
    assert link_kind("attn_in", "q") == link_kind("v", "attn_out") == link_kind("neuron", "mlp_out") == "weight"
    assert link_kind("mlp_out", "attn_in") == link_kind("attn_out", "mlp_in") == "residual"
    assert link_kind("q", "k") == "qk"
    assert link_kind("embed", "mlp_in") == "embed" and link_kind("attn_out", "logit") == "logit"
    # a read to a read, a write to a write, k to q: none is a link the graph draws
    assert link_kind("attn_in", "mlp_in") == link_kind("mlp_out", "attn_out") == link_kind("k", "q") == "other"
    assert link_kind(None, None) == "other"
    # kinds that are not counted ("other", or one this version does not know) change no count
    assert counts_from_kinds(["weight", "qk", "other", "weight", "future", "embed"]) == {
        "n_edges": 2, "n_residual_links": 0, "n_qk_pairs": 1, "n_io_edges": 1, "n_edges_with_io": 3}


def test_old_file_is_recomputed_from_its_links_and_marked():
    data = old_circuit_json()
    assert link_counts(data["nodes"], data["links"]) == {"n_edges": 6, "n_residual_links": 1, "n_qk_pairs": 1,
                                                         "n_io_edges": 2, "n_edges_with_io": 8}
    c = Circuit.from_json(data)
    m = c.metrics
    assert m["n_edges"] == c.n_edges == 6 and m["n_edges_old"] == 8 and m["edge_count"] == "recomputed"
    assert m["n_residual_links"] == 1 and m["n_qk_pairs"] == 1 and m["n_io_edges"] == 2
    assert m["n_edges_with_io"] == 8
    # the size-vs-target rows were counted from the model: kept, but not passed off as the new count
    assert m["size_vs_target"][0]["n_edges"] is None and m["size_vs_target"][0]["n_edges_old"] == 8
    assert len(c.links) == 10  # every link is still in the graph
    assert data["metrics"]["n_edges"] == 8  # the input is not changed
    # saved again and reloaded: the same numbers, still marked as recomputed
    again = Circuit.from_json(json.loads(json.dumps(c.to_json())))
    assert again.metrics["n_edges"] == 6 and again.metrics["edge_count"] == "recomputed"
    assert upgrade_circuit_json(c.to_json())["metrics"] is not None


def test_pruned_circuit_counts_weights_only_and_holds_out_each_size(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="zero", steps=60, lr=3e-2, k_coefs=[1e-2], progress=False,
              threads=1)
    m = c.metrics
    assert m["edge_count"] == "weights"
    assert (m["n_edges"], m["n_residual_links"], m["n_qk_pairs"], m["n_io_edges"]) == (2, 0, 0, 3)
    assert m["n_edges_with_io"] == 5
    assert {lk["kind"] for lk in c.links} == {"weight", "embed", "logit"}
    for row in m["size_vs_target"]:
        assert row["met_heldout"] == (row["test_loss"] <= row["target_loss"])
        assert row["met_heldout"]  # the 3-node circuit is exact on every item
    assert Circuit.from_json(json.loads(json.dumps(c.to_json()))).metrics["edge_count"] == "weights"


def test_upgrading_an_old_file_leaves_its_rows_alone_and_takes_rows_without_a_count():
    data = old_circuit_json()
    data["metrics"]["size_vs_target"].append({"target_loss": 0.3, "n_nodes": 4})  # a row with no edge count
    before = json.dumps(data, sort_keys=True)
    upgraded = upgrade_circuit_json(data)
    assert json.dumps(data, sort_keys=True) == before  # the rows of the input are not moved either
    rows = upgraded["metrics"]["size_vs_target"]
    assert rows[0]["n_edges"] is None and rows[0]["n_edges_old"] == 8
    assert rows[1] == {"target_loss": 0.3, "n_nodes": 4}


def test_held_out_verdict_and_exclusion_reasons_word_for_word():
    met = {"circuit_loss": 0.1, "target_loss": 0.15, "n_edges": 7}
    assert met_on_heldout(met) is True and met_on_heldout({**met, "circuit_loss": 0.15}) is True
    assert met_on_heldout({**met, "circuit_loss": 0.16}) is False
    for partial in ({"target_loss": 0.15}, {"circuit_loss": 0.1}, {"circuit_loss": True, "target_loss": 0.15},
                    {"circuit_loss": float("nan"), "target_loss": 0.15}, {"circuit_loss": "0.1", "target_loss": 0.15}):
        assert met_on_heldout(partial) is None and exclusion_reason(partial) == "no held-out loss"
    assert exclusion_reason(met) is None  # not forced unless told
    assert exclusion_reason(met, forced=True) == "forced: the model had not learned the task"
    assert exclusion_reason({**met, "n_edges": None}) == "no edge count"
    assert exclusion_reason({**met, "circuit_loss": 0.2}) == "missed target 0.15 on held-out items (0.200)"


def test_internal_nodes_are_the_circuits_own_nodes_in_file_order():
    """What stability, the timeline and the learned-vs-attribution overlap compare: every
    node with an id except the embedding and logit ends, in the file's order."""
    data = old_circuit_json()
    ids = internal_nodes(data)
    assert ids == [n["id"] for n in data["nodes"][1:-1]] and len(ids) == 8
    odd = {"nodes": [{"id": 3, "site": "q"}, {"site": "k"}, "blocks.0.attn.hook_v:1", {"id": "logit:1", "site": "logit"},
                     {"id": "embed:2", "site": "embed"}, {"id": "x", "site": None}]}
    assert internal_nodes(odd) == ["3", "x"]  # ids as strings; entries without one skipped
    assert internal_nodes({"nodes": {"id": "a"}}) == [] and internal_nodes({}) == []
    assert jaccard(ids, ids[:4]) == 0.5 and jaccard(ids, []) == 0.0 and jaccard([], []) is None


def test_geometric_mean_skips_circuits_that_missed_the_target_on_held_out_items():
    rows = [
        {"task": "a", "n_edges": 4, "n_nodes": 3, "circuit_loss": 0.10, "target_loss": 0.15, "forced": False},
        {"task": "b", "n_edges": 9, "n_nodes": 5, "circuit_loss": 0.15, "target_loss": 0.15, "forced": False},
        {"task": "c", "n_edges": 3000, "n_nodes": 300, "circuit_loss": 0.68, "target_loss": 0.15, "forced": True},
        {"task": "d", "n_edges": 500, "n_nodes": 90, "circuit_loss": 0.178, "target_loss": 0.15, "forced": False},
        {"task": "e", "n_edges": 1, "n_nodes": 1, "circuit_loss": 0.05, "target_loss": 0.15, "forced": True},
    ]
    s = size_summary(rows)
    assert s["geomean_edges"] == pytest.approx(6.0)  # sqrt(4 * 9): c, d and e are not averaged in
    assert s["geomean_nodes"] == pytest.approx(15 ** 0.5)
    assert s["counted"] == ["a", "b"]
    assert [x["task"] for x in s["excluded"]] == ["c", "d", "e"]
    assert "missed target 0.15" in s["excluded"][1]["reason"] and "forced" in s["excluded"][2]["reason"]
    assert exclusion_reason({"n_edges": 3}) == "no held-out loss"
    assert size_summary(rows[2:4])["geomean_edges"] is None
    assert geometric_mean([0, 4]) == pytest.approx(2.0) and geometric_mean([None]) is None


def test_report_shows_recomputed_counts_and_lists_failed_circuits_beside_the_mean(tmp_path):
    run = tmp_path / "run"
    (run / "circuits" / "t").mkdir(parents=True)
    (run / "circuits" / "bad").mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}, "train": {}}))
    (run / "circuits" / "t" / "circuit.json").write_text(json.dumps(old_circuit_json()))
    bad = old_circuit_json()
    bad["task"], bad["forced"] = "bad", True
    bad["metrics"]["circuit_loss"] = 0.7
    (run / "circuits" / "bad" / "circuit.json").write_text(json.dumps(bad))
    text = write_report(run).read_text()
    row = re.search(r'<tr><td><a href="circuit-t.html">.*?</tr>', text).group(0)
    assert ">6<" in row and ">8<" in row  # 8 nodes, 6 edges (the file said 8 edges)
    note = re.search(r"Geometric mean circuit size.*?</p>", text).group(0)
    assert "over the 1 circuit(s)" in note and "<b>6.0</b> edges" in note
    assert "Not in the mean: bad (6 edges, missed target 0.15" in note
    page = (run / "report" / "circuit-t.html").read_text()
    assert "1 residual" in page and "1 q.k" in page and "2 embed/logit" in page


def test_frontier_counts_a_size_only_where_it_met_the_target_on_held_out_items(tmp_path):
    from types import SimpleNamespace

    from sparsecircuits.analysis.frontier import prune_sizes

    settings = {"steps": 5, "k_coefs": [0.01], "n_train": 8, "n_test": 8}
    data = old_circuit_json()
    data["metrics"].update(edge_count="weights", n_edges=6, size_vs_target=[
        {"target_loss": 0.15, "n_nodes": 8, "n_edges": 6, "loss": 0.1, "met": True, "test_loss": 0.12,
         "met_heldout": True},
        {"target_loss": 0.1, "n_nodes": 8, "n_edges": 6, "loss": 0.1, "met": True, "test_loss": 0.12,
         "met_heldout": False}])
    data["metrics"]["settings"] = {**settings, "ablation": "mean", "target_loss": 0.15}
    path = tmp_path / "circuits" / "t" / "circuit.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    run = SimpleNamespace(path=tmp_path)
    out = prune_sizes(run, "t", [0.1, 0.15], settings, force=False, progress=False)
    assert out["cached"]
    assert out["targets"]["0.15"] == {"nodes": 8, "edges": 6, "loss": 0.1, "test_loss": 0.12, "met": True,
                                      "met_train": True}
    assert out["targets"]["0.1"]["met"] is False and out["targets"]["0.1"]["edges"] is None
    # a file counted the old way is not reused: its sizes are not the paper's edges
    data["metrics"]["edge_count"] = "recomputed"
    path.write_text(json.dumps(data))
    from sparsecircuits.analysis.frontier import _cached_circuit

    assert _cached_circuit(path, "t", {"target_loss": 0.15, **settings, "ablation": "mean"}, [0.1, 0.15]) is None
