"""A run directory tests can build in milliseconds: an untrained one-layer GPT with the tiny
test data's tokenizer, so commands that open runs can be exercised without training."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch


def write_untrained_run(out: Path, data_dir: Path, record_data: bool = False) -> Path:
    """Config, tokenizer and seeded weights of a tiny GPT in ``out``; with ``record_data``
    the config names ``data_dir`` as the run's data (commands that read validation code)."""
    from safetensors.torch import save_file

    from sparsecircuits.config import ModelConfig, RunConfig
    from sparsecircuits.data.tokenizer import load_tokenizer
    from sparsecircuits.model.gpt import GPT

    tok = load_tokenizer(data_dir / "tokenizer.json")
    cfg = RunConfig(model=ModelConfig(vocab_size=tok.get_vocab_size(), n_layer=1, d_model=32, n_head=2,
                                      d_head=16, d_mlp=64, block_size=128))
    if record_data:
        cfg.data.data_dir = str(data_dir)
    cfg.save(out / "config.json")
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in GPT(cfg.model).state_dict().items()}, str(out / "model.safetensors"))
    shutil.copy(data_dir / "tokenizer.json", out / "tokenizer.json")
    return out
