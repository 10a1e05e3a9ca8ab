"""nnsight on our models: trace a run's model, read a node and edit it.

Every hook point of the model is a submodule (``blocks.0.mlp.hook_post``), so nnsight's
``.output`` reads and writes the same activations ``run_with_cache`` names.  The toy model
of tests/circuits answers P after "A" through MLP neuron 0 only (lm_head reads P from the
channel that neuron writes), so zeroing that node must remove P's logit exactly.
"""
from __future__ import annotations

import torch
from circuit_fixtures import VOCAB, toy_model
from nnsight import NNsight


def test_trace_reads_a_node_and_an_edit_changes_the_output():
    model = toy_model()
    tokens = torch.tensor([[VOCAB["x"], VOCAB["x"], VOCAB["A"]]])  # (1, 3)
    ref, cache = model.run_with_cache(tokens)  # (1, 3, V)
    traced = NNsight(model)

    with traced.trace(tokens):
        neuron = traced.blocks[0].mlp.hook_post.output.clone().save()  # (1, 3, d_mlp)
        plain = traced.output.save()
    assert torch.allclose(neuron, cache["blocks.0.mlp.hook_post"])
    assert torch.allclose(plain, ref)

    with traced.trace(tokens):
        traced.blocks[0].mlp.hook_post.output[:, :, 0] = 0.0  # ablate the circuit's neuron
        edited = traced.output.save()
    p, q = VOCAB["P"], VOCAB["Q"]
    assert ref[0, 2, p] > ref[0, 2, q]  # the model answers P ...
    assert float(edited[0, 2, p].detach()) == 0.0  # ... only through that neuron
    assert edited[0, 2, p] < edited[0, 2, q]  # the answer flips to Q (the final norm rescales it)
