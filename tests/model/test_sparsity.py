"""Tests for the top-k projection, the L0 / learning-rate schedules and WeightSparsifier."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparsecircuits.errors import UserError
from sparsecircuits.model.sparsity import (
    WeightSparsifier,
    check_node_floor,
    density_at,
    is_dense_name,
    lr_at,
    node_axis,
    nonzero_target,
    project_,
    sparse_parameter_names,
    topk_mask,
)

# ---------------------------------------------------------------- nonzero_target


def test_nonzero_target_rounds_and_clamps():
    assert nonzero_target(1000, 0.1) == 100
    assert nonzero_target(10, 0.25) == 2  # round(2.5) -> 2 (banker's), still in range
    assert nonzero_target(1000, 1e-9) == 1  # never fully zero
    assert nonzero_target(7, 1.0) == 7


@pytest.mark.parametrize("numel,density", [(0, 0.5), (10, 0.0), (10, 1.5), (10, -0.1)])
def test_nonzero_target_rejects_bad_args(numel, density):
    with pytest.raises(ValueError):
        nonzero_target(numel, density)


# ---------------------------------------------------------------- topk_mask / project_


def test_topk_mask_keeps_largest_magnitudes():
    w = torch.tensor([0.1, -5.0, 3.0, -0.2, 4.0])
    assert topk_mask(w, 3).tolist() == [False, True, True, False, True]
    # k above half the size exercises the complement path
    assert topk_mask(w, 4).tolist() == [False, True, True, True, True]


@pytest.mark.parametrize("k", [0, 1, 5, 12, 13, 24])
def test_exact_count_with_all_equal_values(k):
    w = torch.full((4, 6), -2.0)
    assert int(topk_mask(w, k).sum()) == k


@pytest.mark.parametrize("k", [1, 17, 50, 51, 99])
def test_exact_count_with_integer_ties(k):
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-3, 4, (10, 10), generator=g).float()
    mask = topk_mask(w, k)
    assert int(mask.sum()) == k
    # every kept entry is at least as large as every dropped one
    a = w.abs()
    if 0 < k < w.numel():
        assert a[mask].min() >= a[~mask].max()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    density=st.floats(0.001, 1.0),
    levels=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_project_exact_count_property(rows, cols, density, levels, seed):
    g = torch.Generator().manual_seed(seed)
    # values in 1..levels with random sign: heavy ties, never zero
    w = torch.randint(1, levels + 1, (rows, cols), generator=g).float()
    w *= torch.where(torch.rand(rows, cols, generator=g) < 0.5, -1.0, 1.0)
    before = w.clone()
    k = nonzero_target(w.numel(), density)
    mask = project_(w, k)
    assert int(mask.sum()) == k
    assert int(torch.count_nonzero(w)) == k
    assert torch.equal(w[mask], before[mask])  # kept entries unchanged
    if k < w.numel():
        assert before.abs()[mask].min() >= before.abs()[~mask].max()


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 10),
    cols=st.integers(1, 10),
    j=st.integers(1, 5),
    axis=st.sampled_from([0, 1]),
    density=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_node_floor_property(rows, cols, j, axis, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    k = nonzero_target(w.numel(), density)
    nodes, length = w.shape[axis], w.shape[1 - axis]
    assume(nodes * min(j, length) <= k)  # a floor that fits (the other case is an error, below)
    mask = project_(w, k, min_per_node=j, node_axis=axis)
    assert int(mask.sum()) == k
    assert int(torch.count_nonzero(w)) == k
    per_node = (w != 0).sum(dim=1 - axis)  # (nodes,)
    assert int(per_node.min()) >= min(j, length)


def test_node_floor_keeps_each_rows_largest_entries():
    # row 1 is tiny everywhere: plain top-k would zero it completely
    w = torch.tensor([[10.0, 9.0, 8.0, 7.0], [0.1, 0.3, 0.2, 0.01], [6.0, 5.0, 4.0, 3.0]])
    assert int(topk_mask(w, 4)[1].sum()) == 0
    mask = topk_mask(w, 4, min_per_node=1)
    assert int(mask.sum()) == 4
    assert mask[1].tolist() == [False, True, False, False]  # the row's largest |w|
    assert bool(mask[0, 0]) and bool(mask[2, 0])  # each row's best is guaranteed
    assert bool(mask[0, 1])  # the remaining slot goes to the global best of the rest


def test_node_floor_along_columns():
    # column 2 is tiny: a c_proj-like (out, in) weight whose neuron 2 would lose every output weight
    w = torch.tensor([[5.0, 4.0, 0.01, 3.0], [6.0, 2.0, 0.03, 1.0], [7.0, 8.0, 0.02, 9.0]])
    assert int(topk_mask(w, 6)[:, 2].sum()) == 0
    assert int(topk_mask(w, 6, min_per_node=1, node_axis=0)[:, 2].sum()) == 0  # a row floor does not help
    mask = topk_mask(w, 9, min_per_node=2, node_axis=1)  # 4 columns x 2 floored, 1 more by magnitude
    assert int(mask.sum()) == 9
    assert mask[:, 2].tolist() == [False, True, True]  # the tiny column keeps its two largest
    assert mask.sum(dim=0).tolist() == [3, 2, 2, 2]  # the free slot went to the best of the rest, w[0, 0]
    assert bool(mask[0, 0])


def test_node_floor_that_does_not_fit_is_an_error_not_a_lower_floor():
    w = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="needs 32 entries"):
        topk_mask(w, 10, min_per_node=4)  # 8 rows x 4 > 10
    with pytest.raises(ValueError, match="needs 20 entries"):
        topk_mask(w, 10, min_per_node=4, node_axis=1)  # 5 columns x 4 > 10
    assert int(topk_mask(w, 20, min_per_node=4, node_axis=1).sum()) == 20  # exactly fits
    # a node shorter than j keeps all it has: 8 rows of 5 entries, j = 9 -> every entry
    assert bool(topk_mask(w, 40, min_per_node=9).all())


def test_node_floor_needs_2d_and_an_axis():
    with pytest.raises(ValueError):
        topk_mask(torch.randn(10, generator=torch.Generator().manual_seed(0)), 3, min_per_node=1)
    with pytest.raises(ValueError):
        topk_mask(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)), 3, min_per_node=1, node_axis=2)


def test_topk_mask_rejects_bad_k():
    with pytest.raises(ValueError):
        topk_mask(torch.randn(5, generator=torch.Generator().manual_seed(0)), 6)
    with pytest.raises(ValueError):
        topk_mask(torch.randn(5, generator=torch.Generator().manual_seed(0)), -1)


def test_full_k_is_a_noop():
    w = torch.randn(6, 7, generator=torch.Generator().manual_seed(0))
    w[0, 0] = 0.0
    before = w.clone()
    mask = project_(w, w.numel())
    assert bool(mask.all())
    assert torch.equal(w, before)


def test_zeroed_weight_can_come_back():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    project_(w, 3)
    assert w.tolist() == [0.0, 0.0, 0.0, 4.0, 5.0, 6.0]
    w += torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # a dense update revives entry 0
    mask = project_(w, 3)
    assert int(mask.sum()) == 3 and int(torch.count_nonzero(w)) == 3
    assert w.tolist() == [10.0, 0.0, 0.0, 0.0, 5.0, 6.0]


def test_project_on_parameter_without_grad_error():
    p = torch.nn.Parameter(torch.randn(20, 30, generator=torch.Generator().manual_seed(0)))
    project_(p, 50)  # in place on a leaf that requires grad: must not raise
    assert int(torch.count_nonzero(p)) == 50
    assert p.requires_grad


# ---------------------------------------------------------------- density_at


@pytest.mark.parametrize("kind", ["linear", "geometric"])
def test_density_endpoints(kind):
    assert density_at(0, 1000, 0.01, 0.5, kind) == 1.0
    assert density_at(500, 1000, 0.01, 0.5, kind) == pytest.approx(0.01)
    assert density_at(1000, 1000, 0.01, 0.5, kind) == pytest.approx(0.01)
    assert density_at(5000, 1000, 0.01, 0.5, kind) == pytest.approx(0.01)


def test_density_middle_values():
    # halfway through the anneal (step 250 of a 500-step anneal)
    assert density_at(250, 1000, 0.01, 0.5, "linear") == pytest.approx(0.505)
    assert density_at(250, 1000, 0.01, 0.5, "geometric") == pytest.approx(0.1)
    assert density_at(400, 1000, 0.1, 0.8, "linear") == pytest.approx(0.55)


def test_density_is_monotone_non_increasing():
    for kind in ("linear", "geometric"):
        vals = [density_at(s, 100, 0.05, 0.6, kind) for s in range(101)]
        assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_density_zero_anneal_is_target_from_start():
    assert density_at(0, 100, 0.2, 0.0) == pytest.approx(0.2)


def test_dense_schedule_is_always_one():
    assert all(density_at(s, 50, 1.0) == 1.0 for s in range(60))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(step=-1, total_steps=10, target_density=0.1),
        dict(step=0, total_steps=0, target_density=0.1),
        dict(step=0, total_steps=10, target_density=0.0),
        dict(step=0, total_steps=10, target_density=1.5),
        dict(step=0, total_steps=10, target_density=0.1, anneal_frac=1.5),
        dict(step=0, total_steps=10, target_density=0.1, kind="cosine"),
    ],
)
def test_density_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        density_at(**kwargs)


# ---------------------------------------------------------------- lr_at


def test_lr_warmup_decay():
    # total 1000, warmup 1% = 10 steps
    assert lr_at(0, 1000, 1.0) == pytest.approx(0.1)
    assert lr_at(4, 1000, 1.0) == pytest.approx(0.5)
    assert lr_at(9, 1000, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 1000, 1.0) == pytest.approx(1.0)
    assert lr_at(505, 1000, 1.0) == pytest.approx(0.5)
    assert lr_at(999, 1000, 1.0) == pytest.approx(1 / 990)
    assert lr_at(1000, 1000, 1.0) == 0.0


def test_lr_warmup_at_least_one_step():
    # warmup_frac * total < 1 still gives a 1-step warmup: full lr at step 0
    assert lr_at(0, 50, 2.0, warmup_frac=0.001) == pytest.approx(2.0)
    assert lr_at(0, 50, 2.0, warmup_frac=0.0) == pytest.approx(2.0)


def test_lr_sharkfin_scaling():
    assert lr_at(500, 1000, 1e-3, density=0.01) == pytest.approx(10 * lr_at(500, 1000, 1e-3))
    assert lr_at(3, 1000, 1.0, density=0.25) == pytest.approx(2 * 0.4)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(step=0, total_steps=10, base_lr=-1.0),
        dict(step=0, total_steps=10, base_lr=1.0, density=0.0),
        dict(step=0, total_steps=10, base_lr=1.0, warmup_frac=2.0),
        dict(step=-3, total_steps=10, base_lr=1.0),
    ],
)
def test_lr_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        lr_at(**kwargs)


# ---------------------------------------------------------------- names / WeightSparsifier


class _Tiny(torch.nn.Module):
    """Parameter names shaped like the GPT's, without depending on it."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(50, 16)
        self.ln_f = torch.nn.LayerNorm(16)
        self.blocks = torch.nn.ModuleList([torch.nn.Module()])
        b = self.blocks[0]
        b.ln_1 = torch.nn.LayerNorm(16)
        b.attn = torch.nn.Module()
        b.attn.c_attn = torch.nn.Linear(16, 48)
        b.attn.sink_logit = torch.nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(0)))
        b.mlp = torch.nn.Module()
        b.mlp.c_fc = torch.nn.Linear(16, 64, bias=False)
        b.mlp.c_proj = torch.nn.Linear(64, 16, bias=False)
        self.lm_head = torch.nn.Linear(16, 50, bias=False)
        self.bigram_table = torch.nn.Parameter(torch.randn(50, 50, generator=torch.Generator().manual_seed(0)))


