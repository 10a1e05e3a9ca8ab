"""Builders: a GPT whose weights are set by hand, so the circuit for its task is known.

The toy task: prompts are a few ``x`` tokens then ``A`` or ``B``; after ``A`` the answer
is ``P``, after ``B`` it is ``Q``.  The model (1 layer, d_model 4, no AbsTopK, no sink):

* embeddings: every token has 1 on channel 2 (a constant); ``A`` has +1 and ``B`` -1 on
  channel 0;
* attention: all weights zero, so the attention does nothing;
* MLP: neuron 0 = 5 * (mlp_in channel 0), written to residual channel 1 (weight 1);
* unembedding: ``P`` reads channel 1 (x10), ``Q`` reads channel 2 (x5).

So after ``A`` the neuron fires and ``P`` wins; after ``B`` it is silent and ``Q`` (the
constant) wins.  Under zero ablation the circuit is exactly {mlp_in:0, neuron 0,
mlp_out:1}: drop any of them and ``A`` and ``B`` give identical logits.  Channel 0 never
reaches the logits directly (``lm_head`` ignores it), so there is no bypass.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from sparsecircuits.config import ModelConfig, RunConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.tasks.base import TaskExample

VOCAB = {"<|endoftext|>": 0, "x": 1, "A": 2, "B": 3, "P": 4, "Q": 5}
TOY_CIRCUIT = {"blocks.0.hook_mlp_in:0", "blocks.0.mlp.hook_post:0", "blocks.0.hook_mlp_out:1"}


def toy_tokenizer() -> Tokenizer:
    tok = Tokenizer(WordLevel(VOCAB, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = Whitespace()
    return tok


def toy_config() -> ModelConfig:
    return ModelConfig(vocab_size=len(VOCAB), n_layer=1, d_model=4, n_head=1, d_head=2, d_mlp=4,
                       block_size=16, attn_sink=False, afrac=1.0)


def toy_model() -> GPT:
    model = GPT(toy_config())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "norm.weight")):
                p.fill_(1.0)
        model.wte.weight[:, 2] = 1.0
        model.wte.weight[VOCAB["A"], 0] = 1.0
        model.wte.weight[VOCAB["B"], 0] = -1.0
        model.blocks[0].mlp.c_fc.weight[0, 0] = 5.0
        model.blocks[0].mlp.c_proj.weight[1, 0] = 1.0
        model.lm_head.weight[VOCAB["P"], 1] = 10.0
        model.lm_head.weight[VOCAB["Q"], 2] = 5.0
    return model.eval()


def toy_examples(n: int = 64, seed: int = 0) -> list[TaskExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        last = "A" if i % 2 == 0 else "B"
        prompt = " ".join(["x"] * rng.randint(1, 6) + [last])
        out.append(TaskExample(prompt, " P" if last == "A" else " Q", " Q" if last == "A" else " P"))
    return out


def save_run_dir(path: Path, model: GPT, tokenizer: Tokenizer) -> Path:
    """Write a minimal run directory (config, weights, tokenizer) that ``load_run`` accepts."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    RunConfig(model=model.cfg).save(path / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    tokenizer.save(str(path / "tokenizer.json"))
    return path


def random_model(seed: int = 0, **overrides) -> GPT:
    """A small random GPT with AbsTopK and a sink on: the general case for masking tests."""
    cfg = dict(vocab_size=64, n_layer=2, d_model=16, n_head=2, d_head=4, d_mlp=32, block_size=12,
               attn_sink=True, afrac=0.5)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return GPT(ModelConfig(**cfg)).eval()


def write_token_shards(data_dir: Path, val: np.ndarray, vocab_size: int) -> Path:
    """A data dir that ``TokenShards`` opens: ``val`` (uint16 tokens) as both splits."""
    data_dir.mkdir(parents=True, exist_ok=True)
    val = np.asarray(val, dtype=np.uint16)
    for split in ("train", "val"):
        val.tofile(data_dir / f"{split}.bin")
    meta = {"vocab_size": vocab_size, "eot_id": 0, "train_tokens": len(val), "val_tokens": len(val)}
    (data_dir / "meta.json").write_text(json.dumps(meta))
    return data_dir
