"""Node details: every number is recomputed here by a direct route and compared."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import CIRCUIT_NAMES, DEAD_NEURON, N_TEST, N_WINDOWS, STRONG_NODE, TASK, make_circuit, make_run

from sparsecircuits.analysis.node_details import attach_details, compute_details, top_snippets
from sparsecircuits.circuits import MaskedModel
from sparsecircuits.circuits.circuit import encode_for_run
from sparsecircuits.circuits.masking import val_windows
from sparsecircuits.data.shards import TokenShards
from sparsecircuits.errors import UserError
from sparsecircuits.report.graph import _clean_details, normalize_circuit
from sparsecircuits.tasks import TaskExample, flatten, get_task


def _node_acts(model, tokens: torch.Tensor, name: str, cache: dict | None = None) -> torch.Tensor:
    """A node's activation at every position, straight from one full cache: (N, T)."""
    hook, idx = name.rsplit(":", 1)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    act = cache[hook]
    return act.reshape(act.shape[0], act.shape[1], -1)[..., int(idx)]


def _test_batch(run):
    return encode_for_run(run, get_task(TASK).generate(N_TEST, seed=0, split="test"), TASK)


@pytest.fixture(scope="module")
def windows(data_dir, run):
    return val_windows(TokenShards(data_dir).val, N_WINDOWS, run.model.cfg.block_size)


# ---------------------------------------------------------------------------- coverage


def test_every_kept_node_and_logit_node_has_details(details, circuit):
    internal = set(circuit.node_ids)
    assert internal == set(CIRCUIT_NAMES)
    logits = {n["id"] for n in circuit.nodes if n["site"] == "logit"}
    embeds = {n["id"] for n in circuit.nodes if n["site"] == "embed"}
    assert logits and embeds
    assert set(details) == internal | logits  # embed nodes get nothing
    for nid in internal:
        assert {"snippets", "class_acts", "ablation_delta"} <= set(details[nid]), nid
    for nid in logits:
        assert set(details[nid]) == {"class_acts"}


def test_output_is_plain_json_and_survives_the_report_cleaner(details, circuit):
    text = json.dumps(details, allow_nan=False)  # no inf/nan, no tensors
    assert json.loads(text) == details
    for nid, det in details.items():
        clean = _clean_details(det)
        assert set(clean) == set(det), nid
        if "snippets" in det:
            assert clean["snippets"] == det["snippets"]
        if "class_acts" in det:
            assert clean["class_acts"] == det["class_acts"]
        if "pattern" in det:
            assert clean["pattern"] == det["pattern"]
        if "ablation_delta" in det:
            assert clean["ablation_delta"] == det["ablation_delta"]
    data = {**circuit.to_json(), "details": details}
    nodes, _, problems = normalize_circuit(data)
    assert not problems
    assert {n["id"] for n in nodes if n.get("details")} == set(details)


# ---------------------------------------------------------------------------- snippets


def test_snippets_match_direct_activations(details, run, windows):
    dec = lambda ids: [run.tokenizer.decode([int(t)]) for t in ids]  # noqa: E731
    _, cache = run.model.run_with_cache(windows)
    for name in ("blocks.0.hook_attn_in:3", "blocks.0.attn.hook_q:20", "blocks.0.mlp.hook_post:9",
                 "blocks.1.attn.hook_k:8", STRONG_NODE):
        acts = _node_acts(run.model, windows, name, cache)  # (N, T)
        snips = details[name]["snippets"]
        assert len(snips) == 8
        # the first snippet's peak is the node's largest |activation| over the whole sample
        true_max = float(acts.abs().max())
        assert abs(snips[0]["max"]) == pytest.approx(true_max, rel=1e-5)
        # sorted by |max|, strongest first
        peaks = [abs(s["max"]) for s in snips]
        assert peaks == sorted(peaks, reverse=True)
        used_windows = set()
        for s in snips:
            assert len(s["tokens"]) == len(s["acts"]) <= 12
            assert s["acts"][-1] == s["max"]  # the snippet ends at its peak
            # locate the snippet: a window whose peak this is, with these tokens and acts
            hits = []
            for w in range(windows.shape[0]):
                p = int(acts[w].abs().argmax())
                if not math.isclose(float(acts[w, p]), s["max"], rel_tol=1e-5, abs_tol=1e-6):
                    continue
                lo = max(0, p - 12 + 1)
                if dec(windows[w, lo:p + 1].tolist()) != s["tokens"]:
                    continue
                if all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
                       for a, b in zip(acts[w, lo:p + 1].tolist(), s["acts"])):
                    hits.append(w)
            assert hits, f"{name}: snippet {s['tokens']} not found in the direct activations"
            used_windows.add(hits[0])
        assert len(used_windows) == len(snips)  # one snippet per window


