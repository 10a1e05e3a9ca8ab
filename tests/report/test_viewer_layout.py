"""The circuit graph the viewer draws: folding, layout, annotations, comparison pages."""
from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_fixtures import quote_circuit

from sparsecircuits.cli import main
from sparsecircuits.errors import UserError
from sparsecircuits.report.graph import NODE_H, _pack, circuit_view
from sparsecircuits.report.html import write_compare, write_report
from sparsecircuits.report.synthetic import synthetic_circuit

DATA_RE = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def big_view():
    return circuit_view(synthetic_circuit(400, 3000, seed=3))[0]


def _boxes(view: dict, folded_tokens: bool) -> list[tuple[float, float, float, float, str]]:
    """(x1, y1, x2, y2, id) of what the page draws first; with folded_tokens, the token column instead."""
    out = []
    for n in view["nodes"]:
        is_folded_token = n["site"] in ("embed", "logit") and view["folded"][n["site"]]
        if is_folded_token == folded_tokens:
            out.append((n["x"] - n["w"] / 2, n["y"] - NODE_H / 2, n["x"] + n["w"] / 2, n["y"] + NODE_H / 2, n["id"]))
    if not folded_tokens:
        out += [(g["x"] - g["w"] / 2, g["y"] - NODE_H / 2, g["x"] + g["w"] / 2, g["y"] + NODE_H / 2, g["id"])
                for g in view["groups"]]
    return out


def _overlaps(boxes) -> list[tuple[str, str]]:
    boxes = sorted(boxes)
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b[0] >= a[2]:
                break
            if b[1] < a[3] and a[1] < b[3]:
                bad.append((a[4], b[4]))
    return bad


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=40), st.floats(1, 50))
def test_pack_keeps_order_and_gaps_and_is_least_squares(targets, gap):
    ys = _pack(targets, [gap] * (len(targets) - 1))
    assert all(b - a >= gap - 1e-6 for a, b in zip(ys, ys[1:]))
    if all(b - a >= gap for a, b in zip(targets, targets[1:])):
        assert ys == pytest.approx(targets)  # already feasible: left alone
    # The optimum's mean residual is zero (a common shift would otherwise lower the cost).
    assert sum(y - t for y, t in zip(ys, targets)) == pytest.approx(0, abs=1e-6 * max(1, max(map(abs, targets))))


def test_inputs_fold_per_read_site_and_every_io_link_has_one_group(big_view):
    v = big_view
    assert v["folded"]["embed"] is True
    nodes, links = v["nodes"], v["links"]
    io = [li for li, lk in enumerate(links) if lk[3] in ("embed", "logit") and v["folded"][lk[3]]]
    assert io
    owner = [li for g in v["groups"] for li in g["links"]]
    assert sorted(owner) == sorted(io) and len(owner) == len(set(owner))
    for g in v["groups"]:
        end = 1 if g["side"] == "embed" else 0
        assert {nodes[links[li][end]]["hook"] for li in g["links"]} == {g["hook"]}
        assert [a for a, _w in g["edges"]] == list(dict.fromkeys(links[li][end] for li in g["links"]))
        weights = [abs(links[li][2]) for li in g["links"]]
        assert weights == sorted(weights, reverse=True) and abs(g["weight"]) == weights[0]
    n_layer = 1 + max(n["layer"] for n in nodes if n["layer"] is not None)
    assert sum(1 for g in v["groups"] if g["side"] == "embed") <= 2 * n_layer


def test_layout_has_columns_head_boxes_and_no_overlap(big_view):
    v = big_view
    assert _overlaps(_boxes(v, folded_tokens=False)) == []
    assert _overlaps(_boxes(v, folded_tokens=True)) == []
    by_key: dict[tuple, set] = {}
    for n in v["nodes"]:
        if n["site"] not in ("embed", "logit"):
            site = "qkv" if n["site"] in ("q", "k", "v") else n["site"]
            by_key.setdefault((n["layer"], site), set()).add(n["x"])
    assert all(len(xs) == 1 for xs in by_key.values())  # one column per (layer, site)
    xs = {k: next(iter(x)) for k, x in by_key.items()}
    flow = ["attn_in", "qkv", "attn_out", "mlp_in", "neuron", "mlp_out"]
    for (layer, site), x in xs.items():
        for (layer2, site2), x2 in xs.items():
            if (layer, flow.index(site)) < (layer2, flow.index(site2)):
                assert x < x2
    # Each head's q/k/v channels sit together, inside their own box, boxes apart.
    heads = v["layout"]["heads"]
    for n in v["nodes"]:
        if n["site"] in ("q", "k", "v"):
            inside = [h for h in heads if h["x"] == n["x"] and h["y0"] < n["y"] < h["y1"]]
            assert [h["label"] for h in inside] == [f"L{n['layer']} head {n['head']}"]
    for a in heads:
        for b in heads:
            if a is not b and a["x"] == b["x"]:
                assert a["y1"] <= b["y0"] or b["y1"] <= a["y0"]


