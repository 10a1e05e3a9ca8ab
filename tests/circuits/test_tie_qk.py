"""Tied query/key masks: q_j and k_j of one head are kept or pruned together, with one mask."""
import torch

from circuit_fixtures import random_model, toy_examples, toy_tokenizer
from sparsecircuits.circuits import prune
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.circuits.prune import _Prober, _resolve_task, optimise_tau
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.tying import adjacent, close, qk_tie, unit_sum
from sparsecircuits.config import PruneSettings, RunConfig
from sparsecircuits.run import Run
from sparsecircuits.sites import hook_name

FAST = dict(progress=False, threads=1)


def _pairs(nodes: NodeSet) -> list[tuple[int, int]]:
    """Every (q node, k node) flat index pair of the same layer, head and channel."""
    out = []
    for layer in range(nodes.n_layer):
        q, k = nodes.site(hook_name(layer, "q")), nodes.site(hook_name(layer, "k"))
        out += [(q.start + j, k.start + j) for j in range(q.width)]
    return out


def _random_run(tmp_path) -> Run:
    model = random_model(0, vocab_size=6, block_size=16)
    return Run(path=tmp_path, config=RunConfig(model=model.cfg), model=model, tokenizer=toy_tokenizer())


def test_tie_index_points_every_key_channel_at_its_query_channel():
    nodes = NodeSet(2, 8, 2, 3, 16)
    tie = qk_tie(nodes)
    pairs = _pairs(nodes)
    assert len(pairs) == 2 * 2 * 3
    for q, k in pairs:
        assert tie[k] == q and tie[q] == q
    keys = {k for _, k in pairs}
    assert all(int(tie[i]) == i for i in range(nodes.n) if i not in keys)


def test_every_prefix_of_an_adjacent_order_closes_to_a_prefix():
    nodes = NodeSet(1, 4, 2, 2, 4)
    tie = qk_tie(nodes)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        order = adjacent(torch.randperm(nodes.n, generator=g), tie)
        assert sorted(order.tolist()) == list(range(nodes.n))
        for k in range(nodes.n + 1):
            top = torch.zeros(nodes.n, dtype=torch.bool)
            top[order[:k]] = True
            kept = close(top, tie)
            size = int(kept.sum())
            assert size in (k, k + 1)
            prefix = torch.zeros(nodes.n, dtype=torch.bool)
            prefix[order[:size]] = True
            assert torch.equal(kept, prefix)
            assert all(bool(kept[q]) == bool(kept[kk]) for q, kk in _pairs(nodes))


def test_unit_sum_adds_a_pairs_values_and_leaves_the_rest():
    nodes = NodeSet(1, 4, 1, 2, 4)
    tie = qk_tie(nodes)
    values = torch.arange(nodes.n, dtype=torch.float32)
    summed = unit_sum(values, tie)
    for q, k in _pairs(nodes):
        assert summed[q] == summed[k] == values[q] + values[k]
    paired = {i for p in _pairs(nodes) for i in p}
    assert all(summed[i] == values[i] for i in range(nodes.n) if i not in paired)


def test_tied_optimisation_gives_query_and_key_one_mask(tmp_path):
    run = _random_run(tmp_path)
    s = PruneSettings(steps=8, tie_qk=True)
    data = _resolve_task(run, toy_examples(32), None, s, 0)
    masked = MaskedModel(run.model, None)
    tau, _ = optimise_tau(masked, data, 1e-3, s, seed=0)
    pairs = _pairs(masked.nodes)
    assert all(tau[q] == tau[k] for q, k in pairs)
    untied, _ = optimise_tau(masked, data, 1e-3, PruneSettings(steps=8), seed=0)
    assert any(untied[q] != untied[k] for q, k in pairs)  # the masks really were two before


def test_prober_sizes_are_node_counts_that_never_split_a_pair(tmp_path):
    run = _random_run(tmp_path)
    s = PruneSettings(tie_qk=True)
    data = _resolve_task(run, toy_examples(16), None, s, 0)
    masked = MaskedModel(run.model, None)
    order = torch.randperm(masked.nodes.n, generator=torch.Generator().manual_seed(3))
    prober = _Prober(masked, order, data.train, s)
    for k in range(0, masked.nodes.n + 1, 7):
        keep = prober.keep(k)
        assert prober.size(k) == int(keep.sum()) and torch.equal(prober.keep(prober.size(k)), keep)
        assert all(bool(keep[q]) == bool(keep[kk]) for q, kk in _pairs(masked.nodes))


def test_tie_qk_prunes_query_and_key_channels_together(tmp_path):
    run = _random_run(tmp_path)
    kw = dict(ablation="zero", steps=30, k_coefs=[1e-3], lr=1e-2, force=True, **FAST)
    tied = prune(run, toy_examples(64), tie_qk=True, **kw)
    nodes = NodeSet.from_model(run.model)
    pairs = _pairs(nodes)
    assert tied.settings["tie_qk"] is True
    assert any(tied.keep[q] for q, _ in pairs)  # the circuit does keep a query channel
    assert all(bool(tied.keep[q]) == bool(tied.keep[k]) for q, k in pairs)
    mask = {n["id"]: n["mask"] for n in tied.nodes if n.get("mask") is not None}
    for q, k in pairs:
        if tied.keep[q]:
            assert mask[nodes.name(q)] == mask[nodes.name(k)]
    assert tied.metrics["n_nodes"] == int(tied.keep.sum())  # both members of a pair are counted
    # the same run untied splits at least one pair, so the check above can fail
    untied = prune(run, toy_examples(64), **kw)
    assert untied.settings["tie_qk"] is False
    assert any(bool(untied.keep[q]) != bool(untied.keep[k]) for q, k in pairs)


def test_tie_qk_flag_reaches_the_circuit_and_set_points_at_it(toy_run_dir, tmp_path, capsys):
    import json

    from sparsecircuits.cli import main
    from sparsecircuits.tasks.base import write_jsonl_examples

    tasks = tmp_path / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    base = ["prune", str(toy_run_dir), "--tasks-file", str(tasks), "--ablation", "zero", "--no-progress",
            "--threads", "1", "--steps", "5", "--k-coefs", "1e-2", "--set", "curve_points=0"]
    assert main(base + ["--tie-qk"]) == 0
    obj = json.loads((toy_run_dir / "circuits" / "toy" / "circuit.json").read_text())
    assert obj["metrics"]["settings"]["tie_qk"] is True
    capsys.readouterr()
    assert main(base + ["--set", "tie_qk=true"]) == 2
    assert "--tie-qk" in capsys.readouterr().err

