"""The bridge commands end to end on tiny runs: train, resume, eval, steer, and bad input."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from bridge_fixtures import FAST
from safetensors.torch import load_file

from sparsecircuits.bridges.model import load_bridged
from sparsecircuits.cli import main
from sparsecircuits.run import load_run


def test_bridged_run_is_an_ordinary_run_plus_bridges(bridged_run, dense_run):
    run = load_run(bridged_run)  # strict load: model.safetensors holds the sparse model alone
    assert not any(k.startswith("bridges.") for k in load_file(str(bridged_run / "model.safetensors")))
    assert run.model.cfg.n_layer == 2
    meta = json.loads((bridged_run / "bridge.json").read_text())
    assert meta["dense_run"] == str(dense_run.resolve())
    br = load_bridged(bridged_run)
    assert br.bridges.locations[-1] == "blocks.1.hook_resid_mid"
    assert all(not p.requires_grad for p in br.dense.model.parameters())
    rows = [json.loads(ln) for ln in (bridged_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("lm_loss", "nmse_encoder", "nmse_decoder", "kl_dense_to_sparse", "kl_sparse_to_dense"):
        assert rows[-1][key] > 0, key
    assert abs(rows[-1]["nonzero_frac"] - 0.25) < 1e-9  # the sparse model only; bridges stay dense


def test_bridges_learn_at_the_dense_rate_and_the_terms_are_weighted(bridged_run):
    """The sparse weights get the sharkfin rate (1/sqrt(density) = 2x at density 1/4), the
    dense bridges the plain schedule; the recorded terms are unweighted, the spec says how."""
    rows = [json.loads(ln) for ln in (bridged_run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["density"] == 0.25 and last["lr"] == pytest.approx(2 * last["bridge_lr"], rel=1e-12)
    meta = json.loads((bridged_run / "bridge.json").read_text())
    assert meta["nmse_coef"] == meta["kl_coef"] == 0.02 and meta["lr_scale"] == 1.0


def test_resume_ends_as_an_uninterrupted_run(bridged_run, dense_run, tmp_path):
    out = tmp_path / "run"
    assert main(["bridge", "train", str(dense_run), "--out", str(out), "--preset", "cpu-tiny", *FAST,
                 "--stop-after", "2"]) == 0
    assert not (out / "model.safetensors").exists()
    assert main(["bridge", "train", "--resume", str(out), "--no-progress"]) == 0
    for name in ("model.safetensors", "bridges.safetensors"):
        a, b = load_file(str(out / name)), load_file(str(bridged_run / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name


def test_drawn_hybrid_locations_are_recorded_and_resume_exactly(bridged_run, dense_run, tmp_path):
    """--hybrid-locations 1: a run that differs from the all-locations one, whose draws
    depend on the step alone, so a stopped and resumed run ends where an unbroken one does."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = [str(dense_run), "--preset", "cpu-tiny", *FAST, "--hybrid-locations", "1"]
    assert main(["bridge", "train", *args, "--out", str(whole)]) == 0
    assert json.loads((whole / "bridge.json").read_text())["hybrid_locations"] == 1
    assert main(["bridge", "train", *args, "--out", str(parts), "--stop-after", "2"]) == 0
    assert main(["bridge", "train", "--resume", str(parts), "--no-progress"]) == 0
    for name in ("model.safetensors", "bridges.safetensors"):
        a, b = load_file(str(parts / name)), load_file(str(whole / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, full = load_file(str(whole / "bridges.safetensors")), load_file(str(bridged_run / "bridges.safetensors"))
    assert any(not torch.equal(a[k], full[k]) for k in a)  # fewer hybrid terms: other gradients


def test_eval_writes_every_location(bridged_run, capsys):
    assert main(["bridge", "eval", str(bridged_run), "--batches", "1"]) == 0
    table = capsys.readouterr().out
    assert "blocks.1.hook_resid_mid" in table and "KL(dense || sparse)" in table
    result = json.loads((bridged_run / "bridge_eval.json").read_text())
    assert [r["location"] for r in result["locations"]] == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"]
    for r in result["locations"]:
        assert r["nmse_encoder"] > 0 and r["kl_sparse_to_dense"] > 0


def test_steer_prints_and_plots_the_curve(bridged_run, capsys):
    args = ["bridge", "steer", str(bridged_run), "--task", "single_double_quote", "--node",
            "blocks.1.hook_attn_in:3", "--strengths", "0,1", "--pairs", "3", "--random", "2"]
    assert main(args) == 0
    assert "P(random)" in capsys.readouterr().out
    stem = bridged_run / "steer" / "single_double_quote" / "blocks.1.hook_attn_in_3"
    result = json.loads(stem.with_name(stem.name + ".json").read_text())
    assert stem.with_name(stem.name + ".png").stat().st_size > 1000
    assert result["strengths"] == [0.0, 1.0] and len(result["p_counterfactual"]) == 2
    assert len(result["random"]) <= 2 and result["n_prompts"] > 0


def _fails(args, capsys, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_bad_input_is_one_line_and_exit_2(bridged_run, dense_run, tmp_path, capsys):
    out = tmp_path / "deeper"
    _fails(["bridge", "train", str(dense_run), "--out", str(out), "--preset", "cpu-tiny", *FAST,
            "--set", "model.n_layer=3"], capsys, "same depth")
    assert not out.exists()
    _fails(["bridge", "train", str(dense_run), "--out", str(out), "--preset", "cpu-tiny", *FAST,
            "--hybrid-locations", "5"], capsys, "--hybrid-locations must be between 0 (all) and 4")
    assert not out.exists()
    _fails(["bridge", "train", str(tmp_path / "nope"), "--out", str(out)], capsys, "not found")
    _fails(["bridge", "eval", str(tmp_path / "nope")], capsys, "not found")
    _fails(["bridge", "eval", str(dense_run)], capsys, "bridge file")  # an ordinary run has no bridges
    for node in ("blocks.0.attn.hook_q:1", "blocks.0.hook_resid_pre:1", "blocks.5.hook_mlp_in:1"):
        _fails(["bridge", "steer", str(bridged_run), "--task", "single_double_quote", "--node", node],
               capsys, node)
    _fails(["bridge", "steer", str(bridged_run), "--task", "no_such_task", "--node", "blocks.0.hook_attn_in:1"],
           capsys, "unknown task")


def test_a_changed_dense_run_is_refused(bridged_run, dense_run, tmp_path, capsys):
    moved = tmp_path / "copy"
    shutil.copytree(bridged_run, moved)
    meta = json.loads((moved / "bridge.json").read_text())
    meta["dense_weights_sha256"] = "0" * 64
    (moved / "bridge.json").write_text(json.dumps(meta))
    _fails(["bridge", "eval", str(moved)], capsys, "has changed")
