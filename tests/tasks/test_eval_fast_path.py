"""`tasks eval`'s fast path (tasks/evaluation.py) scores as ``evaluate_task`` does.

It unembeds each prompt's last position only and runs AbsTopK by the C kernel where that
was faster (circuits/frozen.py); the losses and accuracies must be the plain ones, and the
model must come out of ``evaluate_suite`` as it went in.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sparsecircuits.circuits.frozen import kernel_sites
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.model.sparse_linear import frozen_plan
from sparsecircuits.tasks import TASKS, encode_examples, evaluate_task
from sparsecircuits.tasks.evaluation import evaluate_suite, score_last


def _model(vocab: int) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=vocab, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=64,
                            block_size=128, afrac=0.25)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)  # logits far apart, so the accuracies are not decided by rounding
    return model


@pytest.mark.parametrize("batch_size", (1, 5, 256))
def test_last_position_scores_equal_evaluate_task(tokenizer, batch_size):
    model = _model(tokenizer.get_vocab_size())
    exs = TASKS["bracket_counting"].examples(12, seed=1, split="test") + TASKS["var_if"].examples(12, seed=1)
    batch = encode_examples(tokenizer, exs)
    assert len(set(batch.last_pos.tolist())) > 3  # prompts of several lengths, padded in a chunk
    want = evaluate_task(model, batch, batch_size=batch_size)
    for ctx in (torch.enable_grad, lambda: kernel_sites(model)):
        with ctx():
            got = score_last(model, batch, batch_size=batch_size)
        assert got["n"] == want["n"] == 48 and got["accuracy"] == want["accuracy"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-7)
    assert 0.0 < want["accuracy"] < 1.0


def test_evaluate_suite_scores_as_evaluate_task_and_thaws_the_model(tokenizer):
    model = _model(tokenizer.get_vocab_size())
    run = SimpleNamespace(model=model, tokenizer=tokenizer)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = evaluate_suite(run, ["while_return_true", "single_double_quote"], n=10, seed=2, batch_size=7)
    for row in rows:
        exs = TASKS[row["task"]].examples(10, seed=2, split="test")
        want = evaluate_task(model, encode_examples(tokenizer, exs, task_name=row["task"], max_len=128))
        assert row["accuracy"] == want["accuracy"] and row["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert frozen_plan(model) is None and type(model.blocks[0].attn.sparse_q).__name__ == "SiteSparsity"
    assert all(torch.equal(p, params[name]) for name, p in model.named_parameters())
