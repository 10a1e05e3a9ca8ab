"""Resample ablation: pruned nodes carry the pair's other prompt, not a mean offset."""
import torch

from circuit_fixtures import TOY_CIRCUIT, random_model, toy_examples
from sparsecircuits.circuits import prune
from sparsecircuits.circuits.circuit import circuit_diffs, encode_for_run
from sparsecircuits.circuits.masking import MaskedModel, Resample, resample_partners, resample_sources
from sparsecircuits.circuits.nodes import NodeSet


def test_partners_pair_rows_and_never_leave_one_alone():
    assert resample_partners(4).tolist() == [1, 0, 3, 2]
    assert resample_partners(5).tolist() == [1, 0, 3, 2, 0]


def test_sources_are_the_partners_clean_activations_aligned_at_the_last_token():
    model = random_model(0)
    nodes = NodeSet.from_model(model)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 64, (4, 10), generator=g)
    last_pos = torch.tensor([9, 9, 6, 9])  # rows 2 and 3: a pair of different lengths
    src = resample_sources(model, nodes, tokens, last_pos)
    _, clean = model.run_with_cache(tokens, names_filter=[s.hook for s in nodes.sites])
    for s in nodes.sites:
        a, c = src[s.hook], clean[s.hook]
        assert a.shape == c.shape
        assert torch.equal(a[0], c[1]) and torch.equal(a[1], c[0])  # same length: position by position
        assert torch.equal(a[2, :7], c[3, 3:10])  # row 2 (last token 6) reads row 3 shifted by 3
        assert torch.equal(a[3, 3:], c[2, :7]) and torch.equal(a[3, :3], c[2, :1].expand_as(a[3, :3]))


def test_ablating_the_informative_node_gives_the_other_prompts_answer(toy_run):
    # A/B alternate, so rows 2i and 2i+1 are an A prompt and a B prompt of equal length
    ex = sorted(toy_examples(40), key=lambda e: len(e.prompt))  # neighbours share a length
    pairs = [x for i in range(0, len(ex) - 1, 2) for x in (ex[i], ex[i + 1])
             if ex[i].correct != ex[i + 1].correct and len(ex[i].prompt) == len(ex[i + 1].prompt)]
    batch = encode_for_run(toy_run, pairs)
    nodes = NodeSet.from_model(toy_run.model)
    keep = ~nodes.keep_from_names(["blocks.0.hook_mlp_out:1"])  # drop only the node carrying A vs B
    resample = circuit_diffs(MaskedModel(toy_run.model, Resample(), nodes), keep, batch)
    zero = circuit_diffs(MaskedModel(toy_run.model, None, nodes), keep, batch)
    assert len(batch) >= 10
    assert (resample < 0).all()  # every prompt now answers as its partner would
    assert float((zero > 0).float().mean()) == 0.5  # a constant baseline: every prompt says Q, half right
    # keeping every node reproduces the full model exactly
    full = circuit_diffs(MaskedModel(toy_run.model, None, nodes), None, batch)
    all_kept = torch.ones(nodes.n, dtype=torch.bool)
    assert torch.equal(circuit_diffs(MaskedModel(toy_run.model, Resample(), nodes), all_kept, batch), full)


def test_prune_under_resample_ablation_finds_the_circuit(toy_run):
    c = prune(toy_run, toy_examples(64), ablation="resample", method="attribution", progress=False, threads=1)
    assert c.metrics["ablation"] == "resample" and c.metrics["target_met"]
    assert set(c.node_ids) == TOY_CIRCUIT
    assert c.evaluate(toy_examples(20, seed=5))["accuracy"] == 1.0
