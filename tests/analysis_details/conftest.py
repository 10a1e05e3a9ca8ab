"""Fixtures for the node-details tests: the stdlib tiny data, a hand-built two-layer GPT
with O(1) activations, a run around it, and a small hand-picked circuit on ``if_equals``."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

TASK = "if_equals"
N_TEST = 16  # test pairs: enough for two classes, small enough to be fast
N_WINDOWS = 24
DEAD_NEURON = 5  # layer-0 neuron whose outgoing weights are zeroed

# The hand-made circuit: a bit of every site, a head with partial q/k channels (layer 1
# head 0) and one with all of them (layer 0 head 1), the dead neuron and a strong writer.
CIRCUIT_NAMES = (
    [f"blocks.0.hook_attn_in:{c}" for c in (0, 3, 7)]
    + [f"blocks.0.attn.hook_q:{16 + c}" for c in range(16)]
    + [f"blocks.0.attn.hook_k:{16 + c}" for c in range(16)]
    + ["blocks.0.attn.hook_v:17", "blocks.0.hook_attn_out:4", "blocks.0.hook_mlp_in:2",
       f"blocks.0.mlp.hook_post:{DEAD_NEURON}", "blocks.0.mlp.hook_post:9", "blocks.0.hook_mlp_out:6"]
    + [f"blocks.1.hook_attn_in:{c}" for c in range(0, 32, 3)]
    + ["blocks.1.attn.hook_q:1", "blocks.1.attn.hook_q:4", "blocks.1.attn.hook_k:4", "blocks.1.attn.hook_k:8",
       "blocks.1.attn.hook_v:2", "blocks.1.hook_attn_out:11", "blocks.1.hook_mlp_in:5", "blocks.1.mlp.hook_post:20",
       "blocks.1.hook_mlp_out:13"]
)
STRONG_NODE = "blocks.1.hook_attn_out:11"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    from sparsecircuits.data.build import build_tiny_data

    out = tmp_path_factory.mktemp("details_data")
    return Path(build_tiny_data(out) or out)


@pytest.fixture(scope="session")
def tokenizer(data_dir):
    from sparsecircuits.data.tokenizer import load_tokenizer

    return load_tokenizer(data_dir / "tokenizer.json")


def make_model(vocab_size: int, **overrides) -> torch.nn.Module:
    """A random GPT whose weights are scaled for O(1) pre-activations (so patterns and
    ablation effects are far from trivial), with one neuron cut off from the residual."""
    from sparsecircuits.config import ModelConfig
    from sparsecircuits.model.gpt import GPT

    cfg = ModelConfig(vocab_size=vocab_size, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=128,
                      block_size=96, afrac=1.0)  # dense activations: every kept path matters
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "bigram_table":
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
            elif name.endswith("sink_logit"):
                p.fill_(0.5)
        model.blocks[0].mlp.c_proj.weight[:, DEAD_NEURON] = 0.0
    return model.eval()


def make_run(path: Path, data_dir: Path, tokenizer, **overrides):
    from sparsecircuits.config import RunConfig
    from sparsecircuits.run import Run

    model = make_model(tokenizer.get_vocab_size(), **overrides)
    cfg = RunConfig()
    cfg.model = model.cfg
    cfg.data.data_dir = str(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return Run(path=path, config=cfg, model=model, tokenizer=tokenizer)


def make_circuit(run, names=CIRCUIT_NAMES, task=TASK, ablation="mean"):
    """A Circuit over ``names`` with its graph (including logit nodes), as pruning builds it."""
    from sparsecircuits.circuits import Circuit, NodeSet, build_graph
    from sparsecircuits.circuits.circuit import MODEL_KEYS, encode_for_run
    from sparsecircuits.tasks import get_task

    model = run.model
    nodes = NodeSet.from_model(model)
    keep = nodes.keep_from_names(names)
    batch = encode_for_run(run, get_task(TASK).generate(N_TEST, seed=0, split="test"), TASK)
    prompt_ids = {t for row in batch.tokens.tolist() for t in row}
    answers = set(batch.correct_id.tolist()) | set(batch.incorrect_id.tolist())
    graph = build_graph(model, nodes, keep, None, prompt_ids, answers, run.tokenizer)
    return Circuit(task=task, run=str(run.path), model={k: int(getattr(model.cfg, k)) for k in MODEL_KEYS},
                   nodes=graph["nodes"], links=graph["links"], keep=keep,
                   calibration={"scale": 1.3, "shift": 0.2}, metrics={"ablation": ablation},
                   settings={"n_test": N_TEST}, seed=0)


@pytest.fixture(scope="session")
def run(tmp_path_factory, data_dir, tokenizer):
    return make_run(tmp_path_factory.mktemp("details_run"), data_dir, tokenizer)


@pytest.fixture(scope="session")
def circuit(run):
    return make_circuit(run)


@pytest.fixture(scope="session")
def details(run, circuit):
    from sparsecircuits.analysis.node_details import compute_details

    return compute_details(run, circuit, n_windows=N_WINDOWS, progress=False)
