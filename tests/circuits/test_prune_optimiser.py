"""The mask optimiser's settings: the paper's beta2 and clipping, lr warmup and decay."""
import pytest
import torch

from circuit_fixtures import toy_examples
from sparsecircuits.circuits.masking import MaskedModel
from sparsecircuits.circuits.prune import _frozen, _resolve_task, make_settings, optimise_tau
from sparsecircuits.config import PruneSettings
from sparsecircuits.errors import UserError


def test_defaults_are_the_papers_optimiser_with_our_lr():
    s = PruneSettings()
    assert (s.beta2, s.grad_clip, s.lr_decay, s.warmup_frac, s.weight_decay) == (0.95, 1.0, "linear", 0.0, 1e-3)
    assert (s.tau_init_mean, s.tau_init_std, s.temperature, s.lr, s.steps) == (0.1, 0.01, 1.0, 2e-2, 30)


def test_lr_schedule_warms_up_then_decays_linearly_or_stays():
    s = PruneSettings(steps=10)
    assert [round(s.lr_factor(i), 6) for i in range(10)] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    w = PruneSettings(steps=10, warmup_frac=0.2)  # 2 warmup steps, then 8 of decay
    assert [round(w.lr_factor(i), 6) for i in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25,
                                                             0.125]
    c = PruneSettings(steps=10, warmup_frac=0.2, lr_decay="constant")
    assert [c.lr_factor(i) for i in range(10)] == [0.5] + [1.0] * 9


@pytest.mark.parametrize("key, value, match", [("beta2", 1.0, "beta2"), ("lr_decay", "cosine", "lr_decay"),
                                               ("warmup_frac", 1.0, "warmup_frac"), ("grad_clip", -1.0, "grad_clip"),
                                               ("tau_init_std", -0.1, "tau_init_std")])
def test_bad_optimiser_settings_are_user_errors(key, value, match):
    with pytest.raises(UserError, match=match):
        make_settings(**{key: value})


def _optimise(run, monkeypatch, **settings):
    """Run a few optimisation steps and report AdamW's betas and the clip calls."""
    seen = {"betas": None, "clips": []}
    adamw, clip = torch.optim.AdamW, torch.nn.utils.clip_grad_norm_

    def spy_adamw(params, **kw):
        seen["betas"] = kw.get("betas")
        return adamw(params, **kw)

    def spy_clip(params, max_norm, *a, **kw):
        seen["clips"].append(max_norm)
        return clip(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy_adamw)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)
    s = PruneSettings(steps=5, batch_pairs=8, length_buckets=1, **settings)
    data = _resolve_task(run, toy_examples(32), None, s, 0)
    with _frozen(run.model):
        tau, _ = optimise_tau(MaskedModel(run.model, None), data, 1e-2, s, seed=0)
    return seen, tau


def test_beta2_and_clipping_reach_the_optimiser(toy_run, monkeypatch):
    seen, tau_paper = _optimise(toy_run, monkeypatch)
    assert seen["betas"] == (0.9, 0.95) and seen["clips"] == [1.0] * 5
    seen, tau_ours = _optimise(toy_run, monkeypatch, beta2=0.999, grad_clip=0.0)
    assert seen["betas"] == (0.9, 0.999) and seen["clips"] == []
    # a tight clip changes Adam's steps only through its moments, but it does change them
    _, tau_tight = _optimise(toy_run, monkeypatch, grad_clip=1e-9)
    assert not torch.equal(tau_paper, tau_ours) and not torch.equal(tau_paper, tau_tight)
