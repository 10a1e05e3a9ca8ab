"""What a checkpoint carries, exactly, and what a damaged one says.

A resumed run is bitwise identical to one that never stopped only if the checkpoint holds
every weight, every AdamW moment and step count, and the RNG state: these tests restore
each into a fresh model and optimizer and compare, then take one more step on both.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from sparsecircuits.config import ModelConfig, RunConfig
from sparsecircuits.errors import UserError
from sparsecircuits.model.gpt import GPT
from sparsecircuits.train.checkpoint import (
    STATE_JSON,
    STATE_TENSORS,
    latest_checkpoint,
    load_checkpoint,
    load_latest,
    pack_state,
    save_checkpoint,
    unpack_state,
)
from sparsecircuits.train.trainer import build_optimizer

CFG = RunConfig(model=ModelConfig(vocab_size=16, n_layer=1, d_model=8, n_head=2, d_head=4, d_mlp=16,
                                  block_size=8, afrac=1.0))
BATCH = torch.randint(0, 16, (3, 8), generator=torch.Generator().manual_seed(7))  # (B, T)


def _step(model, opt) -> None:
    logits = model(BATCH)  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), BATCH[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _fresh(seed: int):
    torch.manual_seed(seed)
    model = GPT(CFG.model)
    return model, build_optimizer(model, CFG)


def _trained():
    """Two AdamW steps; the embedding (first in its group) is frozen, so it has no state."""
    model, opt = _fresh(0)
    model.wte.weight.requires_grad_(False)
    for _ in range(2):
        _step(model, opt)
    model.wte.weight.requires_grad_(True)
    return model, opt


def test_pack_then_unpack_restores_weights_moments_and_rng():
    model, opt = _trained()
    tensors = pack_state(model, opt)
    drawn = torch.rand(5)  # the next numbers of the RNG as it was when packed
    model2, opt2 = _fresh(1)
    unpack_state(tensors, model2, opt2)
    assert torch.equal(torch.rand(5), drawn)
    for (name, p), (_, p2) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p, p2), name
        st, st2 = opt.state[p], opt2.state[p2]
        assert set(st) == set(st2) == (set() if name == "wte.weight" else {"step", "exp_avg", "exp_avg_sq"}), name
        for key in st:
            assert torch.equal(st[key], st2[key]), (name, key)
    assert float(opt2.state[model2.lm_head.weight]["step"]) == 2.0
    # and the next step is the same step
    _step(model, opt)
    _step(model2, opt2)
    for (name, p), (_, p2) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p, p2), name


def test_unpack_is_strict_about_the_weights():
    model, opt = _trained()
    tensors = pack_state(model, opt)
    missing = {k: v for k, v in tensors.items() if k != "model.wte.weight"}
    with pytest.raises(RuntimeError, match="wte.weight"):
        unpack_state(missing, *_fresh(1))
    extra = dict(tensors, **{"model.not_a_weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="not_a_weight"):
        unpack_state(extra, *_fresh(1))


def test_a_checkpoint_on_disk_round_trips(tmp_path):
    model, opt = _trained()
    tensors = pack_state(model, opt)
    path = save_checkpoint(tmp_path / "ckpts", 7, tensors, {"tokens": 42})
    assert path.name == "step_0000007" and latest_checkpoint(tmp_path / "ckpts") == path
    back, meta = load_checkpoint(path)
    assert meta["step"] == 7 and meta["tokens"] == 42
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_latest_of_nothing_is_none(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert latest_checkpoint(tmp_path / "empty") is None


def _three_checkpoints(root):
    tensors = {"w": torch.arange(4.0)}
    return [save_checkpoint(root, s, tensors, {}, keep=3) for s in (1, 2, 3)]


def _damage(path) -> None:
    f = path / STATE_TENSORS
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def test_the_hint_names_the_newest_intact_older_checkpoint(tmp_path):
    root = tmp_path / "ckpts"
    first, second, third = _three_checkpoints(root)
    _damage(third)
    with pytest.raises(UserError) as exc:
        load_latest(root)
    msg = str(exc.value)
    assert msg.startswith(f"checkpoint {third} is corrupt")
    assert f"the older checkpoint {second.name} is intact: delete {third.name} to resume from it" in msg
    _damage(second)  # a damaged older one is not offered
    with pytest.raises(UserError) as exc:
        load_latest(root)
    assert f"the older checkpoint {first.name} is intact: delete {third.name}" in str(exc.value)
    _damage(first)
    with pytest.raises(UserError) as exc:
        load_latest(root)
    assert str(exc.value) == f"checkpoint {third} is corrupt or truncated: checksum mismatch"  # no hint


def test_a_tensor_file_that_matches_its_checksum_but_is_not_safetensors(tmp_path):
    path = save_checkpoint(tmp_path / "ckpts", 3, {"w": torch.zeros(2)}, {})
    (path / STATE_TENSORS).write_bytes(b"not a safetensors file")
    meta = json.loads((path / STATE_JSON).read_text())
    meta["tensors_sha256"] = hashlib.sha256(b"not a safetensors file").hexdigest()
    (path / STATE_JSON).write_text(json.dumps(meta))
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(exc.value).startswith(f"checkpoint {path} is corrupt: ")


@pytest.mark.parametrize("state", [{"tokens": 3}, [1, 2], {"step": "7"}])
def test_a_state_file_without_a_step_is_corrupt(tmp_path, state):
    path = save_checkpoint(tmp_path / "ckpts", 7, {"w": torch.zeros(2)}, {})
    (path / STATE_JSON).write_text(json.dumps(state))
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(exc.value).startswith(f"checkpoint {path} is corrupt: unreadable {STATE_JSON}")
    assert "has no step" in str(exc.value)
