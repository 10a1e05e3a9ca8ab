"""Lanes: chunks of masked work side by side on model copies, with the results of one lane."""
from __future__ import annotations

import threading

import pytest
import torch
from circuit_fixtures import TOY_CIRCUIT, random_model, toy_examples

from sparsecircuits.circuits import prune
from sparsecircuits.circuits.attribution import attribution_scores
from sparsecircuits.circuits.circuit import circuit_diffs
from sparsecircuits.circuits.lanes import Lanes, lanes_of, map_masked, spread
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.config import PruneSettings
from sparsecircuits.errors import UserError
from sparsecircuits.tasks.base import TaskBatch


def _batch(model, n: int = 40, seed: int = 0) -> TaskBatch:
    """Random prompts of varied length with random answer tokens: a batch circuit_diffs accepts."""
    g = torch.Generator().manual_seed(seed)
    T, V = model.cfg.block_size, model.cfg.vocab_size
    tokens = torch.randint(1, V, (n, T), generator=g)
    last = torch.randint(3, T, (n,), generator=g)
    answers = torch.randint(0, V, (n, 2), generator=g)
    return TaskBatch(tokens=tokens, last_pos=last, correct_id=answers[:, 0], incorrect_id=answers[:, 1])


def _masked(seed: int = 0) -> MaskedModel:
    model = random_model(seed)
    nodes = NodeSet.from_model(model)
    means = torch.randn(nodes.n, generator=torch.Generator().manual_seed(seed + 1))
    return MaskedModel(model, means, nodes)


def test_two_lanes_run_side_by_side_each_on_its_own_model_copy():
    model = random_model(0)
    lanes = Lanes(model, 2, threads=1)
    barrier = threading.Barrier(2, timeout=20)  # only passes if both items run at once
    try:
        def fn(m, item):
            barrier.wait()
            return id(m), torch.get_num_threads(), item * 10

        out = lanes.map(fn, [1, 2])
    finally:
        lanes.close()
    assert [o[2] for o in out] == [10, 20]  # results in item order
    assert len({o[0] for o in out}) == 2  # two different model objects
    assert all(o[1] == 1 for o in out)  # one torch thread per lane
    assert id(model) in {o[0] for o in out}  # the first copy is the model itself


def test_model_copies_are_frozen_and_equal_but_separate():
    model = random_model(0)
    lanes = Lanes(model, 3)
    try:
        assert len(lanes.models) == 3
        tokens = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = model(tokens)
            for copy_ in lanes.models[1:]:
                assert all(not p.requires_grad for p in copy_.parameters())
                assert all(p.data_ptr() != q.data_ptr() for p, q in zip(copy_.parameters(), model.parameters()))
                assert torch.equal(copy_(tokens), ref)
    finally:
        lanes.close()


def test_an_error_in_a_lane_reaches_the_caller_and_the_lanes_still_work():
    lanes = Lanes(random_model(0), 2)
    try:
        def fn(m, item):
            if item == 3:
                raise UserError("item 3 is bad")
            return item

        with pytest.raises(UserError, match="item 3"):
            lanes.map(fn, [1, 2, 3, 4])
        assert lanes.map(lambda m, i: i + 1, [1, 2, 3]) == [2, 3, 4]  # no copy was lost
    finally:
        lanes.close()


def test_lanes_follow_the_callers_grad_mode():
    lanes = Lanes(random_model(0), 2)
    try:
        with torch.no_grad():
            assert lanes.map(lambda m, i: torch.is_grad_enabled(), [0, 1]) == [False, False]
        with torch.enable_grad():
            assert lanes.map(lambda m, i: torch.is_grad_enabled(), [0, 1]) == [True, True]
    finally:
        lanes.close()


def test_spread_registers_lanes_only_inside_its_block_and_not_twice():
    model = random_model(0)
    with spread(model, 2) as lanes:
        assert lanes is not None and lanes_of(model) is lanes
        with spread(model, 2) as inner:  # an enclosing block's lanes serve
            assert inner is None and lanes_of(model) is lanes
    assert lanes_of(model) is None
    with spread(model, 1) as none:
        assert none is None and lanes_of(model) is None


def test_circuit_diffs_are_bitwise_the_same_with_lanes():
    masked = _masked(0)
    batch = _batch(masked.model, 40)
    g = torch.Generator().manual_seed(3)
    keeps = [None, torch.rand(masked.nodes.n, generator=g) < 0.5, torch.zeros(masked.nodes.n, dtype=torch.bool)]
    with torch.no_grad():
        plain = [circuit_diffs(masked, k, batch, batch_size=8) for k in keeps]
        with spread(masked.model, 2):
            laned = [circuit_diffs(masked, k, batch, batch_size=8) for k in keeps]
    for a, b in zip(plain, laned):
        assert a.shape == (40,) and torch.equal(a, b)
    assert not torch.equal(plain[0], plain[1])  # the masks matter, so equality is not trivial
    # the model copies' hooks and stand-ins never touched the model itself
    assert all(not hp._fns for hp in masked.model.hook_points().values())


def test_map_masked_gives_each_lane_the_masked_model_over_its_copy():
    masked = _masked(0)
    with spread(masked.model, 2):
        barrier = threading.Barrier(2, timeout=20)

        def fn(mm, item):
            barrier.wait()
            return mm

        seen = map_masked(masked, fn, [0, 1])
    assert {type(mm) for mm in seen} == {MaskedModel}
    assert len({id(mm.model) for mm in seen}) == 2
    assert all(mm.baseline is masked.baseline and mm.nodes is masked.nodes for mm in seen)
    assert masked in seen  # the lane on the model itself uses the caller's object


def test_attribution_scores_are_bitwise_the_same_with_lanes():
    masked = _masked(1)
    for p in masked.model.parameters():
        p.requires_grad_(False)
    batch = _batch(masked.model, 24, seed=1)
    plain = attribution_scores(masked, batch, batch_size=8)
    with spread(masked.model, 2):
        laned = attribution_scores(masked, batch, batch_size=8)
    assert plain.abs().sum() > 0 and torch.equal(plain, laned)


def test_pruning_gives_the_same_circuit_and_masks_with_one_or_two_lanes(toy_run):
    fast = dict(steps=40, lr=3e-2, k_coefs=[1e-2, 3e-2], progress=False, ablation="zero")
    one = prune(toy_run, toy_examples(64), threads=1, lanes=1, **fast)
    two = prune(toy_run, toy_examples(64), threads=2, lanes=2, **fast)
    assert set(one.node_ids) == set(two.node_ids) == TOY_CIRCUIT
    assert one.settings["lanes"] == 1 and two.settings["lanes"] == 2
    assert one.metrics["curve"] == two.metrics["curve"]
    assert one.metrics["circuit_loss"] == two.metrics["circuit_loss"]
    assert lanes_of(toy_run.model) is None  # the lanes end with the pruning


def test_negative_lanes_are_refused():
    with pytest.raises(UserError, match="lanes"):
        PruneSettings(lanes=-1).validate()


def test_node_means_are_bitwise_the_same_with_lanes():
    from sparsecircuits.circuits.masking import compute_node_means

    model = random_model(2)
    windows = torch.randint(0, 64, (20, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = compute_node_means(model, windows, batch_size=4)
        with spread(model, 2):
            laned = compute_node_means(model, windows, batch_size=4)
    assert plain.abs().sum() > 0 and torch.equal(plain, laned)