def test_top_snippets_ranks_by_magnitude_and_skips_silent_windows():
    acts = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                         [0.5, -3.0, 1.0, 0.0],
                         [0.0, 0.0, 2.0, 0.1],
                         [0.0, 0.0, 0.0, 0.0]])  # (N=4, T=4)
    windows = torch.arange(16).view(4, 4)
    snips = top_snippets(acts, windows, lambda ids: [f"t{i}" for i in ids], n_snippets=5, context=2)
    assert [s["max"] for s in snips] == [-3.0, 2.0]  # all-zero windows are left out
    assert snips[0] == {"tokens": ["t4", "t5"], "acts": [0.5, -3.0], "max": -3.0}
    assert snips[1]["tokens"] == ["t9", "t10"]
    only = top_snippets(acts, windows, lambda ids: [str(i) for i in ids], n_snippets=1, context=8)
    assert len(only) == 1 and only[0]["tokens"] == ["4", "5"]  # clipped at the window start


# ---------------------------------------------------------------------------- class activations


def test_class_acts_match_direct_last_position_activations(details, run, circuit):
    batch = _test_batch(run)
    rows = torch.arange(len(batch))
    for name in ("blocks.0.hook_mlp_in:2", "blocks.1.attn.hook_v:2", STRONG_NODE):
        last = _node_acts(run.model, batch.tokens, name)[rows, batch.last_pos]  # (2*N_TEST,)
        ca = details[name]["class_acts"]
        assert set(ca) == {"a", "b"}
        assert len(ca["a"]) == len(ca["b"]) == N_TEST
        assert ca["a"] == pytest.approx(last[0::2].tolist(), rel=1e-5, abs=1e-6)
        assert ca["b"] == pytest.approx(last[1::2].tolist(), rel=1e-5, abs=1e-6)
    logits = run.model(batch.tokens)[rows, batch.last_pos]  # (2*N_TEST, V)
    for n in circuit.nodes:
        if n["site"] == "logit":
            ca = details[n["id"]]["class_acts"]
            assert ca["a"] == pytest.approx(logits[0::2, n["index"]].tolist(), rel=1e-5, abs=1e-5)
            assert ca["b"] == pytest.approx(logits[1::2, n["index"]].tolist(), rel=1e-5, abs=1e-5)


# ---------------------------------------------------------------------------- ablation


def test_ablation_delta_is_zero_for_a_node_with_no_outgoing_weights(details, run):
    dead, live = f"blocks.0.mlp.hook_post:{DEAD_NEURON}", "blocks.0.mlp.hook_post:9"
    assert run.model.blocks[0].mlp.c_proj.weight[:, DEAD_NEURON].abs().sum() == 0
    assert abs(details[dead]["snippets"][0]["max"]) > 0.1  # it does fire; it just has no effect
    assert details[dead]["ablation_delta"] == 0.0
    assert abs(details[live]["ablation_delta"]) > 1e-5  # its twin with outgoing weights matters


def test_ablation_delta_matches_circuit_evaluate(details, run, circuit):
    items = get_task(TASK).generate(N_TEST, seed=0, split="test")
    base = circuit.evaluate(run, items)["loss"]
    for name in (STRONG_NODE, "blocks.1.hook_mlp_out:13", "blocks.1.attn.hook_v:2"):
        keep = circuit.keep.clone()
        keep[circuit.node_set.index(name)] = False
        want = circuit.evaluate(run, items, keep=keep)["loss"] - base
        assert abs(want) > 1e-5
        assert details[name]["ablation_delta"] == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_empty_circuit_gives_no_details(run):
    circuit = make_circuit(run, names=[])
    assert circuit.n_nodes == 0
    assert compute_details(run, circuit, n_windows=2, progress=False) == {}


# ---------------------------------------------------------------------------- patterns


def _circuit_cache(run, circuit, tokens):
    masked = MaskedModel(run.model, circuit.baseline(), circuit.node_set)
    _, cache = run.model.run_with_cache(tokens, fwd_hooks=masked.hooks(circuit.keep))
    return cache


