"""The pair format, the metrics, encoding and the JSONL loader."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.tasks import (
    TaskBatch,
    TaskExample,
    TaskItem,
    binary_task_loss,
    encode_examples,
    evaluate_task,
    flatten,
    load_jsonl_examples,
    task_accuracy,
    task_logit_diff,
    task_loss,
    write_jsonl_examples,
)

# ---------------------------------------------------------------------------- metrics


def _hand_batch() -> tuple[torch.Tensor, TaskBatch]:
    # 3 examples, T=3, V=4; the answer logits sit at different last positions.
    logits = torch.zeros(3, 3, 4)
    logits[0, 1, 2] = 3.0  # ex0: last_pos 1, correct 2 (3.0), incorrect 0 (0.0) -> diff 3
    logits[1, 2, 1] = 1.0  # ex1: last_pos 2, correct 3 (0.0), incorrect 1 (1.0) -> diff -1
    logits[1, 0, 3] = 50.0  # a decoy at a position that is not last_pos
    logits[2, 0, 0] = 2.0  # ex2: last_pos 0, correct 0 (2.0), incorrect 1 (2.0) -> diff 0 (tie)
    logits[2, 0, 1] = 2.0
    batch = TaskBatch(
        tokens=torch.zeros(3, 3, dtype=torch.long),
        last_pos=torch.tensor([1, 2, 0]),
        correct_id=torch.tensor([2, 3, 0]),
        incorrect_id=torch.tensor([0, 1, 1]),
    )
    return logits, batch


def test_logit_diff_reads_last_position():
    logits, batch = _hand_batch()
    assert task_logit_diff(logits, batch).tolist() == [3.0, -1.0, 0.0]


def test_loss_is_binary_cross_entropy_over_the_two_answers():
    logits, batch = _hand_batch()
    diffs = [3.0, -1.0, 0.0]
    # BCE with target "correct": -log softmax over the two answer logits, summed over a
    # pair (two prompts) and averaged over pairs: twice the mean over prompts.
    expected = 2 * sum(-math.log(math.exp(d) / (math.exp(d) + 1.0)) for d in diffs) / 3
    assert task_loss(logits, batch).item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_per_pair_like_the_papers_code():
    """One pair, by hand, the way the paper's released loss counts it: the sum over the
    two prompts of -log p(answer) under a softmax over the pair's two answer tokens."""
    la, lb = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])  # logits of (tok, alt)
    # prompt a wants tok, prompt b wants alt
    expected = -(torch.log_softmax(la, 0)[0] + torch.log_softmax(lb, 0)[1]).item()
    diff = torch.tensor([la[0] - la[1], lb[1] - lb[0]])  # correct minus incorrect, (2,)
    assert binary_task_loss(diff).item() == pytest.approx(expected, rel=1e-6)
    # chance: both prompts at p = 1/2 costs 2 ln 2, and more pairs average
    assert binary_task_loss(torch.zeros(6)).item() == pytest.approx(2 * math.log(2))


def test_loss_is_stable_for_large_logits():
    logits, batch = _hand_batch()
    logits = logits * 1e4
    loss = task_loss(logits, batch)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(2 * (0.0 + 1e4 + math.log(2)) / 3, rel=1e-5)


def test_accuracy_counts_ties_as_wrong():
    logits, batch = _hand_batch()
    assert task_accuracy(logits, batch).item() == pytest.approx(1 / 3)


def test_loss_has_gradient_only_on_answer_logits():
    logits, batch = _hand_batch()
    logits.requires_grad_(True)
    task_loss(logits, batch).backward()
    nz = logits.grad.nonzero().tolist()
    assert sorted(map(tuple, nz)) == sorted([(0, 1, 2), (0, 1, 0), (1, 2, 3), (1, 2, 1), (2, 0, 0), (2, 0, 1)])


