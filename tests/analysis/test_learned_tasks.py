"""A hand-built model that has learned two of the 20 tasks, on the project's own tokenizer.

One layer, d_model 6, two heads of one channel whose queries and keys are zero:

* embeddings: channel 0 is +1 for tokens holding a ``"`` and -1 for a ``'``; channel 1 is
  1 for ``[``; channel 5 is 1 for tokens holding a ``]``; channel 2 is 1 for every token;
* head 0 (sink logit -30, so no sink) averages channel 0 over the prompt into channel 3:
  the quote type.  ``")`` reads +20 x channel 3 and ``')`` -20 x channel 3;
* head 1 has a sink logit of 8: with e^8 far above the prompt length its output is
  close to a *sum* over the prompt, not a mean.  Its value is ``[`` + 2 x ``]`` (after
  the RMS norm a lone ``[`` gives sqrt(3)), written to channel 4; ``]]`` reads channel 4
  minus 1.5 x sqrt(3) / e^8 of the constant channel.  A flat list has one ``[``; a nested
  one has ``[[`` or a ``]``, so ``]]`` wins exactly for nested lists.

So ``single_double_quote`` and ``bracket_counting`` are learned (100%) and no other task
is: ``prune --all-tasks`` has two circuits to find and a geometric mean to report.  And
the model has the predicted failure the bracket probes look for: a stray ``[`` in a
comment before a flat list makes it answer ``]]`` (50% on those pairs).  A circuit that
counts only the ``]`` (channel 5) is right there, and wrong on a nested list of one group
(``[[a, b``), so the probes must flag it; the model's whole path must pass.
"""
from __future__ import annotations

import json
import math

import pytest
from analysis_models import BRACKET_PATH, CLOSE_ONLY, QUOTE_PATH, save_learned_run

from sparsecircuits.analysis.faithfulness import circuit_from_keep, run_checks
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.cli import main
from sparsecircuits.circuit_sizes import geometric_mean
from sparsecircuits.tasks.python_tasks import get_task


@pytest.fixture(scope="module")
def learned_run_dir(tmp_path_factory, tiny_data_dir):
    return save_learned_run(tmp_path_factory.mktemp("learned") / "run", tiny_data_dir)


@pytest.mark.slow
def test_prune_all_tasks_finds_both_learned_tasks(learned_run_dir, capsys):
    assert main(["prune", str(learned_run_dir), "--all-tasks", "--no-progress", "--threads", "1",
                 "--steps", "40", "--k-coefs", "0.003,0.01"]) == 0
    out = capsys.readouterr()
    summary = json.loads((learned_run_dir / "circuits" / "summary.json").read_text())
    assert [r["task"] for r in summary["tasks"]] == ["single_double_quote", "bracket_counting"]
    assert len(summary["skipped"]) == 18 and all(s["kind"] == "not learned" for s in summary["skipped"])
    for r in summary["tasks"]:
        obj = json.loads((learned_run_dir / "circuits" / r["task"] / "circuit.json").read_text())
        assert (r["n_nodes"], r["n_edges"]) == (obj["metrics"]["n_nodes"], obj["metrics"]["n_edges"])
        assert r["full_accuracy"] >= 0.8 and not r["forced"] and r["target_met"] and r["n_edges"] >= 1
        kept = {n["id"] for n in obj["nodes"] if n["site"] not in ("embed", "logit")}
        # each circuit is its own task's path through its own head; for brackets, counting
        # the "[" alone (attn_in:1) or the "]" alone (attn_in:5) nearly suffices
        if r["task"] == "single_double_quote":
            assert QUOTE_PATH <= kept and not kept & BRACKET_PATH, kept
        else:
            assert BRACKET_PATH - {"blocks.0.hook_attn_in:1", "blocks.0.hook_attn_in:5"} <= kept, kept
            assert kept & {"blocks.0.hook_attn_in:1", "blocks.0.hook_attn_in:5"} and not kept & QUOTE_PATH, kept
    counted = [r["n_edges"] for r in summary["tasks"] if r["target_met"] and not r["forced"]]
    assert summary["geomean_edges"] == pytest.approx(geometric_mean(counted))
    assert summary["geomean_edges"] == pytest.approx(math.sqrt(counted[0] * counted[1]))
    assert f"geometric mean of edges {summary['geomean_edges']:.1f}" in out.out
    assert "skipping single_double_quote" not in out.err and "skipping for_while" in out.err


# ---------------------------------------------------------------------------- bracket probes


@pytest.fixture(scope="module")
def learned_run(learned_run_dir):
    from sparsecircuits.run import load_run

    return load_run(learned_run_dir)


def _bracket_circuit(run, names):
    keep = NodeSet.from_model(run.model).keep_from_names(names)
    train = get_task("bracket_counting").generate(64, seed=0, split="train")
    c = circuit_from_keep(run, keep, train, task="bracket_counting", ablation="zero")
    c.settings.update(n_train=64, n_test=64)
    return c


def test_bracket_probes_pass_the_models_own_path(learned_run):
    res = run_checks(learned_run, _bracket_circuit(learned_run, BRACKET_PATH),
                     checks=["bracket_stray", "bracket_length"], progress=False)
    stray, length = res["bracket_stray"], res["bracket_length"]
    assert stray["verdict"] == "pass" and length["verdict"] == "pass"
    # the model's predicted failure, reproduced by its circuit
    assert stray["data"]["model_accuracy"] == stray["data"]["circuit_accuracy"] == 0.5
    assert stray["data"]["test_model_accuracy"] == 1.0
    assert stray["value"] == 0.0
    rows = length["data"]
    assert [r["length"] for r in rows] == [2, 4, 6, 8, 12, 16, 24, 32]
    assert all(r["model_accuracy"] == r["circuit_accuracy"] == 1.0 for r in rows)
    assert length["value"] == 0.0


def test_bracket_probes_flag_a_circuit_that_misses_the_models_failure(learned_run):
    res = run_checks(learned_run, _bracket_circuit(learned_run, CLOSE_ONLY),
                     checks=["bracket_stray", "bracket_length"], progress=False)
    stray, length = res["bracket_stray"], res["bracket_length"]
    assert stray["threshold"] == length["threshold"] == 0.15
    # blind to "[", the circuit is right where the model fails: not a faithful account
    assert stray["verdict"] == "flag"
    assert stray["data"]["circuit_accuracy"] >= 0.9 and stray["data"]["model_accuracy"] == 0.5
    assert stray["value"] == pytest.approx(stray["data"]["circuit_accuracy"] - 0.5)
    # and wrong on "[[a, b" (two elements, one group, no "]" yet), where the model is right
    assert length["verdict"] == "flag"
    rows = {r["length"]: r for r in length["data"]}
    assert rows[2]["circuit_accuracy"] == 0.5 and rows[2]["model_accuracy"] == 1.0
    assert length["value"] == pytest.approx(max(abs(r["circuit_accuracy"] - r["model_accuracy"])
                                                for r in length["data"]))
