"""`sample --top-k`: only the k likeliest tokens are ever drawn."""
from __future__ import annotations

import torch

from sparsecircuits.cli import main
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT


def test_top_k_1_is_greedy(reference_run, capsys):
    base = ["sample", str(reference_run), "--prompt", "def ", "--tokens", "16"]
    assert main(base + ["--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert main(base + ["--top-k", "1", "--seed", "5"]) == 0
    assert capsys.readouterr().out == greedy
    # without the cut-off, sampling at temperature 1 leaves the greedy path
    assert main(base + ["--top-k", "0", "--temperature", "1", "--seed", "5"]) == 0
    assert capsys.readouterr().out != greedy


def test_every_sampled_token_is_among_the_k_likeliest():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, n_layer=1, d_model=16, n_head=2, d_head=8, d_mlp=32,
                            block_size=32)).eval()
    with torch.no_grad():  # a spread-out next-token distribution, so a cut-off matters
        model.lm_head.weight.mul_(50.0)
    prompt = torch.tensor([[3, 1, 4]])
    gen = torch.Generator().manual_seed(0)
    out = model.generate(prompt, 24, temperature=1.0, top_k=3, generator=gen)  # (1, 27)
    with torch.no_grad():
        logits = model(out[:, :-1])[0]  # (26, V): position t predicts token t + 1
    for t in range(prompt.shape[1] - 1, out.shape[1] - 1):
        top3 = set(logits[t].topk(3).indices.tolist())
        assert int(out[0, t + 1]) in top3, t
    # and without top_k the same seed draws outside the top 3 somewhere
    free = model.generate(prompt, 24, temperature=1.0, top_k=0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        free_logits = model(free[:, :-1])[0]
    outside = [int(free[0, t + 1]) not in set(free_logits[t].topk(3).indices.tolist())
               for t in range(prompt.shape[1] - 1, free.shape[1] - 1)]
    assert any(outside)