def test_flatten_keeps_pairs_adjacent():
    a0, b0, a1, b1 = (TaskExample(f"p{i}", "x", "y") for i in range(4))
    assert flatten([TaskItem(a0, b0), TaskItem(a1, b1)]) == [a0, b0, a1, b1]


# ---------------------------------------------------------------------------- encoding


def test_encode_pads_with_eot_and_finds_answer_ids(tokenizer):
    from sparsecircuits.data.tokenizer import EOT, single_token_id

    exs = [
        TaskExample('print("hello', '")', "')"),
        TaskExample("def f(x):\n    for item", " in", ":"),
    ]
    batch = encode_examples(tokenizer, exs, task_name="demo")
    eot = tokenizer.token_to_id(EOT)
    n0 = len(tokenizer.encode(exs[0].prompt).ids)
    n1 = len(tokenizer.encode(exs[1].prompt).ids)
    assert batch.tokens.shape == (2, max(n0, n1))
    assert batch.last_pos.tolist() == [n0 - 1, n1 - 1]
    assert batch.tokens[0, :n0].tolist() == tokenizer.encode(exs[0].prompt).ids
    assert (batch.tokens[0, n0:] == eot).all()
    assert batch.correct_id.tolist() == [single_token_id(tokenizer, '")'), single_token_id(tokenizer, " in")]
    assert batch.incorrect_id.tolist() == [single_token_id(tokenizer, "')"), single_token_id(tokenizer, ":")]


def test_encode_rejects_multi_token_answer_naming_task_and_token(tokenizer):
    ex = TaskExample("x = 1\ny", " = zebra_crossing", " ==")
    with pytest.raises(UserError) as err:
        encode_examples(tokenizer, [ex], task_name="mytask")
    msg = str(err.value)
    assert "mytask" in msg and repr(" = zebra_crossing") in msg
    assert "\n" not in msg


def test_encode_rejects_answer_that_merges_with_prompt(tokenizer):
    # '(' followed by '"' is one token '("', so '"' is never the next token after 'print('.
    ex = TaskExample("print(", '"', "'")
    assert len(tokenizer.encode('"').ids) == 1
    with pytest.raises(UserError, match="quote_task"):
        encode_examples(tokenizer, [ex], task_name="quote_task")


def test_encode_max_len_and_truncate(tokenizer):
    ex = TaskExample("def f(x):\n    for item", " in", ":")
    n = len(tokenizer.encode(ex.prompt).ids)
    with pytest.raises(UserError, match="context"):
        encode_examples(tokenizer, [ex], max_len=n - 1)
    batch = encode_examples(tokenizer, [ex], max_len=n - 1, truncate=True)
    assert batch.tokens.shape == (1, n - 1)
    assert batch.tokens[0].tolist() == tokenizer.encode(ex.prompt).ids[1:]


def test_encode_prepend_eot(tokenizer):
    from sparsecircuits.data.tokenizer import EOT

    ex = TaskExample("for item", " in", ":")
    plain = encode_examples(tokenizer, [ex])
    withbos = encode_examples(tokenizer, [ex], prepend_eot=True)
    assert withbos.tokens[0, 0].item() == tokenizer.token_to_id(EOT)
    assert withbos.tokens[0, 1:].tolist() == plain.tokens[0].tolist()
    assert withbos.last_pos.item() == plain.last_pos.item() + 1


def test_encode_rejects_empty(tokenizer):
    with pytest.raises(UserError):
        encode_examples(tokenizer, [], task_name="t")


# ---------------------------------------------------------------------------- evaluate


def _some_examples():
    return [
        TaskExample('print("hello', '")', "')"),
        TaskExample("print('hello world", "')", '")'),
        TaskExample("def f(x):\n    for item", " in", ":"),
        TaskExample("def f(x):\n    while item", ":", " in"),
        TaskExample("x = [1, 2, 3", "]", "]]"),
    ]


