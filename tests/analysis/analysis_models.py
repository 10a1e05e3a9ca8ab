"""Hand-built one-layer models whose circuits are known exactly, for the report card.

The vocabulary is a handful of words (a word-level tokenizer).  The task: the prompt's
last word is ``A`` (answer ``P``) or ``B`` (answer ``Q``), after a few filler words.

Embedding channels (every token has channel 1 = 1 so the RMS norm is never zero):
``A`` writes +1 on channels 0 and 5 and +2 on channel 4; ``B`` the negatives.

* ``honest`` model: neuron 0 = relu(x0), neuron 1 = relu(-x0), mlp_out channel 2 =
  n0 - n1, logit P = +K ch2, logit Q = -K ch2.  Its circuit is exactly
  {mlp_in:0, neuron:0, neuron:1, mlp_out:2}.
* ``cheat`` model: the same path reads channel 5 instead of 0; a second path,
  neuron 2 = relu(x4 - x0) (= relu(x0) in the full model, since x4 = 2 x0), writes
  channel 3, which raises logit Q.  In the full model it fires for ``A`` and slightly
  hurts; with channel 4 mean-ablated it becomes relu(-x0) and fires for ``B``, so the
  node set {mlp_in:0, neuron:2, mlp_out:3} reaches a low calibrated loss by a path the
  model does not use, with two of its three nodes flipping their role.
"""
from __future__ import annotations

import random

import torch

from sparsecircuits.config import ModelConfig, RunConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.run import Run
from sparsecircuits.tasks.base import Task, TaskExample, TaskItem

WORDS = ["<|endoftext|>", "[UNK]", "A", "B", "P", "Q", "x", "y", "z", "C", "D"]
K = 8.0


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return tok


class LastWordTask(Task):
    """``... A`` -> `` P``, ``... B`` -> `` Q`` (or, with ``words=("C", "D")``, a task the
    models cannot do: they ignore C and D)."""

    def __init__(self, name: str = "last_word", words=("A", "B"), filler=(2, 6)) -> None:
        super().__init__(name, "answer from the last word")
        self.words, self.filler = words, filler

    def generate(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        rng = random.Random(f"{self.name}/{split}/{seed}/{self.filler}")
        out = []
        for _ in range(n):
            fill = " ".join(rng.choice(["x", "y", "z", "A", "B"]) for _ in range(rng.randint(*self.filler)))
            a, b = self.words
            out.append(TaskItem(TaskExample(f"{fill} {a}", " P", " Q"), TaskExample(f"{fill} {b}", " Q", " P")))
        return out


def _model(cheat: bool) -> GPT:
    cfg = ModelConfig(vocab_size=len(WORDS), n_layer=1, d_model=8, n_head=1, d_head=4, d_mlp=8, block_size=64,
                      attn_sink=False, afrac=1.0, mlp_activation="relu")
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for name, p in m.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_1.weight") or name.endswith("ln_2.weight"):
                p.fill_(1.0)
        E = m.wte.weight  # (V, D)
        E[:, 1] = 1.0
        A, B, P, Q = (WORDS.index(w) for w in "ABPQ")
        for tok, sgn in ((A, 1.0), (B, -1.0)):
            E[tok, 0] = sgn
            E[tok, 5] = sgn
            E[tok, 4] = 2 * sgn
        fc, proj = m.blocks[0].mlp.c_fc.weight, m.blocks[0].mlp.c_proj.weight  # (d_mlp, D), (D, d_mlp)
        read = 5 if cheat else 0
        fc[0, read], fc[1, read] = 1.0, -1.0
        proj[2, 0], proj[2, 1] = 1.0, -1.0
        m.lm_head.weight[P, 2], m.lm_head.weight[Q, 2] = K, -K
        if cheat:
            fc[2, 0], fc[2, 4] = -1.0, 1.0
            proj[3, 2] = 1.0
            m.lm_head.weight[Q, 3] = K
    return m.eval()


def make_run(tmp_path, cheat: bool) -> Run:
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = _model(cheat)
    return Run(path=tmp_path, config=RunConfig(model=model.cfg), model=model, tokenizer=word_tokenizer())


def means_for(run) -> torch.Tensor:
    """Node means over balanced random windows of the vocabulary's content words."""
    from sparsecircuits.circuits.masking import compute_node_means

    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([WORDS.index(w) for w in ["A", "B", "x", "y", "z"]])
    windows = ids[torch.randint(0, len(ids), (64, 16), generator=g)]
    return compute_node_means(run.model, windows)

