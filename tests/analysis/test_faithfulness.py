"""The report card on hand-built models whose circuits are known (see conftest.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from analysis_models import LastWordTask, means_for
from sparsecircuits.analysis.faithfulness import (
    CHECK_NAMES,
    circuit_from_keep,
    format_table,
    random_keeps,
    role_correlations,
    run_checks,
    write_checks,
)
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.errors import UserError

HONEST = ["blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.hook_post:1",
          "blocks.0.hook_mlp_out:2"]
CHEAT = ["blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:2", "blocks.0.hook_mlp_out:3"]
TASK = LastWordTask()
FAST = ["necessity", "sufficiency", "sufficiency_shifted", "random_baseline", "node_roles", "attention"]


def _circuit(run, names, means):
    keep = NodeSet.from_model(run.model).keep_from_names(names)
    c = circuit_from_keep(run, keep, TASK.generate(64, split="train"), task=TASK.name, means=means)
    c.settings.update(steps=40, n_train=64, n_test=64)
    return c


@pytest.fixture
def honest(honest_run):
    means = means_for(honest_run)
    return honest_run, _circuit(honest_run, HONEST, means), means


def test_honest_circuit_passes_necessity_sufficiency_and_roles(honest):
    run, circuit, means = honest
    res = run_checks(run, circuit, checks=FAST, task=TASK, means=means, progress=False)
    assert set(res) == set(FAST)
    for name, r in res.items():
        assert set(r) >= {"value", "threshold", "verdict", "detail"}
        assert r["verdict"] in ("pass", "flag")
        assert r["verdict"] == "pass", (name, r["detail"])
    assert res["necessity"]["value"] == pytest.approx(2 * math.log(2), abs=0.04)  # ablating it leaves chance
    assert res["sufficiency"]["value"] < 0.1
    # random circuits of the same composition are far worse than the real one
    assert min(res["random_baseline"]["data"]["random_losses"]) > res["sufficiency"]["value"] + 0.5
    corrs = [v["corr"] for v in res["node_roles"]["data"].values()]
    assert len(corrs) == len(HONEST) and min(corrs) > 0.999
    # default shifted variants (generic prefixes) ran and the circuit tracks the model on them
    names = {row["variant"] for row in res["sufficiency_shifted"]["data"]}
    assert names == {"prefix_code", "prefix_comment"}


def test_cheating_circuit_is_flagged(cheat_run):
    means = means_for(cheat_run)
    circuit = _circuit(cheat_run, CHEAT, means)
    res = run_checks(cheat_run, circuit, checks=["necessity", "sufficiency", "node_roles"], task=TASK,
                     means=means, progress=False)
    assert res["sufficiency"]["verdict"] == "pass"  # low loss: what pruning optimises...
    assert res["necessity"]["verdict"] == "flag"  # ...but the model does not need it
    assert res["node_roles"]["verdict"] == "flag"  # and its neuron means the opposite
    roles = res["node_roles"]["data"]
    assert roles["blocks.0.mlp.hook_post:2"]["flag"] and roles["blocks.0.mlp.hook_post:2"]["corr"] < 0
    assert not roles["blocks.0.hook_mlp_in:0"]["flag"]


def test_honest_model_cheating_node_set_is_not_sufficient(honest):
    run, _, means = honest
    circuit = _circuit(run, CHEAT, means)
    res = run_checks(run, circuit, checks=["sufficiency"], task=TASK, means=means, progress=False)
    assert res["sufficiency"]["verdict"] == "flag"


def test_attention_values_only_head_is_flagged(honest):
    run, _, means = honest
    v_only = _circuit(run, HONEST + ["blocks.0.attn.hook_v:1"], means)
    res = run_checks(run, v_only, checks=["attention"], task=TASK, means=means, progress=False)
    head = res["attention"]["data"]["blocks.0.attn.head0"]
    assert head["values_only"] and head["flag"] and res["attention"]["verdict"] == "flag"
    qkv = _circuit(run, HONEST + ["blocks.0.attn.hook_q:1", "blocks.0.attn.hook_k:1", "blocks.0.attn.hook_v:1"],
                   means)
    res = run_checks(run, qkv, checks=["attention"], task=TASK, means=means, progress=False)
    head = res["attention"]["data"]["blocks.0.attn.head0"]
    assert not head["values_only"] and head["tv"] < 1e-6 and res["attention"]["verdict"] == "pass"


def test_nonsense_control_prunes_and_caches(honest):
    run, circuit, means = honest
    control = LastWordTask("ctrl", ("C", "D")).generate(48)  # the model ignores C and D
    res = run_checks(run, circuit, checks=["nonsense_control"], task=TASK, means=means, control=control,
                     progress=False)
    r = res["nonsense_control"]
    assert r["verdict"] == "pass" and not r["data"]["nonsense_target_met"]
    (cached,) = (run.path / "controls").glob("custom-*/circuit.json")  # a control list is cached by content
    mtime = cached.stat().st_mtime_ns
    run_checks(run, circuit, checks=["nonsense_control"], task=TASK, means=means, control=control, progress=False)
    assert cached.stat().st_mtime_ns == mtime  # reused, not pruned again


def test_role_correlations_cases():
    x = torch.linspace(-1, 1, 50)[:, None]  # (N, 1)
    full = torch.cat([x, x, x, torch.full_like(x, 2.0), torch.full_like(x, 2.0), x.relu()], 1)
    circ = torch.cat([3 * x + 1, -x, torch.zeros_like(x), torch.full_like(x, 2.05), torch.full_like(x, -2.0),
                      (-x).relu()], 1)
    corr, cos = role_correlations(full, circ)
    assert corr[0] == pytest.approx(1.0, abs=1e-5)  # an affine copy keeps its role
    assert corr[1] == pytest.approx(-1.0, abs=1e-5)
    assert corr[2] == 0.0  # the circuit holds a varying node constant
    assert corr[3] == 1.0  # constant in both, about the same value
    assert corr[4] == 0.0 and cos[4] < 0  # constant, opposite sign
    assert corr[5] < 0


def test_random_keeps_match_composition():
    nodes = NodeSet(2, 8, 2, 4, 16)
    keep = torch.zeros(nodes.n, dtype=torch.bool)
    keep[[0, 3, 9, 40, 41, 42, nodes.n - 1]] = True
    draws = random_keeps(nodes, keep, 5, seed=1)
    assert len(draws) == 5
    for r in draws:
        assert nodes.kind_counts(r) == nodes.kind_counts(keep)
        for s in nodes.sites:
            assert int(r[s.start:s.stop].sum()) == int(keep[s.start:s.stop].sum())
    assert any(not torch.equal(r, keep) for r in draws)
    assert all(torch.equal(a, b) for a, b in zip(draws, random_keeps(nodes, keep, 5, seed=1)))


def test_write_checks_merges_and_table(tmp_path):
    path = tmp_path / "partial.json"  # a stub, not a full circuit file (those are schema-checked)
    path.write_text(json.dumps({"schema_version": 1, "nodes": [], "checks": {"old": {"value": 1.0}}}))
    checks = {"necessity": {"value": 0.7, "threshold": 0.6, "verdict": "pass", "detail": "ok"},
              "node_roles": {"value": float("nan"), "threshold": 0.1, "verdict": "flag", "detail": "bad"}}
    write_checks(path, checks)
    obj = json.loads(path.read_text())
    assert obj["schema_version"] == 1 and set(obj["checks"]) == {"old", "necessity", "node_roles"}
    assert obj["checks"]["node_roles"]["value"] is None  # JSON has no NaN
    table = format_table(checks)
    assert "necessity" in table and "PASS" in table and "FLAG" in table


def test_bad_check_names(honest):
    run, circuit, means = honest
    with pytest.raises(UserError, match="unknown check"):
        run_checks(run, circuit, checks=["nope"], task=TASK, means=means, progress=False)
    with pytest.raises(UserError, match="bracket_counting only"):
        run_checks(run, circuit, checks=["bracket_stray"], task=TASK, means=means, progress=False)
    assert "bracket_length" in CHECK_NAMES


def test_user_task_checks_use_prunes_held_out_split(honest):
    from sparsecircuits.tasks import ExamplesTask
    from sparsecircuits.circuits import prune
    from sparsecircuits.tasks.base import flatten

    run, _, means = honest
    examples = flatten(TASK.generate(40, seed=5))
    circuit = prune(run, examples, name="mine", steps=40, k_coefs=[1e-2], means=means, progress=False)
    res = run_checks(run, circuit, checks=["sufficiency", "sufficiency_shifted"], task=ExamplesTask("mine", examples),
                     means=means, progress=False)
    # the same held-out quarter as prune's: the reported loss is reproduced exactly
    assert res["sufficiency"]["value"] == pytest.approx(circuit.metrics["circuit_loss"], abs=1e-5)
    assert res["sufficiency"]["data"]["n"] == circuit.settings["n_test_examples"]
    assert {r["variant"] for r in res["sufficiency_shifted"]["data"]} == {"prefix_code", "prefix_comment"}