def test_evaluate_matches_unpadded_single_examples(tokenizer, bag_model):
    exs = _some_examples()
    batch = encode_examples(tokenizer, exs)
    got = evaluate_task(bag_model, batch, batch_size=2)
    diffs = []
    for ex in exs:
        single = encode_examples(tokenizer, [ex])
        with torch.no_grad():
            diffs.append(task_logit_diff(bag_model(single.tokens), single).item())
    diffs = torch.tensor(diffs)
    assert got["n"] == len(exs)
    assert got["loss"] == pytest.approx(2 * torch.nn.functional.softplus(-diffs).mean().item(), rel=1e-5)
    assert got["accuracy"] == pytest.approx((diffs > 0).float().mean().item())


def test_evaluate_chunks_and_trims_padding(tokenizer, bag_model):
    exs = _some_examples()
    batch = encode_examples(tokenizer, exs)
    one = evaluate_task(bag_model, batch, batch_size=256)
    bag_model.calls.clear()
    chunked = evaluate_task(bag_model, batch, batch_size=2)
    assert [c[0] for c in bag_model.calls] == [2, 2, 1]
    assert all(c[1] <= batch.tokens.shape[1] for c in bag_model.calls)
    assert min(c[1] for c in bag_model.calls) < batch.tokens.shape[1]  # padding trimmed
    assert chunked["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert chunked["accuracy"] == one["accuracy"]


def test_evaluate_runs_without_grad(tokenizer, bag_model):
    batch = encode_examples(tokenizer, _some_examples())
    seen = []
    orig = bag_model.forward

    def spy(tokens):
        seen.append(torch.is_grad_enabled())
        return orig(tokens)

    bag_model.forward = spy
    evaluate_task(bag_model, batch)
    assert seen and not any(seen)


def test_evaluate_with_real_gpt(tokenizer):
    from sparsecircuits.config import ModelConfig
    from sparsecircuits.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.get_vocab_size(), n_layer=1, d_model=32, n_head=2,
                            d_head=16, d_mlp=64, block_size=128)).eval()
    exs = _some_examples()
    batch = encode_examples(tokenizer, exs, max_len=128)
    res = evaluate_task(model, batch, batch_size=3)
    with torch.no_grad():
        ref = task_loss(model(batch.tokens), batch).item()
    assert res["loss"] == pytest.approx(ref, rel=1e-5)


# ---------------------------------------------------------------------------- JSONL


def test_jsonl_roundtrip_and_blank_lines(tmp_path):
    exs = [TaskExample("a\n  b", " c", " d"), TaskExample('x = "', "y", "z")]
    path = tmp_path / "t.jsonl"
    write_jsonl_examples(path, exs)
    assert load_jsonl_examples(path) == exs
    path.write_text("\n" + path.read_text() + "\n   \n")
    assert load_jsonl_examples(path) == exs


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (['{"prompt": "a", "correct": "b", "incorrect": "c"}', '{"prompt": "a", "correct": "b"}'],
         r":2: missing field 'incorrect'"),
        (['', '{"correct": "b", "incorrect": "c"}'], r":2: missing field 'prompt'"),
        (['{"prompt": "a", "correct": "b", "incorrect": "c"}', "{not json"], r":2: not valid JSON"),
        (['[1, 2]'], r":1: expected a JSON object"),
        (['{"prompt": "a", "correct": 3, "incorrect": "c"}'], r":1: field 'correct' must be"),
        (['{"prompt": "a", "correct": "b", "incorrect": "b"}'], r":1: .*same"),
        (['', '  '], r"no examples"),
    ],
)
def test_jsonl_errors_name_line_and_field(tmp_path, lines, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=pattern) as err:
        load_jsonl_examples(path)
    assert "\n" not in str(err.value)


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_jsonl_examples(tmp_path / "nope.jsonl")


def test_jsonl_lines_are_json(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl_examples(path, [TaskExample("p", "c", "i")])
    assert json.loads(path.read_text().strip()) == {"prompt": "p", "correct": "c", "incorrect": "i"}
