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

import math
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


# ---------------------------------------------------------------------------- learned quotes and brackets
# A one-layer model on the project's own tokenizer that has learned single_double_quote
# and bracket_counting and no other task (described in test_learned_tasks.py).

SINK = 8.0
QUOTE_PATH = {"blocks.0.hook_attn_in:0", "blocks.0.attn.hook_v:0", "blocks.0.hook_attn_out:3"}
BRACKET_PATH = {"blocks.0.hook_attn_in:1", "blocks.0.hook_attn_in:5", "blocks.0.attn.hook_v:1",
                "blocks.0.hook_attn_out:4"}
CLOSE_ONLY = BRACKET_PATH - {"blocks.0.hook_attn_in:1"}  # counts "]" but not "["


def learned_model(tokenizer) -> GPT:
    vocab = tokenizer.get_vocab_size()
    cfg = ModelConfig(vocab_size=vocab, n_layer=1, d_model=6, n_head=2, d_head=1, d_mlp=2, block_size=256,
                      attn_sink=True, afrac=1.0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "norm.weight")) else 0.0)
        emb = model.wte.weight  # (V, 6)
        emb[:, 2] = 1.0
        for i in range(vocab):
            text = tokenizer.id_to_token(i)  # byte-level, but ASCII punctuation is itself
            emb[i, 0] = float('"' in text) - float("'" in text)
            emb[i, 1] = float("[" in text)
            emb[i, 5] = float("]" in text)
        attn = model.blocks[0].attn
        attn.sink_logit.copy_(torch.tensor([-30.0, SINK]))
        attn.c_attn.weight[4, 0] = 1.0  # v:0 <- attn_in:0 (rows: q0 q1 k0 k1 v0 v1)
        attn.c_attn.weight[5, 1] = 1.0  # v:1 <- attn_in:1 ...
        attn.c_attn.weight[5, 5] = 2.0  # ... + 2 attn_in:5
        attn.c_proj.weight[3, 0] = 1.0  # attn_out:3 <- v:0
        attn.c_proj.weight[4, 1] = 1.0  # attn_out:4 <- v:1
        ids = {a: tokenizer.token_to_id(a) for a in ('")', "')", "]", "]]")}
        head = model.lm_head.weight  # (V, 6)
        head[ids['")'], 3], head[ids["')"], 3] = 20.0, -20.0
        head[ids["]]"], 4] = 8000.0
        head[ids["]]"], 2] = -8000.0 * 1.5 * math.sqrt(3.0) / math.exp(SINK)
    return model.eval()


def save_learned_run(out, data_dir):
    """That model as a run directory on ``data_dir``'s tokenizer and validation tokens."""
    import shutil

    from safetensors.torch import save_file

    from sparsecircuits.data.tokenizer import load_tokenizer

    out.mkdir(parents=True)
    tokenizer = load_tokenizer(data_dir / "tokenizer.json")
    model = learned_model(tokenizer)
    cfg = RunConfig(model=model.cfg)
    cfg.data.data_dir = str(data_dir)  # validation tokens for the node means
    cfg.save(out / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    shutil.copy(data_dir / "tokenizer.json", out / "tokenizer.json")
    return out
