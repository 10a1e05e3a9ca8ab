"""The nonsense control's cached circuit: one per control task, and never a report page."""
from __future__ import annotations

from analysis_models import LastWordTask, means_for
from sparsecircuits.analysis.faithfulness import circuit_from_keep, run_checks
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.report.loading import load_run_data
from sparsecircuits.rundir import RunDir

HONEST = ["blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.hook_post:1",
          "blocks.0.hook_mlp_out:2"]
TASK = LastWordTask()


def _check(run, circuit, means, control) -> dict:
    res = run_checks(run, circuit, checks=["nonsense_control"], task=TASK, means=means, control=control,
                     progress=False)
    return res["nonsense_control"]["data"]


def test_control_cache_is_keyed_by_the_control_task(honest_run):
    run = honest_run
    means = means_for(run)
    keep = NodeSet.from_model(run.model).keep_from_names(HONEST)
    circuit = circuit_from_keep(run, keep, TASK.generate(64, split="train"), task=TASK.name, means=means)
    circuit.settings.update(steps=40, n_train=64, n_test=64)
    nonsense = LastWordTask("ctrl", ("C", "D")).generate(48)  # the model ignores C and D
    doable = LastWordTask("ctrl", ("A", "B")).generate(48)  # the model's own task under another name

    assert not _check(run, circuit, means, nonsense)["nonsense_target_met"]
    # same seed and settings, another control: its own pruning, not the first control's circuit
    assert _check(run, circuit, means, doable)["nonsense_target_met"]
    assert not _check(run, circuit, means, nonsense)["nonsense_target_met"]  # each cached apart
    controls = sorted((run.path / "controls").glob("*/circuit.json"))
    assert len(controls) == 2

    RunDir(run.path).write_config(run.config)
    assert load_run_data(run.path).circuits == []  # controls are no pages of the report
