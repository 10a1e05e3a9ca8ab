"""Fixtures for the OpenAI-format tests: model folders in that format, written from scratch
(config dict + random, partly zero weights under the format's own names), and run
directories of ours."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

# The released GPTConfig's defaults, written out here independently of the library.
FORMAT_DEFAULTS = {
    "block_size": 1024, "vocab_size": 50304, "n_layer": 12, "n_head": 12, "d_head": None,
    "d_model": 768, "bias": True, "rms_norm": False, "residual_activation_type": "identity",
    "activation_type": "gelu", "afrac": None, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
    "tied_unembed": True, "d_mlp": None, "enable_bigram_table": False, "sink": False,
}

SMALL = {"block_size": 16, "vocab_size": 67, "n_layer": 2, "n_head": 2, "d_model": 32, "rms_norm": True}


def resolved(cfg: dict) -> dict:
    """Defaults filled in, and d_head / d_mlp derived as the format does."""
    c = {**FORMAT_DEFAULTS, **cfg}
    if c.get("n_mlp") is not None:
        c["d_mlp"] = c["n_mlp"]
    c["d_head"] = c["d_head"] or c["d_model"] // c["n_head"]
    c["d_mlp"] = c["d_mlp"] or 4 * c["d_model"]
    return c


def random_openai_state_dict(cfg: dict, seed: int = 0, *, zero_wpe: bool = False,
                             logits_bias: bool = True, causal_buffers: bool = False,
                             density: float = 0.5) -> dict[str, torch.Tensor]:
    """A state dict under the format's names, for ``cfg`` (a beeg_config dict)."""
    c = resolved(cfg)
    g = torch.Generator().manual_seed(seed)
    D, H, Dh, M, V, T = c["d_model"], c["n_head"], c["d_head"], c["d_mlp"], c["vocab_size"], c["block_size"]

    def w(*shape, std=0.3):
        t = torch.randn(*shape, generator=g) * std
        keep = torch.rand(*shape, generator=g) < density
        return t * keep

    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": w(V, D, std=1.0),
        "transformer.wpe.weight": torch.zeros(T, D) if zero_wpe else w(T, D, std=0.5),
    }
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
        sd[p + "attn.c_attn.weight"] = w(3 * H * Dh, D, std=1 / math.sqrt(D) * 2)
        sd[p + "attn.c_proj.weight"] = w(D, H * Dh, std=1 / math.sqrt(H * Dh))
        if c["sink"]:
            sd[p + "attn.attn_imp.sink_logit"] = torch.randn(H, generator=g)
        sd[p + "ln_2.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
        sd[p + "mlp.c_fc.weight"] = w(M, D, std=1 / math.sqrt(D) * 2)
        sd[p + "mlp.c_proj.weight"] = w(D, M, std=1 / math.sqrt(M))
        if c["bias"]:
            sd[p + "attn.c_attn.bias"] = 0.1 * torch.randn(3 * H * Dh, generator=g)
            sd[p + "attn.c_proj.bias"] = 0.1 * torch.randn(D, generator=g)
            sd[p + "mlp.c_fc.bias"] = 0.1 * torch.randn(M, generator=g)
            sd[p + "mlp.c_proj.bias"] = 0.1 * torch.randn(D, generator=g)
        if causal_buffers:  # what a model built with flash=False saves
            sd[p + "attn.bias"] = torch.ones(T, T).tril().view(1, 1, T, T)
    sd["transformer.ln_f.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if c["tied_unembed"] else w(V, D, std=0.5)
    if logits_bias:
        sd["final_logits_bias"] = torch.randn(V, generator=g)
    if c["enable_bigram_table"]:
        sd["bigram_table"] = torch.randn(V, V, generator=g)
    return sd


def write_openai_folder(path: Path, cfg: dict, sd: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "beeg_config.json").write_text(json.dumps(cfg))
    torch.save(sd, path / "final_model.pt")
    return path


def write_our_run(path: Path, model_cfg, seed: int = 0) -> Path:
    """A run directory of ours (config.json + model.safetensors), random weights."""
    from safetensors.torch import save_file

    from sparsecircuits.config import RunConfig
    from sparsecircuits.model.gpt import GPT

    torch.manual_seed(seed)
    model = GPT(model_cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.3 * torch.randn_like(p))  # sink, biases and tables away from their zero init
    path.mkdir(parents=True)
    cfg = RunConfig(model=model_cfg)
    cfg.save(path / "config.json")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if not (model_cfg.tied_unembed and k == "lm_head.weight")}
    save_file(sd, str(path / "model.safetensors"))
    return path


@pytest.fixture
def openai_folder(tmp_path):
    """``make(cfg, name="src", **weight_options) -> (folder, state dict)``."""
    def make(cfg: dict, name: str = "src", seed: int = 0, **opts):
        sd = random_openai_state_dict(cfg, seed=seed, **opts)
        return write_openai_folder(tmp_path / name, cfg, sd), sd
    return make


@pytest.fixture
def our_run(tmp_path):
    """``make(model_cfg, name="run") -> run directory``."""
    def make(model_cfg, name: str = "run", seed: int = 0):
        return write_our_run(tmp_path / name, model_cfg, seed=seed)
    return make


@pytest.fixture
def fmt():
    """The helpers above, for tests that build folders by hand."""
    import types

    return types.SimpleNamespace(SMALL=SMALL, resolved=resolved, state_dict=random_openai_state_dict,
                                 write=write_openai_folder)


# ---------------------------------------------------------------------------- a pruned toy circuit
# The hand-built one-layer model of tests/circuits (its circuit is known exactly).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "circuits"))


@pytest.fixture(scope="module")
def toy_circuit_run(tmp_path_factory):
    """A toy run directory with ``circuits/toy/circuit.json`` pruned and checked by the CLI,
    and the JSONL its task came from: ``(run_dir, tasks_file)``."""
    from circuit_fixtures import save_run_dir, toy_examples, toy_model, toy_tokenizer

    from sparsecircuits.cli import main
    from sparsecircuits.tasks.base import write_jsonl_examples

    base = tmp_path_factory.mktemp("toy_circuit")
    run = save_run_dir(base / "run", toy_model(), toy_tokenizer())
    tasks = base / "toy.jsonl"
    write_jsonl_examples(tasks, toy_examples(48))
    assert main(["prune", str(run), "--tasks-file", str(tasks), "--ablation", "zero", "--steps", "80",
                 "--k-coefs", "0.01", "--no-progress", "--threads", "1"]) == 0
    assert main(["check", str(run), "--task", "toy", "--tasks-file", str(tasks), "--checks",
                 "necessity,sufficiency,random_baseline", "--draws", "2", "--no-progress"]) in (0, 1)
    return run, tasks
