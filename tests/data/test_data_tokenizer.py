"""The tokenizer keeps task answers single tokens and round-trips source exactly."""
from __future__ import annotations

import json

import pytest

from sparsecircuits.data.required_tokens import REQUIRED_TOKENS
from sparsecircuits.data.tokenizer import (
    EOT,
    check_required_tokens,
    eot_id,
    load_tokenizer,
    save_tokenizer,
    single_token_id,
    train_tokenizer,
)
from sparsecircuits.errors import UserError


def test_required_tokens_are_single_and_decode_to_themselves(tiny_tok):
    check_required_tokens(tiny_tok, REQUIRED_TOKENS)
    for text in REQUIRED_TOKENS:
        tid = single_token_id(tiny_tok, text)
        assert tiny_tok.decode([tid]) == text


def test_vocab_is_exactly_the_requested_size_with_eot_first(tiny_tok):
    assert tiny_tok.get_vocab_size() == 512
    assert eot_id(tiny_tok) == 0
    assert tiny_tok.token_to_id(EOT) == 0


def test_missing_required_tokens_are_forced_into_a_small_vocab(stdlib_texts):
    texts = stdlib_texts
    tok = train_tokenizer(texts, vocab_size=600)
    assert tok.get_vocab_size() == 600
    check_required_tokens(tok, REQUIRED_TOKENS)
    # ".add" can never be learned by BPE alone (the base regex cuts "." from "add").
    assert tok.encode("s.add(x)").tokens == ["s", ".add", "(", "x", ")"]


def test_check_required_tokens_names_every_split_token(stdlib_texts):
    tok = train_tokenizer(stdlib_texts, vocab_size=300, required=[])
    with pytest.raises(UserError) as err:
        check_required_tokens(tok, [".add", "(", ".append"])
    msg = str(err.value)
    assert "'.add'" in msg and "'.append'" in msg
    assert "'('" not in msg
    assert "2 required token(s)" in msg


def test_single_token_id_rejects_multi_token_text(tiny_tok):
    with pytest.raises(UserError, match="not a single token"):
        single_token_id(tiny_tok, "def main():\n    pass")


def test_round_trip_on_corpus_sample(tiny_tok, stdlib_texts):
    texts = list(stdlib_texts)
    texts.append("# -*- coding: utf-8 -*-\r\nname = 'Ünïcødé ✓ 名前'\t\n\n   \n\x0c")
    for text, enc in zip(texts, tiny_tok.encode_batch(texts, add_special_tokens=False)):
        assert tiny_tok.decode(enc.ids) == text


def test_training_is_deterministic(stdlib_texts):
    texts = stdlib_texts[:6]
    a = train_tokenizer(texts, vocab_size=520)
    b = train_tokenizer(texts, vocab_size=520)
    assert a.to_str() == b.to_str()


# (prompt, answer, rest): encode(prompt) + [id(answer)] must prefix encode(prompt + answer + rest)
PREFIX_CASES = [
    ('x = ("hello', '")', ""),
    ("print('hello world", "')", "\n"),
    ('print("hi.', '")', ")"),
    ("x = [[1, 2", "]]", "\n"),
    ("x = [1, 2", "]", ")"),
    ("x = [[1], [2", "]]", ""),
    ("d = {'a'", ":", " 1}"),
    ("l = ['a'", ",", " 'b']"),
    ("for x", " in", " range(3):"),
    ("with open(f)", " as", " fh:"),
    ("x = set()\nx", ".add", "(1)"),
    ("x = ''\nx", " +=", " 'a'"),
    ("if x", " ==", " 1:"),
    ("x", " =", " 1"),
    ("def foo", "(", "x):"),
    ("lambda x", ":", " x"),
    ("def f(a, b", "):", "\n    pass"),
]


@pytest.mark.parametrize("prompt,answer,rest", PREFIX_CASES)
def test_prompt_tokens_are_a_prefix_of_prompt_plus_answer(tiny_tok, prompt, answer, rest):
    full = tiny_tok.encode(prompt + answer + rest).ids
    expected = tiny_tok.encode(prompt).ids + [single_token_id(tiny_tok, answer)]
    assert full[: len(expected)] == expected


def test_a_longer_required_token_wins_at_the_answer_position(tiny_tok):
    # Documented limit: "]" followed by "," is the single token "],".
    full = tiny_tok.encode("x = [[1, 2], [3]]").ids
    assert single_token_id(tiny_tok, "],") in full
    assert single_token_id(tiny_tok, "]") not in full


def test_atoms_only_match_whole_words(tiny_tok):
    pieces = [p for p, _ in tiny_tok.pre_tokenizer.pre_tokenize_str("for i in ints: s.address; s.add(x)")]
    assert "Ġin" in pieces and "Ġints" in pieces
    assert "address" in pieces and ".add" in pieces
    assert pieces.count(".add") == 1


def test_quotes_pair_with_brackets(tiny_tok):
    ids = tiny_tok.encode('print("hi")').ids
    assert single_token_id(tiny_tok, '("') in ids and single_token_id(tiny_tok, '")') in ids
    ids = tiny_tok.encode("{'a': 1}").ids
    assert single_token_id(tiny_tok, "'") in ids and single_token_id(tiny_tok, ":") in ids


def test_save_load_round_trip(tmp_path, tiny_tok):
    path = tmp_path / "tok.json"
    save_tokenizer(tiny_tok, path)
    loaded = load_tokenizer(path)
    text = "def f(x):\n    return [x, 'y']\n"
    assert loaded.encode(text).ids == tiny_tok.encode(text).ids
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_load_missing_or_corrupt_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "nonsense"}))
    with pytest.raises(UserError, match="corrupt"):
        load_tokenizer(bad)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        load_tokenizer(bad)