def test_patterns_are_causal_and_leave_room_for_the_sink(details, run):
    batch = _test_batch(run)
    T = int(batch.last_pos[0]) + 1
    toks = [run.tokenizer.decode([int(t)]) for t in batch.tokens[0, :T]]
    with_pattern = [n for n in CIRCUIT_NAMES if any(f".hook_{k}:" in n for k in "qkv")]
    assert set(with_pattern) == {n for n, d in details.items() if "pattern" in d}
    for name in with_pattern:
        pat = details[name]["pattern"]
        m = torch.tensor(pat["matrix"])
        assert pat["tokens"] == toks and m.shape == (T, T)
        assert torch.all(m.triu(1) == 0)  # causal
        assert torch.all(m >= 0)
        sums = m.sum(-1)
        assert torch.all(sums <= 1 + 1e-5) and torch.all(sums > 0)
        assert torch.all(sums < 1 - 1e-4)  # the sink takes a share (sink logit 0.5)


def test_pattern_with_every_channel_kept_is_the_circuits_pattern(details, run, circuit):
    # layer 0 head 1 keeps all 16 q and k channels: the result is the head's real pattern
    batch = _test_batch(run)
    T = int(batch.last_pos[0]) + 1
    cache = _circuit_cache(run, circuit, batch.tokens[:1, :T])
    real = cache["blocks.0.attn.hook_pattern"][0, 1]  # (T, T)
    for name in ("blocks.0.attn.hook_q:16", "blocks.0.attn.hook_k:31", "blocks.0.attn.hook_v:17"):
        got = torch.tensor(details[name]["pattern"]["matrix"])
        assert torch.allclose(got, real, atol=2e-6), name


def test_pattern_from_partial_channels_uses_only_those_channels(details, run, circuit):
    # layer 1 head 0 keeps q 1, 4 and k 4, 8: scores sum over channels {1, 4, 8}
    batch = _test_batch(run)
    T = int(batch.last_pos[0]) + 1
    cache = _circuit_cache(run, circuit, batch.tokens[:1, :T])
    q = cache["blocks.1.attn.hook_q"][0, :, 0]  # (T, Dh)
    k = cache["blocks.1.attn.hook_k"][0, :, 0]
    ch = [1, 4, 8]
    scores = q[:, ch] @ k[:, ch].T / 4.0  # sqrt(d_head = 16)
    sink = float(run.model.blocks[1].attn.sink_logit[0].detach())
    want = torch.zeros(T, T)
    for i in range(T):
        row = torch.cat([scores[i, :i + 1], torch.tensor([sink])])
        want[i, :i + 1] = torch.softmax(row, 0)[:-1]
    for name in ("blocks.1.attn.hook_q:1", "blocks.1.attn.hook_q:4", "blocks.1.attn.hook_k:8"):
        got = torch.tensor(details[name]["pattern"]["matrix"])
        assert torch.allclose(got, want, atol=2e-6), name
        assert "(1, 4, 8)" in details[name]["pattern"]["title"]
    whole = cache["blocks.1.attn.hook_pattern"][0, 0]
    assert not torch.allclose(want, whole, atol=1e-3)  # the other channels would change it
    assert torch.allclose(torch.tensor(details["blocks.1.attn.hook_v:2"]["pattern"]["matrix"]), whole, atol=2e-6)


def test_pattern_without_a_sink_rows_sum_to_one(tmp_path, data_dir, tokenizer):
    run = make_run(tmp_path / "nosink", data_dir, tokenizer, attn_sink=False)
    circuit = make_circuit(run, names=["blocks.0.attn.hook_q:3", "blocks.0.attn.hook_k:3",
                                       "blocks.0.hook_attn_in:1"], ablation="zero")
    det = compute_details(run, circuit, n_windows=4, n_snippets=2, progress=False)
    m = torch.tensor(det["blocks.0.attn.hook_q:3"]["pattern"]["matrix"])
    assert torch.allclose(m.sum(-1), torch.ones(m.shape[0]), atol=1e-4)
    assert torch.all(m.triu(1) == 0)


# ---------------------------------------------------------------------------- other inputs


def test_user_task_without_examples_gets_snippets_only(run):
    circuit = make_circuit(run, names=["blocks.0.hook_mlp_in:2", STRONG_NODE], task="my_task")
    det = compute_details(run, circuit, n_windows=4, n_snippets=3, progress=False)
    assert set(det) == {"blocks.0.hook_mlp_in:2", STRONG_NODE}
    assert all(set(d) == {"snippets"} and len(d["snippets"]) == 3 for d in det.values())


