"""The presets are the configurations the README and the paper describe."""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.config import ACTIVATION_SITES, PRESETS, build_config
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparsity import nonzero_target
from sparsecircuits.train.trainer import build_sparsifier


def test_cpu_small_is_the_demo_model_of_the_readme():
    cfg = build_config("cpu-small")
    m, t = cfg.model, cfg.train
    # 4 layers, d_model 128, 8 heads of 16, context 128, vocab 2048
    assert (m.n_layer, m.d_model, m.n_head, m.d_head, m.block_size) == (4, 128, 8, 16, 128)
    assert m.vocab_size == cfg.data.vocab_size == 2048
    assert m.d_mlp == 4 * m.d_model
    # density 1/16 on every matrix and embedding; AbsTopK 1/4 at all eight sites
    assert t.density == 1 / 16 and t.sparsify_embeddings and t.sparsify_biases
    assert m.afrac == 0.25 and sorted(m.afrac_sites) == sorted(ACTIVATION_SITES) and len(ACTIVATION_SITES) == 8
    # 2000 steps of 32 windows of 64 tokens (4.1M tokens), lr 0.1, the model's context 128
    assert (t.steps, t.batch_size, t.seq_len, t.lr) == (2000, 32, 64, 0.1)
    assert t.steps * t.batch_size * cfg.seq_len == 4_096_000
    # the standard library plus 50 MB of generated simple Python
    assert cfg.data.simple_bytes == 50_000_000 and not cfg.data.data_dir
    assert t.sharkfin and t.grad_clip_rms == 1.0 and t.warmup_frac == 0.01
    assert not m.pos_emb and m.attn_sink and not m.tied_unembed


def test_cpu_base_is_the_demo_model_trained_six_times_longer():
    """The hour preset differs from the demo's only in tokens and in the kept steps that
    give the tasks-against-time curve; same shape, data, density, AbsTopK and learning rate."""
    small, base = build_config("cpu-small"), build_config("cpu-base")
    assert base.model == small.model and base.data == small.data
    t = base.train
    assert t.steps == 6 * small.train.steps and t.steps * t.batch_size * base.seq_len == 24_576_000
    assert (t.density, t.lr, t.batch_size, t.seq_len) == (1 / 16, 0.1, 32, 64)
    assert base.model.afrac == 0.25 and sorted(base.model.afrac_sites) == sorted(ACTIVATION_SITES)
    assert t.kept_steps() == [2000, 4000, 6000, 8000, 10000, 12000]
    # the schedule's own fractions are the demo's, so the two runs differ only in length
    assert (t.warmup_frac, t.anneal_frac, t.anneal_kind, t.sharkfin) == (
        small.train.warmup_frac, small.train.anneal_frac, small.train.anneal_kind, small.train.sharkfin)


def test_paper_8l_is_the_papers_scale():
    cfg = build_config("paper-8L")
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.d_model, m.d_head, m.block_size, m.vocab_size) == (8, 2048, 16, 256, 2048)
    assert m.d_mlp == 4 * m.d_model and m.n_head * m.d_head == m.d_model
    assert t.density < 1 / 100 and t.anneal_kind == "linear" and t.min_per_row == 4
    assert m.afrac == 0.25 and sorted(m.afrac_sites) == sorted(ACTIVATION_SITES)
    assert (t.device, t.dtype) == ("cuda", "bfloat16")


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_per_neuron_floor_fits_the_density(name):
    """``min_per_row`` nonzeros in every row must fit in the matrix's budget, or the floor
    silently drops (``topk_mask`` lowers it) and the preset is not what it says."""
    cfg = build_config(name)
    with torch.device("meta"):  # shapes only: paper-8L would need gigabytes
        model = GPT(cfg.model)
    sparsifier = build_sparsifier(model, cfg)
    j = cfg.train.min_per_row
    for pname, p in sparsifier.params:
        if p.dim() == 2:
            assert nonzero_target(p.numel(), cfg.train.density) >= p.shape[0] * j, pname


def test_cpu_tiny_fits_every_task_prompt_and_trains_in_seconds():
    cfg = build_config("cpu-tiny")
    m, t = cfg.model, cfg.train
    assert m.block_size >= 72  # the longest task prompt under the 512-token test tokenizer
    assert cfg.data.vocab_size == 512
    assert t.steps * t.batch_size <= 40 * 8 and m.n_layer == 2
    assert t.eval_every <= t.steps and t.checkpoint_every <= t.steps and t.log_every <= t.steps


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "paper-8L"])
def test_every_cpu_preset_builds_a_model(name):
    cfg = build_config(name)
    model = GPT(cfg.model)
    assert model.cfg.d_model == cfg.model.d_model
    assert sum(p.numel() for p in model.parameters()) > 0


def test_the_readme_toml_example(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("""
[model]
n_layer = 4
d_model = 256
afrac = 0.25            # AbsTopK keeps 1/4 of each activation site
attn_sink = true
bigram_table = false

[train]
steps = 4000
density = 0.0625        # 1 in 16 weights nonzero at the end; 1.0 = dense baseline
anneal_frac = 0.5       # L0 goes from dense to the target over the first half
anneal_kind = "geometric"  # or "linear" (the paper's)
""")
    cfg = build_config("cpu-small", config_file=toml, sets=["train.density=1/64", "model.d_model=192"])
    assert (cfg.model.n_layer, cfg.model.afrac, cfg.train.steps, cfg.train.anneal_kind) == (4, 0.25, 4000, "geometric")
    assert cfg.train.density == 1 / 64 and cfg.model.d_model == 192  # --set applies last
    assert cfg.preset == "cpu-small" and cfg.train.lr == 0.1  # the preset stays underneath
