"""benchmarks/recount_edges.py: a saved circuit's size recounted from its node ids and its run's weights."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from circuit_fixtures import save_run_dir, toy_tokenizer
from test_graph import KEEP, _patterned_model

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recount_edges.py"


def _script():
    spec = importlib.util.spec_from_file_location("recount_edges", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recount_from_node_ids_and_weights(tmp_path, capsys):
    run = save_run_dir(tmp_path / "run", _patterned_model(), toy_tokenizer())
    path = run / "circuits" / "t" / "circuit.json"
    path.parent.mkdir(parents=True)
    # a file written with the earlier count (6 weights + 4 residual links + 1 q.k pair) and no links
    path.write_text(json.dumps({"task": "t", "nodes": [{"id": n, "site": "x"} for n in KEEP], "links": [],
                                "metrics": {"n_edges": 11}}))
    assert _script().main([str(run)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["circuits"]
    assert row["from_weights"] == {"n_edges": 6, "n_residual_links": 4, "n_qk_pairs": 1}  # the hand count
    assert row["stored"]["n_edges"] == 11 and not row["stored_is_weights_count"]
    assert row["earlier_count"] == 11 and row["earlier_over_weights"] == round(11 / 6, 4)
    assert row["n_nodes"] == len(KEEP) and row["from_links"]["n_edges"] == 0


def test_recount_bad_path_exits_2(tmp_path, capsys):
    assert _script().main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