def _crossings(view: dict, order_y: dict[int, float]) -> int:
    """Crossings between links of adjacent columns, with nodes at the given heights."""
    nodes = view["nodes"]
    cols = sorted({n["x"] for n in nodes})
    nxt = {a: b for a, b in zip(cols, cols[1:])}
    segs: dict[float, list[tuple[float, float]]] = {}
    for s, t, _w, _k in view["links"]:
        if nxt.get(nodes[s]["x"]) == nodes[t]["x"]:
            segs.setdefault(nodes[s]["x"], []).append((order_y[s], order_y[t]))
    total = 0
    for lst in segs.values():
        for i, (a1, b1) in enumerate(lst):
            for a2, b2 in lst[i + 1:]:
                total += (a1 - a2) * (b1 - b2) < 0
    return total


def test_layered_order_cuts_crossings():
    v = circuit_view(synthetic_circuit(250, 1200, seed=5))[0]
    laid = {i: n["y"] for i, n in enumerate(v["nodes"])}
    rng = random.Random(0)
    shuffled = {}
    by_x: dict[float, list[int]] = {}
    for i, n in enumerate(v["nodes"]):
        by_x.setdefault(n["x"], []).append(i)
    for members in by_x.values():
        ys = sorted(laid[i] for i in members)
        rng.shuffle(ys)
        shuffled.update(zip(members, ys))
    assert _crossings(v, laid) < 0.6 * _crossings(v, shuffled)


def test_layout_is_deterministic():
    c = synthetic_circuit(150, 700, seed=9)
    a, b = circuit_view(c)[0], circuit_view(json.loads(json.dumps(c)))[0]
    assert [(n["x"], n["y"]) for n in a["nodes"]] == [(n["x"], n["y"]) for n in b["nodes"]]


def test_report_embeds_annotations_next_to_circuit_json(run_dir):
    notes = {"format": "sparsecircuits-annotations", "version": 1,
             "supernodes": [{"name": "<b>quote</b> reader", "note": "</script><script>alert(1)</script>",
                             "members": ["blocks.1.hook_attn_in:40", "blocks.1.hook_attn_in:9"]}]}
    (run_dir / "circuits" / "single_double_quote" / "annotations.json").write_text(json.dumps(notes))
    (run_dir / "circuits" / "bracket_counting" / "annotations.json").write_text("{ broken")
    index = write_report(run_dir)
    page = (run_dir / "report" / "circuit-single_double_quote.html").read_text()
    blocks = dict(DATA_RE.findall(page))
    assert json.loads(blocks["circuit-data"])["annotations"] == notes
    assert "<script>alert" not in page and "<b>quote" not in page
    assert "bracket_counting/annotations.json" in index.read_text()  # reported, not fatal


def test_compare_page_marks_shared_nodes(tmp_path):
    a, b = quote_circuit(), quote_circuit()
    b["nodes"] = b["nodes"][:12] + [dict(b["nodes"][12], id="blocks.1.attn.hook_k:99", index=99)]
    keep = {n["id"] for n in b["nodes"]}
    b["links"] = [lk for lk in b["links"] if lk["source"] in keep and lk["target"] in keep]
    for name, c in (("seed0", a), ("seed1", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "circuit.json").write_text(json.dumps(c))
    out = write_compare(tmp_path / "seed0" / "circuit.json", tmp_path / "seed1" / "circuit.json", tmp_path / "cmp.html")
    page = out.read_text()
    blocks = {k: json.loads(v) for k, v in DATA_RE.findall(page)}
    assert set(blocks) == {"circuit-a", "circuit-b"}
    ids_a = [n["id"] for n in blocks["circuit-a"]["nodes"]]
    ids_b = [n["id"] for n in blocks["circuit-b"]["nodes"]]
    shared = set(ids_a) & set(ids_b)
    assert len(shared) == 12
    assert {ids_a[i] for i in blocks["circuit-a"]["shared"]} == shared == {ids_b[i] for i in blocks["circuit-b"]["shared"]}
    assert "seed0" in page and "seed1" in page and page.count('class="viewer compact"') == 2
    assert "<img" not in page and "<script>window" not in page


def test_cli_report_compare(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(quote_circuit()))
    out = tmp_path / "pair.html"
    assert main(["report", "--compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file()
    assert main(["report", "--compare", str(tmp_path / "a.json"), str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err
    assert main(["report"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_compare_rejects_a_non_circuit(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a circuit file"):
        write_compare(tmp_path / "x.json", tmp_path / "x.json", tmp_path / "o.html")
