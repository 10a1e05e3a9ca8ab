"""Circuit.build, the one constructor behind pruning and the checks, on the hand-built toy model."""
from __future__ import annotations

import torch
from circuit_fixtures import TOY_CIRCUIT, toy_examples

from sparsecircuits.circuits import Circuit, NodeSet, count_edges
from sparsecircuits.circuits.circuit import encode_for_run
from sparsecircuits.tasks import TaskExample

SETTINGS = {"target_loss": 0.2, "ablation": "zero", "n_test": 8}


def _keep(run) -> torch.Tensor:
    return NodeSet.from_model(run.model).keep_from_names(TOY_CIRCUIT)


def test_build_sizes_the_circuit_and_keeps_what_it_was_given(toy_run):
    keep = _keep(toy_run)
    batch = encode_for_run(toy_run, toy_examples(8))
    tau = torch.linspace(-1, 1, keep.numel())
    c = Circuit.build(toy_run, "toy", keep, (1.5, -0.25), dict(SETTINGS), [batch], tau=tau,
                      metrics={"full_loss": 0.01}, seed=3, forced=True)
    assert set(c.node_ids) == TOY_CIRCUIT and torch.equal(c.keep, keep)
    m = c.metrics
    assert list(m)[:1] == ["full_loss"] and m["full_loss"] == 0.01
    assert m["n_nodes"] == 3 and m["n_edges"] == count_edges(toy_run.model, NodeSet.from_model(toy_run.model), keep)
    assert m["n_edges"] == 2  # mlp_in:0 -> neuron 0 -> mlp_out:1
    assert m["nodes_by_site"]["neuron"] == 1 and sum(m["nodes_by_site"].values()) == 3
    assert (m["target_loss"], m["ablation"]) == (0.2, "zero")
    assert c.calibration == {"scale": 1.5, "shift": -0.25} and c.seed == 3 and c.forced
    masks = {n["id"]: n["mask"] for n in c.nodes if n["site"] not in ("embed", "logit")}
    flat = NodeSet.from_model(toy_run.model)
    assert masks == {name: float(tau[flat.index(name)]) for name in TOY_CIRCUIT}
    assert c.baseline() is None  # zero ablation, given: nothing is computed from the run


def test_build_labels_embeddings_from_every_batch_and_logits_from_the_first(toy_run):
    keep = _keep(toy_run)
    # only the first batch's answers become logit nodes: here Q and x, which the kept
    # write (residual channel 1, read by P alone) does not reach
    first = encode_for_run(toy_run, [TaskExample("x A", " Q", " x"), TaskExample("x x A", " Q", " x")])
    second = encode_for_run(toy_run, [TaskExample("x B", " P", " Q"), TaskExample("x A", " P", " Q")])
    c = Circuit.build(toy_run, "toy", keep, (1.0, 0.0), dict(SETTINGS), [first, second])
    ids = {n["id"] for n in c.nodes}
    vocab = toy_run.tokenizer.get_vocab()
    assert {f"embed:{vocab['A']}", f"embed:{vocab['B']}"} <= ids  # B is only in the second batch
    assert not any(i.startswith("logit:") for i in ids)
    c2 = Circuit.build(toy_run, "toy", keep, (1.0, 0.0), dict(SETTINGS), [second, first])
    assert f"logit:{vocab['P']}" in {n["id"] for n in c2.nodes}


def test_a_built_circuit_evaluates_with_the_baseline_it_was_given(toy_run):
    keep = _keep(toy_run)
    batch = encode_for_run(toy_run, toy_examples(16))
    sevens = torch.full((keep.numel(),), 7.0)
    c = Circuit.build(toy_run, "toy", keep, (1.0, 0.0), {**SETTINGS, "ablation": "mean"}, [batch], baseline=sevens)
    assert c.baseline() is sevens
    c.attach(toy_run)  # the same run again: the baseline is kept
    assert c.baseline() is sevens
    zero = Circuit.build(toy_run, "toy", keep, (1.0, 0.0), dict(SETTINGS), [batch])
    assert zero.evaluate(toy_examples(16))["accuracy"] == 1.0  # the toy circuit does the task...
    assert c.evaluate(toy_examples(16))["accuracy"] == 0.5  # ...unless the rest is set to 7, not 0