SPARSE = [
    "wte.weight",
    "blocks.0.attn.c_attn.weight",
    "blocks.0.attn.c_attn.bias",
    "blocks.0.mlp.c_fc.weight",
    "blocks.0.mlp.c_proj.weight",
    "lm_head.weight",
]


def test_sparse_parameter_names_defaults_and_extra():
    m = _Tiny()
    assert sorted(sparse_parameter_names(m.named_parameters())) == sorted(SPARSE)
    names = sparse_parameter_names(m.named_parameters(), extra_dense=("wte",))
    assert "wte.weight" not in names and "lm_head.weight" in names
    assert is_dense_name("blocks.3.ln_2.weight") and is_dense_name("final_norm.weight")
    assert not is_dense_name("blocks.0.attn.c_proj.bias")


@pytest.mark.parametrize("kind", ["linear", "geometric"])
@pytest.mark.parametrize("min_per_node", [0, 2])
def test_sparsifier_reaches_exact_target(kind, min_per_node):
    torch.manual_seed(0)
    m = _Tiny()
    dense_before = {n: p.detach().clone() for n, p in m.named_parameters() if n not in SPARSE}
    sp = WeightSparsifier.from_module(
        m, target_density=0.25, total_steps=100, anneal_frac=0.5, kind=kind, min_per_node=min_per_node
    )
    assert sorted(sp.names) == sorted(SPARSE)
    assert sp.apply(100) == pytest.approx(0.25)
    stats = sp.stats()
    assert sorted(stats) == sorted(SPARSE)
    for n, s in stats.items():
        assert s["nonzero"] == nonzero_target(s["numel"], 0.25), n  # exact, floor or not
    total = sum(s["numel"] for s in stats.values())
    assert sp.nonzero_fraction() == pytest.approx(sum(s["nonzero"] for s in stats.values()) / total)
    for n, p in m.named_parameters():
        if n in dense_before:
            assert torch.equal(p, dense_before[n]), n  # norm / sink / bigram untouched


