"""Edges of the sparsity module that the main tests leave open (found by benchmarks/mutation.py).

Each test pins one property a one-line fault would change: the exact error messages,
the boundary values the schedules accept, the type and device of a mask, which matrix
the floor error names, and that ``WeightSparsifier`` projects every parameter after a
dense or empty one.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sparsecircuits.errors import UserError
from sparsecircuits.model.sparsity import (
    WeightSparsifier,
    check_node_floor,
    density_at,
    lr_at,
    nonzero_target,
    project_,
    topk_mask,
)

W = torch.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize("call,message", [
    (lambda: lr_at(0, 0, 1.0), "total_steps must be >= 1, got 0"),
    (lambda: lr_at(-1, 10, 1.0), "step must be >= 0, got -1"),
    (lambda: lr_at(0, 10, -1.0), "base_lr must be >= 0, got -1.0"),
    (lambda: lr_at(0, 10, 1.0, warmup_frac=2.0), "warmup_frac must be in [0, 1], got 2.0"),
    (lambda: lr_at(0, 10, 1.0, density=0.0), "density must be in (0, 1], got 0.0"),
    (lambda: density_at(0, 10, 0.0), "target_density must be in (0, 1], got 0.0"),
    (lambda: density_at(0, 10, 0.5, anneal_frac=1.5), "anneal_frac must be in [0, 1], got 1.5"),
    (lambda: density_at(0, 10, 0.5, kind="cubic"), "kind must be one of ('linear', 'geometric'), got 'cubic'"),
    (lambda: nonzero_target(0, 0.5), "numel must be >= 1, got 0"),
    (lambda: nonzero_target(10, 1.5), "density must be in (0, 1], got 1.5"),
    (lambda: topk_mask(W, 7), "k must be in [0, 6], got 7"),
    (lambda: topk_mask(W, 2, min_per_node=-1), "min_per_node must be >= 0, got -1"),
    (lambda: topk_mask(W.flatten(), 2, min_per_node=1), "min_per_node needs a 2-D tensor, got shape (6,)"),
    (lambda: topk_mask(W, 2, node_axis=2), "node_axis must be 0 or 1, got 2"),
    (lambda: WeightSparsifier([], 0.5, 10, min_per_node=-1), "min_per_node must be >= 0, got -1"),
])
def test_bad_arguments_say_what_and_why(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_the_schedules_accept_their_boundary_values():
    assert lr_at(0, 1, 2.0) == 2.0  # a one-step run
    assert density_at(0, 1, 0.25) == 1.0 and density_at(1, 1, 0.25) == 0.25
    assert density_at(5, 10, 0.25, anneal_frac=1.0) == pytest.approx(0.625)  # anneal over the whole run
    assert lr_at(3, 10, 0.0) == 0.0  # a zero learning rate is allowed
    # warmup over the whole run: the ramp, then 0 at the end (no division by a zero decay length)
    assert lr_at(4, 10, 1.0, warmup_frac=1.0) == pytest.approx(0.5)
    assert lr_at(10, 10, 1.0, warmup_frac=1.0) == 0.0
    assert lr_at(10, 10, 1.0) == 0.0
    with pytest.raises(ValueError):
        lr_at(0, 10, 1.0, density=1.5)


def test_keeping_nothing_is_a_boolean_mask_and_zeroes_everything():
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    mask = topk_mask(w, 0)
    assert mask.dtype == torch.bool and not mask.any()
    project_(w, 0)
    assert not w.any()


@pytest.mark.parametrize("k", [3, 20])  # both the keep and the drop path of the top-k
def test_the_mask_lives_on_the_weights_device(k):
    w = torch.empty(4, 6, device="meta")  # stands in for a GPU: no data, but a device of its own
    mask = topk_mask(w, k)
    assert mask.device == w.device and mask.dtype == torch.bool


def test_project_floors_rows_by_default():
    w = torch.tensor([[5.0, -1.0, 4.0, 0.5, 0.1],
                      [0.2, 0.3, -9.0, 8.0, 0.0],
                      [1.0, 2.0, 3.0, -4.0, 5.0]])
    mask = project_(w, 6, min_per_node=2)  # 3 rows x 2 = the whole budget: each row's two largest
    assert mask.tolist() == [[True, False, True, False, False],
                             [False, False, True, True, False],
                             [False, False, False, True, True]]


def test_a_floor_of_one_is_checked_too():
    with pytest.raises(ValueError, match="a floor of 1 per node needs 8 entries"):
        topk_mask(torch.ones(8, 4), 4, min_per_node=1)
    with pytest.raises(ValueError, match="a floor of 1 per node needs 1 entries"):
        topk_mask(torch.ones(1, 1), 0, min_per_node=1)
    with pytest.raises(UserError, match="j = 1 "):
        check_node_floor([("mlp.c_fc.weight", (8, 4))], 1 / 32, 1)


def test_the_floor_error_names_one_matrix_exactly():
    with pytest.raises(UserError) as err:
        check_node_floor([("mlp.c_fc.weight", (8, 4)), ("wte.weight", (8, 4))], 0.125, 4)
    assert str(err.value) == (
        "the floor of j = 4 nonzero weights per neuron / attention channel (train.min_per_row) does not fit "
        "the budget at density 0.125: mlp.c_fc.weight has 8 neurons x 4 = 32 > 4 nonzeros; "
        "raise train.density to at least 1 or lower train.min_per_row")


def test_the_floor_error_names_the_matrix_needing_most_density_and_the_first_on_ties():
    # a: 16 reserved of 64 (needs 1/4); b: 16 of 32 (needs 1/2), named though it sorts later
    shapes = [("a.mlp.c_fc.weight", (8, 8)), ("b.mlp.c_fc.weight", (8, 4))]
    with pytest.raises(UserError, match=r"0\.125: b\.mlp\.c_fc\.weight has .* \(and 1 more\); .* at least 0\.5 "):
        check_node_floor(shapes, 0.125, 2)
    tied = [("blocks.1.mlp.c_fc.weight", (8, 4)), ("blocks.0.mlp.c_fc.weight", (8, 4))]
    with pytest.raises(UserError, match=r": blocks\.1\.mlp\.c_fc\.weight has .* \(and 1 more\)"):
        check_node_floor(tied, 0.125, 2)


def _mlp(width: int = 8) -> nn.Module:
    """A module whose parameters carry the GPT's node-owning names (``mlp.c_fc.weight``)."""
    return nn.ModuleDict({"mlp": nn.ModuleDict({"c_fc": nn.Linear(4, width, bias=False),
                                                "c_proj": nn.Linear(width, 4, bias=False)})})


def test_no_floor_unless_asked():
    # a floor of even one weight per neuron would not fit 1/32 of c_fc: no floor, no error
    s = WeightSparsifier([("mlp.c_fc.weight", nn.Parameter(torch.ones(8, 4)))], 1 / 32, 10)
    assert s.min_per_node == 0 and s.node_axes == [None] and s.min_nonzero_per_node() == {}
    s = WeightSparsifier.from_module(_mlp(), 1 / 32, 10)
    assert s.min_per_node == 0 and s.min_nonzero_per_node() == {}


def test_from_module_leaves_extra_dense_names_alone():
    s = WeightSparsifier.from_module(_mlp(), 0.5, 10, extra_dense=("c_proj",))
    assert s.names == ["mlp.c_fc.weight"]


@pytest.mark.parametrize("first", [torch.ones(1), torch.empty(0)])
def test_apply_projects_every_parameter_after_a_dense_or_empty_one(first):
    g = torch.Generator().manual_seed(0)
    big = nn.Parameter(torch.randn(16, generator=g))
    s = WeightSparsifier([("first", nn.Parameter(first.clone())), ("big", big)], 0.25, 10)
    s.apply(10)
    assert int(torch.count_nonzero(big)) == 4
