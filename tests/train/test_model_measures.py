"""The model's own measures: residual kurtosis, dead nodes and activation density."""
from __future__ import annotations

import numpy as np
import torch

from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.train.evaluation import SITE_HOOKS, model_measures


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=16, n_layer=2, d_model=8, n_head=2, d_head=4, d_mlp=32, block_size=6, **kw)
    return GPT(cfg).eval()


def _windows(n: int = 3):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 16, (2, 6), generator=g) for _ in range(n)]


def test_kurtosis_is_that_of_the_final_residual_stream():
    model = _model()
    with torch.no_grad():
        for block in model.blocks:  # blocks write nothing: the final residual is the embedding
            block.attn.c_proj.weight.zero_()
            block.mlp.c_proj.weight.zero_()
    windows = _windows()
    emb = model.wte.weight.detach().double().numpy()
    ids = torch.cat([w.flatten() for w in windows]).numpy()
    c = emb[ids] - emb[ids].mean(1, keepdims=True)
    want = ((c**4).mean(1) / (c**2).mean(1) ** 2).mean()
    got = model_measures(model, windows)
    assert np.isclose(got["residual_kurtosis"], want, rtol=1e-9)
    assert got["tokens"] == ids.size


def test_a_spiky_residual_has_a_higher_kurtosis_than_a_flat_one():
    flat, spiky = _model(), _model()
    with torch.no_grad():
        for m in (flat, spiky):
            for block in m.blocks:
                block.attn.c_proj.weight.zero_()
                block.mlp.c_proj.weight.zero_()
        flat.wte.weight.copy_(torch.randn(16, 8))
        spiky.wte.weight.zero_()
        spiky.wte.weight[:, 0] = 5.0
        spiky.wte.weight[:, 1] = torch.randn(16) * 0.01
    assert model_measures(spiky, _windows())["residual_kurtosis"] > 3 * model_measures(flat, _windows())["residual_kurtosis"]


def test_dead_neurons_and_channels_are_counted():
    model = _model(afrac=1.0)
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[:8].zero_()  # 8 of 32 neurons get no input: GELU(0) = 0
        model.blocks[1].attn.c_attn.weight[:4].zero_()  # 4 of the 8 q channels of layer 1
    m = model_measures(model, _windows())
    assert np.isclose(m["dead_neuron_frac"], 8 / 64)
    assert np.isclose(m["dead_attn_channel_frac"], 4 / (2 * 3 * 8))


def test_activation_density_matches_abstopk():
    m = model_measures(_model(afrac=0.25), _windows())
    assert set(m["activation_density"]) == set(SITE_HOOKS)
    for site, d in m["activation_density"].items():
        assert 0 < d <= 0.25 + 1e-12, site
    dense = model_measures(_model(afrac=1.0), _windows())
    assert dense["activation_density"]["attn_in"] == 1.0