def test_node_axes_of_the_gpt_parameters():
    assert node_axis("blocks.3.mlp.c_fc.weight") == 0  # a neuron's input weights: its row
    assert node_axis("blocks.3.mlp.c_proj.weight") == 1  # its output weights: its column
    assert node_axis("blocks.0.attn.c_attn.weight") == 0  # a q/k/v channel's input weights: its row
    assert node_axis("blocks.0.attn.c_proj.weight") == 1  # a v channel's output weights: its column
    for name in ("wte.weight", "lm_head.weight", "wpe.weight", "blocks.0.mlp.c_fc.bias", "bigram_table"):
        assert node_axis(name) is None, name


def test_sparsifier_floors_every_neuron_and_channel_but_not_token_rows():
    torch.manual_seed(0)
    m = _Tiny()
    with torch.no_grad():
        m.blocks[0].mlp.c_fc.weight[5] *= 1e-4  # neuron 5's input weights are all tiny
        m.blocks[0].mlp.c_proj.weight[:, 9] *= 1e-4  # neuron 9's output weights are all tiny
        m.blocks[0].attn.c_attn.weight[40] *= 1e-4  # one v channel (rows 32..47) is tiny
        m.wte.weight[7] *= 1e-4  # a token's embedding row is tiny: no floor for it
    sp = WeightSparsifier.from_module(m, 0.25, 10, anneal_frac=0.0, min_per_node=4)
    sp.apply(10)
    b = m.blocks[0]
    fc, proj, attn = b.mlp.c_fc.weight, b.mlp.c_proj.weight, b.attn.c_attn.weight
    assert int((fc != 0).sum(dim=1).min()) >= 4 and int((fc[5] != 0).sum()) == 4
    assert int((proj != 0).sum(dim=0).min()) >= 4 and int((proj[:, 9] != 0).sum()) == 4
    assert int((attn != 0).sum(dim=1).min()) >= 4 and int((attn[40] != 0).sum()) == 4
    assert sp.min_nonzero_per_node() == {"blocks.0.attn.c_attn.weight": 4, "blocks.0.mlp.c_fc.weight": 4,
                                         "blocks.0.mlp.c_proj.weight": 4}
    assert int(torch.count_nonzero(m.wte.weight[7])) == 0  # embedding rows are not nodes
    for n, s in sp.stats().items():
        assert s["nonzero"] == nonzero_target(s["numel"], 0.25), n
    # the 1-D bias was projected without a floor
    assert int(torch.count_nonzero(b.attn.c_attn.bias)) == nonzero_target(48, 0.25)


