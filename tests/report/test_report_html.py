"""The HTML report: what it lists, what it draws, and that hostile text stays text."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path

import pytest
from report_fixtures import HOSTILE_CONFIG, IMG_TOKEN, SCRIPT_TOKEN, quote_circuit

from sparsecircuits.cli import main
from sparsecircuits.errors import UserError
from sparsecircuits.report import frame
from sparsecircuits.report.graph import normalize_circuit
from sparsecircuits.report.html import write_report
from sparsecircuits.report.values import json_for_script

DATA_RE = re.compile(r'<script type="application/json" id="circuit-data">(.*?)</script>', re.S)


def _pages(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((run_dir / "report").glob("*.html"))}


def _embedded(page: str) -> dict:
    m = DATA_RE.search(page)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_writes_index_and_one_page_per_circuit(run_dir):
    index = write_report(run_dir)
    assert index == run_dir / "report" / "index.html"
    pages = _pages(run_dir)
    assert set(pages) == {"index.html", "circuit-single_double_quote.html", "circuit-bracket_counting.html"}
    text = pages["index.html"]
    assert 'href="circuit-single_double_quote.html"' in text
    assert 'href="circuit-bracket_counting.html"' in text
    assert ">with_as<" in text  # a task with a full-model eval but no circuit still has a row
    assert not list((run_dir / "report").glob(".*"))  # no temp files left behind


def test_index_has_loss_curve_with_train_and_val(run_dir):
    text = write_report(run_dir).read_text()
    m = re.search(r'<svg class="chart loss-curve".*?</svg>', text, re.S)
    assert m, "no loss-curve svg"
    paths = re.findall(r'<path class="series" d="M[^"]+"', m.group(0))
    assert len(paths) == 2  # train and val
    assert "nonzero-curve" in text
    assert "skipped 1 unreadable line" in text  # the malformed metrics line is reported


def test_task_table_numbers_and_flags(run_dir):
    text = write_report(run_dir).read_text()
    row = re.search(r"<tr><td><a href=\"circuit-bracket_counting.html\">.*?</tr>", text).group(0)
    assert ">forced<" in row and "81.0%" in row and ">4<" in row
    row = re.search(r"<tr><td><a href=\"circuit-single_double_quote.html\">.*?</tr>", text).group(0)
    assert "1 flag" in row and ">25<" in row and "0.142" in row
    # the forced bracket circuit missed its target on held-out items: listed beside the mean, not in it
    assert "<b>25.0</b> edges" in text and "Not in the mean: bracket_counting (4 edges, missed target" in text


def test_hostile_strings_never_reach_html_as_markup(run_dir):
    write_report(run_dir)
    for name, page in _pages(run_dir).items():
        assert "<img" not in page, name
        assert "<script>alert" not in page and "<script>window" not in page, name
        assert "<b>bold" not in page, name
    index = _pages(run_dir)["index.html"]
    assert "<script" not in index  # the index needs no script at all
    assert html.escape(HOSTILE_CONFIG) in index  # ... but shows the config value as text
    circuit = _pages(run_dir)["circuit-single_double_quote.html"]
    assert circuit.count("<script") == 2  # the data block and our own script
    assert "&lt;b&gt;bold&lt;/b&gt;" in circuit


def test_embedded_json_round_trips_hostile_tokens(run_dir):
    write_report(run_dir)
    page = _pages(run_dir)["circuit-single_double_quote.html"]
    block = DATA_RE.search(page).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    data = _embedded(page)
    tokens = {n["token"] for n in data["nodes"] if n["token"] is not None}
    assert {SCRIPT_TOKEN, IMG_TOKEN} <= tokens
    node = next(n for n in data["nodes"] if n["id"] == "hook_embed:900")
    assert len(node["details"]["snippets"]) == 4
    assert len(data["nodes"]) == 20 and len(data["links"]) == 25


def test_json_for_script_escapes_everything_that_could_end_the_block():
    text = json_for_script({"t": "</script><!--\u2028\u2029&", "n": float("nan"), "i": [float("inf")]})
    assert "</" not in text and "<!--" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == {"t": "</script><!--\u2028\u2029&", "n": None, "i": [None]}


def test_hostile_task_directory_name(run_dir):
    evil = run_dir / "circuits" / '"><img src=x onerror=alert(1)>'
    evil.mkdir()
    c = quote_circuit()
    c["task"] = "<script>alert(1)</script>"
    (evil / "circuit.json").write_text(json.dumps(c))
    write_report(run_dir)
    pages = _pages(run_dir)
    assert all(re.fullmatch(r"(index|circuit-[A-Za-z0-9_.-]+)\.html", n) for n in pages)
    assert len(pages) == 4
    for page in pages.values():
        assert "<img" not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["index.html"]


def test_graph_has_every_node_and_edge_in_flow_order(run_dir):
    write_report(run_dir)
    page = _pages(run_dir)["circuit-single_double_quote.html"]
    data = _embedded(page)
    assert len(data["nodes"]) == 20 and len(data["links"]) == 25
    assert sum(1 for lk in data["links"] if lk[2] < 0) == 7
    assert data["groups"] == [] and data["folded"] == {"embed": False, "logit": False}  # 4 tokens: nothing to fold
    x = {}
    for n in data["nodes"]:
        x.setdefault(n["site"], []).append(n["x"])
    flow = ["embed", "mlp_in", "neuron", "mlp_out", "attn_in", "q", "attn_out", "logit"]
    assert [min(x[s]) for s in flow] == sorted(min(x[s]) for s in flow)
    assert min(x["q"]) == min(x["k"]) == min(x["v"])  # q, k and v share the heads column
    assert sorted(h["label"] for h in data["layout"]["heads"]) == ["L1 head 3", "L1 head 5"]
    kinds = {(data["nodes"][s]["site"], data["nodes"][t]["site"]): k for s, t, _w, k in data["links"]}
    assert kinds[("mlp_out", "attn_in")] == "residual" and kinds[("q", "k")] == "qk"
    assert kinds[("embed", "mlp_in")] == "embed" and kinds[("neuron", "logit")] == "logit"


def test_report_card_and_size_plot(run_dir):
    write_report(run_dir)
    page = _pages(run_dir)["circuit-single_double_quote.html"]
    assert "Faithfulness report card" in page
    assert re.search(r"<code>nonsense_ratio</code>.*?badge flag", page, re.S)
    assert re.search(r"<code>necessity</code>.*?badge pass", page, re.S)
    svg = re.search(r'<svg class="chart size-vs-target".*?</svg>', page, re.S).group(0)
    assert svg.count('class="marker"') == 10  # five targets, edges and nodes
    bracket = _pages(run_dir)["circuit-bracket_counting.html"]
    assert "Faithfulness report card" not in bracket and "size-vs-target" not in bracket
    assert len(_embedded(bracket)["nodes"]) == 7


def test_csp_allows_exactly_the_inline_script(run_dir):
    write_report(run_dir)
    page = _pages(run_dir)["circuit-single_double_quote.html"]
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert f"script-src &#x27;sha256-{digest}&#x27;" in csp
    assert "unsafe-eval" not in csp and "script-src 'unsafe-inline'" not in csp


def test_script_never_parses_data_as_html():
    js = (Path(frame.__file__).parent / "static" / "report.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    # The whole inlined script, graph library included: nothing the CSP would have to allow.
    whole = frame.viewer_script()
    for sink in ("eval(", "new Function", "</script", "<!--", "importScripts", "XMLHttpRequest", "fetch("):
        assert sink not in whole, sink


def test_vendored_library_matches_its_pin():
    """The inlined graph library is the file the pinned npm package ships (web/vendor.mjs)."""
    vendor = Path(frame.__file__).parent / "static" / "vendor"
    manifest = json.loads((vendor / "manifest.json").read_text())
    lock = json.loads((Path(__file__).parents[2] / "web" / "package-lock.json").read_text())
    for name, entry in manifest.items():
        code = (vendor / entry["file"]).read_bytes()
        assert hashlib.sha256(code).hexdigest() == entry["sha256"], name
        assert lock["packages"][f"node_modules/{name}"]["version"] == entry["version"], name
        assert "Permission is hereby granted" in (vendor / entry["license"]).read_text()
    assert frame.VENDOR_SCRIPTS == tuple(f"vendor/{e['file']}" for e in manifest.values())


def test_broken_inputs_are_reported_not_fatal(run_dir):
    write_report(run_dir)
    (run_dir / "circuits" / "bracket_counting" / "circuit.json").write_text("{ not json")
    c = quote_circuit()
    c["metrics"]["circuit_loss"] = float("nan")
    c["links"].append({"source": "nope:1", "target": c["nodes"][0]["id"], "weight": 1.0})
    c["details"]["hook_embed:7"]["snippets"][0]["acts"] = ["x", None]  # junk values
    (run_dir / "circuits" / "single_double_quote" / "circuit.json").write_text(json.dumps(c))
    write_report(run_dir)
    pages = _pages(run_dir)
    assert set(pages) == {"index.html", "circuit-single_double_quote.html"}  # stale page removed
    assert "circuits/bracket_counting/circuit.json" in pages["index.html"]
    assert "unreadable" in pages["index.html"]
    page = pages["circuit-single_double_quote.html"]
    assert "1 link(s) with unknown endpoints were skipped" in page
    data = _embedded(page)
    snip = next(n for n in data["nodes"] if n["id"] == "hook_embed:7")["details"]["snippets"][0]
    assert len(snip["acts"]) == len(snip["tokens"]) and all(isinstance(a, float) for a in snip["acts"])


def test_not_a_run_dir(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        write_report(tmp_path)
    with pytest.raises(UserError, match="not a run directory"):
        write_report(tmp_path / "missing")


def test_cli_report(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(run_dir / "report" / "index.html")
    assert "skipped 1 unreadable line" in out.err


def test_cli_report_not_a_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no config.json" in err and "Traceback" not in err


def test_normalize_fills_layer_and_head_when_missing():
    data = {"model": {"d_head": 16},
            "nodes": [{"id": "blocks.2.attn.hook_q:37", "site": "q"}, {"id": "blocks.2.attn.hook_q:37", "site": "q"},
                      {"id": "unembed:5", "site": "logit", "token": " is"}],
            "links": [{"source": "blocks.2.attn.hook_q:37", "target": "unembed:5", "weight": float("nan")}]}
    nodes, links, problems = normalize_circuit(data)
    q = nodes[0]
    assert (q["layer"], q["index"], q["head"], q["hook"]) == (2, 37, 2, "blocks.2.attn.hook_q")
    assert q["label"] == "q37"
    assert nodes[1]["label"] == "\u2423is"
    assert links == [[0, 1, 0.0, "logit"]]
    assert problems == ["duplicate node id skipped: blocks.2.attn.hook_q:37"]


def test_index_shows_the_models_own_measures_from_eval_json(run_dir):
    measures = {"residual_kurtosis": 7.25, "dead_neuron_frac": 0.125, "dead_attn_channel_frac": 0.5,
                "activation_density": {"attn_in": 0.25, "mlp_neuron": 0.2}}
    assert "own measures" not in _pages(write_report(run_dir).parent.parent)["index.html"]
    (run_dir / "eval.json").write_text(json.dumps({"val_loss": 4.0, "measures": measures}))
    index = _pages(write_report(run_dir).parent.parent)["index.html"]
    assert "own measures" in index and "7.25" in index and "12.5%" in index and "50.0%" in index
    assert "mlp_neuron" in index and "0.2" in index


def test_an_empty_circuit_gets_a_note_instead_of_empty_charts():
    from sparsecircuits.report.pages import EMPTY_NOTE, _circuit_charts

    rows = [{"target_loss": t, "n_nodes": 0, "n_edges": 0} for t in (0.05, 0.15, 0.3)]
    empty = _circuit_charts({"size_vs_target": rows, "curve": [], "settings": {"empty_meets_all_targets": True}})
    assert "empty-circuit" in empty and "direct path" in EMPTY_NOTE and "<svg" not in empty
    swept = _circuit_charts({"size_vs_target": [{"target_loss": 0.15, "n_nodes": 3, "n_edges": 2}], "settings": {}})
    assert "size-vs-target" in swept and "empty-circuit" not in swept
