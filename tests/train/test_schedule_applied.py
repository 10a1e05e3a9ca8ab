"""The optimiser the loop really steps with: the sharkfin learning rate and AdamW's settings.

``lr_at`` and ``density_at`` are tested on their own in tests/model/test_sparsity.py; these
tests check that the training loop applies them: at chosen steps the learning rate in
every parameter group, at the moment AdamW steps, is ``lr_at(step) / sqrt(density_at(step))``,
and the optimiser has the paper's betas, eps and weight decay on the right parameters.
"""
from __future__ import annotations

import math

import pytest
import torch

from sparsecircuits.config import ModelConfig, RunConfig, TrainConfig, build_config
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparsity import density_at, lr_at
from sparsecircuits.train.trainer import Trainer, build_optimizer

from .conftest import metrics

STEPS = [0, 1, 7, 13, 19, 20, 33, 39]  # warmup, the anneal (density 1 -> 1/4), after it, the last


def _cfg(data, *sets: str) -> RunConfig:
    return build_config("cpu-tiny", sets=[f"data.data_dir={data}", "train.threads=1", *sets])


def _applied_lrs(trainer: Trainer, steps: list[int]) -> dict[int, list[float]]:
    """Run ``train_step`` at each chosen step; the lr of every group when AdamW steps."""
    seen: dict[int, list[float]] = {}
    real = trainer.optimizer.step

    def spy(*args, **kwargs):
        seen[trainer.step] = [g["lr"] for g in trainer.optimizer.param_groups]
        return real(*args, **kwargs)

    trainer.optimizer.step = spy
    for s in steps:
        trainer.step = s  # every schedule is a pure function of the step number
        trainer.train_step()
    return seen


def _expected(cfg: RunConfig, step: int, sharkfin: bool = True) -> float:
    t = cfg.train
    density = density_at(step, t.steps, t.density, t.anneal_frac, t.anneal_kind)
    return lr_at(step, t.steps, t.lr, t.warmup_frac) / (math.sqrt(density) if sharkfin else 1.0)


def test_the_loop_steps_with_the_sharkfin_learning_rate(tiny_data, tmp_path):
    cfg = _cfg(tiny_data)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    seen = _applied_lrs(trainer, STEPS)
    assert sorted(seen) == STEPS
    for step in STEPS:
        want = _expected(cfg, step)
        assert seen[step] == pytest.approx([want] * len(trainer.optimizer.param_groups), rel=1e-12), step
    # the 1/sqrt(density) factor is really there: 2x once the density is 1/4
    t = cfg.train
    assert seen[33][0] == pytest.approx(2 * lr_at(33, t.steps, t.lr, t.warmup_frac), rel=1e-12)
    assert seen[0][0] == pytest.approx(t.lr / math.ceil(t.warmup_frac * t.steps), rel=1e-12)


def test_without_sharkfin_the_loop_uses_the_plain_schedule(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.sharkfin=false")
    seen = _applied_lrs(Trainer(cfg, tmp_path / "run", progress=False), [7, 33])
    for step in (7, 33):
        assert seen[step][0] == pytest.approx(_expected(cfg, step, sharkfin=False), rel=1e-12)


def test_logged_lr_is_the_lr_of_the_logged_step(reference_run):
    cfg = build_config("cpu-tiny")
    for row in metrics(reference_run):  # row "step" counts steps done; the last one was step - 1
        assert row["lr"] == pytest.approx(_expected(cfg, row["step"] - 1), rel=1e-9), row["step"]


# ---------------------------------------------------------------------------- AdamW


def _no_decay(name: str) -> bool:
    """Gains, biases and sink logits: the parameters weight decay must not pull to zero."""
    return name.endswith(".bias") or "norm" in name or "ln_" in name or "sink_logit" in name \
        or name == "final_logits_bias"


def test_adamw_settings_are_the_papers():
    t = TrainConfig()
    assert (t.beta1, t.beta2, t.eps, t.weight_decay, t.grad_clip_rms) == (0.9, 0.95, 0.1, 0.1, 1.0)
    for preset in ("cpu-tiny", "cpu-small", "paper-8L"):  # no preset changes them
        p = build_config(preset).train
        assert (p.beta1, p.beta2, p.eps, p.weight_decay) == (0.9, 0.95, 0.1, 0.1), preset


def test_optimizer_has_the_configured_settings_and_decays_only_matrices():
    cfg = RunConfig(model=ModelConfig(vocab_size=40, n_layer=2, d_model=16, n_head=2, d_head=8, d_mlp=32,
                                      block_size=8, bias=True, final_logits_bias=True, pos_emb=True,
                                      bigram_table=True, attn_sink=True),
                    train=TrainConfig(beta1=0.8, beta2=0.97, eps=0.05, weight_decay=0.3, lr=0.02))
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {}
    for group in opt.param_groups:
        assert group["betas"] == (0.8, 0.97) and group["eps"] == 0.05 and group["lr"] == 0.02
        for p in group["params"]:
            decay[names[id(p)]] = group["weight_decay"]
    assert sorted(decay) == sorted(names.values())  # every parameter, exactly once
    for name, wd in decay.items():
        assert wd == (0.0 if _no_decay(name) else 0.3), name
    assert {n for n, wd in decay.items() if wd == 0.0} >= {
        "blocks.0.ln_1.weight", "blocks.0.attn.sink_logit", "blocks.0.mlp.c_fc.bias", "final_logits_bias"}
    assert decay["wte.weight"] == decay["lm_head.weight"] == decay["blocks.1.attn.c_attn.weight"] == 0.3


def test_the_trainer_steps_that_optimizer(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.beta2=0.99", "train.weight_decay=0.2")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    groups = trainer.optimizer.param_groups
    assert all(g["betas"] == (0.9, 0.99) and g["eps"] == 0.1 for g in groups)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.2]