def test_floor_that_does_not_fit_the_budget_stops_before_training():
    m = _Tiny()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    # at density 0.1, c_attn (48, 16) keeps 77 entries: 48 channels x 4 = 192 do not fit (c_fc and
    # c_proj neither); the message names the first matrix needing the highest density
    with pytest.raises(UserError, match=r"c_attn\.weight has 48 q/k/v channels x 4 = 192 > 77 nonzeros "
                                        r"\(and 2 more\)") as e:
        WeightSparsifier.from_module(m, 0.1, 10, min_per_node=4)
    assert "raise train.density to at least 0.25" in str(e.value)
    # two misfits: the one needing the higher density (c_attn, 0.375 against c_fc's 0.1875) is named
    with pytest.raises(UserError, match=r"c_attn\.weight has 48 q/k/v channels x 3 = 144 > 58 nonzeros "
                                        r"\(and 1 more\); raise train\.density to at least 0\.375"):
        check_node_floor([("blocks.0.mlp.c_fc.weight", (64, 16)), ("blocks.0.attn.c_attn.weight", (48, 8))],
                         0.15, 3)
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())  # nothing touched
    check_node_floor([("blocks.0.mlp.c_fc.weight", (64, 16))], 0.25, 4)  # exactly fits: fine
    check_node_floor([("wte.weight", (50, 16))], 0.01, 4)  # no node axis: never checked
    WeightSparsifier.from_module(m, 0.1, 10, min_per_node=0)  # no floor, no check


