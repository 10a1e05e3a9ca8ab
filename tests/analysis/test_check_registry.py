"""The checks are registered by name: a new check runs once registered, in its place."""
from __future__ import annotations

import pytest

from analysis_models import LastWordTask, means_for
from sparsecircuits.analysis.faithfulness import CHECK_NAMES, circuit_from_keep, default_checks, run_checks
from sparsecircuits.analysis.faithfulness import registry
from sparsecircuits.analysis.faithfulness.context import result
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.errors import UserError

TASK = LastWordTask()
HONEST = ["blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.hook_post:1",
          "blocks.0.hook_mlp_out:2"]


def test_every_check_module_is_registered_in_report_card_order():
    assert CHECK_NAMES == ("necessity", "sufficiency", "sufficiency_shifted", "random_baseline", "interchange",
                           "nonsense_control", "random_weights", "node_roles", "attention", "bracket_stray",
                           "bracket_length")
    assert default_checks("if_equals") == list(CHECK_NAMES[:9])
    assert default_checks("bracket_counting") == list(CHECK_NAMES)


def test_a_newly_registered_check_runs_by_name_and_only_where_it_applies(honest_run, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # forget it afterwards
    seen = []

    @registry.register("circuit_size", order=1, tasks=(TASK.name,))
    def circuit_size(ctx):
        seen.append(ctx.options["n_random"])
        return result(ctx.circuit.n_nodes, 10, ctx.circuit.n_nodes <= 10, f"{ctx.circuit.n_nodes} nodes")

    means = means_for(honest_run)
    keep = NodeSet.from_model(honest_run.model).keep_from_names(HONEST)
    circuit = circuit_from_keep(honest_run, keep, TASK.generate(64, split="train"), task=TASK.name, means=means)
    res = run_checks(honest_run, circuit, checks=["circuit_size", "sufficiency"], task=TASK, means=means,
                     n_random=3, progress=False)
    assert list(res) == ["circuit_size", "sufficiency"] and res["circuit_size"]["value"] == 4.0 and seen == [3]
    assert default_checks(TASK.name)[0] == "circuit_size" and "circuit_size" not in default_checks("if_equals")
    with pytest.raises(UserError, match=f"circuit_size check\\(s\\) apply to {TASK.name} only"):
        run_checks(honest_run, circuit, checks=["circuit_size"], task=LastWordTask("other", ("A", "B")),
                   means=means, progress=False)
    with pytest.raises(ValueError, match="two checks"):
        registry.register("necessity", order=5)(lambda ctx: None)