def test_plain_examples_split_class_acts_by_answer(run):
    circuit = make_circuit(run, names=["blocks.0.hook_mlp_in:2", STRONG_NODE], task="my_task")
    examples = flatten(get_task(TASK).generate(6, seed=1, split="test"))
    plain = [TaskExample(e.prompt, e.correct, e.incorrect) for e in examples]
    det = compute_details(run, circuit, n_windows=4, progress=False, examples=plain)
    ca = det[STRONG_NODE]["class_acts"]
    assert set(ca) == {e.correct for e in plain}
    assert sum(len(v) for v in ca.values()) == len(plain)
    assert "ablation_delta" in det[STRONG_NODE]


def test_circuit_json_input_and_same_result_twice(run, circuit, details):
    again = compute_details(run, json.loads(json.dumps(circuit.to_json())), n_windows=N_WINDOWS, progress=False)
    assert again == details


# ---------------------------------------------------------------------------- attach_details


def _save_run_dir(tmp_path, data_dir, tokenizer):
    from safetensors.torch import save_file

    from sparsecircuits.data.tokenizer import save_tokenizer

    run = make_run(tmp_path / "runs" / "r", data_dir, tokenizer)
    run.config.save(run.path / "config.json")
    save_file(run.model.state_dict(), str(run.path / "model.safetensors"))
    save_tokenizer(tokenizer, run.path / "tokenizer.json")
    return run


def test_attach_details_rewrites_the_circuit_file(tmp_path, data_dir, tokenizer):
    run = _save_run_dir(tmp_path, data_dir, tokenizer)
    circuit = make_circuit(run, names=["blocks.0.hook_mlp_in:2", "blocks.0.attn.hook_q:3",
                                       "blocks.0.attn.hook_k:3", STRONG_NODE])
    path = circuit.save(run.path / "circuits" / TASK / "circuit.json")
    before = json.loads(path.read_text())
    out = attach_details(run.path, TASK, n_windows=8, progress=False)
    assert out == path
    after = json.loads(path.read_text())
    details = after.pop("details")
    assert after == before  # nothing else touched
    assert set(details) >= {"blocks.0.hook_mlp_in:2", "blocks.0.attn.hook_q:3", STRONG_NODE}
    assert "pattern" in details["blocks.0.attn.hook_q:3"]
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind
    from sparsecircuits.circuits import Circuit

    assert Circuit.load(path).node_ids == circuit.node_ids  # still a valid circuit file


def test_attach_details_missing_circuit_is_a_user_error(tmp_path, data_dir, tokenizer, run):
    with pytest.raises(UserError, match="circuit file not found"):
        attach_details(run, "no_such_task", progress=False)


def test_circuit_from_another_model_shape_is_rejected(tmp_path, data_dir, tokenizer, run):
    other = make_run(tmp_path / "wide", data_dir, tokenizer, d_mlp=64)
    circuit = make_circuit(other, names=["blocks.0.hook_mlp_in:2"])
    with pytest.raises(UserError, match="shape"):
        compute_details(run, circuit.to_json(), progress=False)


def test_ablation_deltas_skipping_ablated_sites_are_the_plain_forwards(run, monkeypatch):
    """A circuit that ablates whole sites (all of block 0's MLP, block 1's q and k): the
    ablation deltas computed with that work skipped are those of the full forwards."""
    import sparsecircuits.analysis.node_details as nd
    from sparsecircuits.circuits.skip import dead_sites

    names = [n for n in CIRCUIT_NAMES if not n.startswith(("blocks.0.hook_mlp", "blocks.0.mlp", "blocks.1.attn.hook_q",
                                                             "blocks.1.attn.hook_k"))]
    circuit = make_circuit(run, names).attach(run)
    assert len(dead_sites(circuit.node_set, circuit.keep)) == 5
    batch = encode_for_run(run, get_task(TASK).generate(N_TEST, seed=0, split="test"), TASK)
    flats = circuit.keep.nonzero().flatten().tolist()
    args = (run.model, circuit.baseline(), circuit, batch, flats, circuit.node_set)
    skipped = nd._ablation_deltas(*args)
    monkeypatch.setattr(nd, "skippable", lambda *a: [])
    plain = nd._ablation_deltas(*args)
    assert skipped == plain and any(v != 0 for v in plain.values())
