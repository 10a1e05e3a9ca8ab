"""The paper's architecture presets: their choices, a floor that fits, and a short real training."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sparsecircuits.cli import main
from sparsecircuits.config import build_config
from sparsecircuits.errors import UserError
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparsity import check_node_floor, is_dense_name, node_axis, nonzero_target

PAPER = ("paper-tiny", "paper-8L")


def _shapes(cfg) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter shapes without allocating them (paper-8L has ~400M parameters)."""
    with torch.device("meta"):
        model = GPT(cfg.model)
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_make_the_papers_choices(preset):
    cfg = build_config(preset)
    m, t = cfg.model, cfg.train
    assert (t.anneal_kind, t.anneal_frac) == ("linear", 0.5)  # linear, over the first half
    assert m.bias and t.sparsify_biases  # sparse biases
    assert m.bigram_table and m.attn_sink and not m.pos_emb and m.d_head == 16
    assert m.afrac == 0.25 and t.sparsify_embeddings
    assert t.min_per_row == 4  # the j = 4 floor, per neuron and per attention channel
    assert (t.beta1, t.beta2, t.eps, t.weight_decay, t.grad_clip_rms) == (0.9, 0.95, 0.1, 0.1, 1.0)


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_floor_fits_the_budget(preset):
    cfg = build_config(preset)
    check_node_floor(_shapes(cfg), cfg.train.density, cfg.train.min_per_row)  # no error


def test_the_papers_sparsest_density_cannot_hold_the_floor_at_width_2048():
    cfg = build_config("paper-8L", sets=["train.density=1/1000"])
    with pytest.raises(UserError, match="raise train.density to at least 0.001953"):  # 1/512
        check_node_floor(_shapes(cfg), cfg.train.density, cfg.train.min_per_row)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from sparsecircuits.data.build import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("paper_data") / "data")


SHORT = ["--set", "train.steps=4", "--set", "train.batch_size=2", "--set", "train.eval_every=4",
         "--set", "train.eval_batches=1", "--set", "train.log_every=2", "--set", "train.checkpoint_every=4",
         "--set", "train.threads=1", "--set", "model.block_size=64"]


def test_paper_tiny_trains_with_exact_counts_and_the_floor(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "paper-tiny", "--data", str(tiny_data), "--out", str(out), "--no-progress",
                 *SHORT]) == 0
    density = build_config("paper-tiny").train.density
    tensors = load_file(str(out / "model.safetensors"))
    assert "bigram_table" in tensors and "blocks.0.mlp.c_fc.bias" in tensors
    floored = 0
    for name, w in tensors.items():
        if is_dense_name(name):
            continue
        assert int(torch.count_nonzero(w)) == nonzero_target(w.numel(), density), name  # exact, biases too
        axis = node_axis(name)
        if axis is not None:
            floored += 1
            assert int((w != 0).sum(dim=1 - axis).min()) >= 4, name  # every neuron / channel keeps j
    assert floored == 4 * 2  # c_attn, attn c_proj, c_fc, mlp c_proj in both layers
    table = tensors["bigram_table"]  # dense: starts at zero, never projected (rows of seen tokens fill in)
    assert is_dense_name("bigram_table") and int(torch.count_nonzero(table)) > nonzero_target(table.numel(), density)


def test_a_floor_that_does_not_fit_stops_before_anything_is_written(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    # c_fc (512, 128) at 1/128 keeps 512 weights: 512 neurons x 4 do not fit
    assert main(["train", "--preset", "paper-tiny", "--data", str(tiny_data), "--out", str(out), "--no-progress",
                 *SHORT, "--set", "train.density=1/128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the budget" in err[0] and "lower train.min_per_row" in err[0]
    assert not out.exists()