def test_sparsifier_anneal_midway_and_dense_noop():
    torch.manual_seed(0)
    m = _Tiny()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    sp = WeightSparsifier.from_module(m, 0.1, 100, anneal_frac=0.5)
    assert sp.apply(0) == 1.0
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())
    assert sp.nonzero_fraction() == 1.0
    d = sp.apply(25)
    assert d == pytest.approx(0.55)
    for n, s in sp.stats().items():
        assert s["nonzero"] == nonzero_target(s["numel"], d), n


def test_sparsifier_with_training_updates_keeps_exact_counts():
    torch.manual_seed(0)
    m = _Tiny()
    sp = WeightSparsifier.from_module(m, 0.2, 6, anneal_frac=0.5)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for step in range(1, 7):
        x = torch.randint(0, 50, (4, 8))
        h = m.wte(x)
        h = h + m.blocks[0].mlp.c_proj(torch.relu(m.blocks[0].mlp.c_fc(h)))
        loss = torch.nn.functional.cross_entropy(m.lm_head(h).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = sp.apply(step)
        for n, s in sp.stats().items():
            assert s["nonzero"] == nonzero_target(s["numel"], d), (step, n)
    assert d == pytest.approx(0.2)


def test_sparsifier_validates_schedule_args():
    p = [("w", torch.nn.Parameter(torch.randn(3, 3, generator=torch.Generator().manual_seed(0))))]
    with pytest.raises(ValueError):
        WeightSparsifier(p, target_density=0.0, total_steps=10)
    with pytest.raises(ValueError):
        WeightSparsifier(p, target_density=0.1, total_steps=10, kind="step")
    with pytest.raises(ValueError):
        WeightSparsifier(p, target_density=0.1, total_steps=10, min_per_node=-1)


def test_empty_sparsifier_is_dense():
    sp = WeightSparsifier([], 0.1, 10)
    assert sp.apply(10) == pytest.approx(0.1)
    assert sp.stats() == {} and sp.nonzero_fraction() == 1.0
    assert math.isfinite(sp.density(3))
