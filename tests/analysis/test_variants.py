"""Shifted task variants and the bracket-counting probes."""
from __future__ import annotations

import pytest

from sparsecircuits.analysis.variants import (
    CODE_PREFIXES,
    bracket_length_items,
    bracket_stray_items,
    variant_items,
    variant_names,
)
from sparsecircuits.tasks import encode_examples, flatten, get_task, task_names


@pytest.fixture(scope="module")
def tok(tiny_data_dir):
    from sparsecircuits.data.tokenizer import load_tokenizer

    return load_tokenizer(tiny_data_dir / "tokenizer.json")


def test_every_task_has_variants_that_tokenize(tok):
    for name in task_names():
        base = get_task(name).generate(8, split="test")
        variants = variant_items(name, base, 8, seed=3)
        assert list(variants) == variant_names(name)
        for vname, items in variants.items():
            assert len(items) == 8
            # answers stay single tokens after the shifted prompts (encode raises otherwise)
            batch = encode_examples(tok, flatten(items), task_name=f"{name}/{vname}")
            assert len(batch) == 16


def test_specific_variants_shift_the_distribution():
    v = variant_items("bracket_counting", [], 20)
    assert set(v) == {"long_lists", "new_names", "in_call"}  # no prefix without base items
    for it in v["long_lists"]:
        assert it.a.prompt.count(",") >= 8 and it.a.correct == "]" and it.b.correct == "]]"
    assert all(it.a.prompt.split("[")[0].endswith(("(", ", ")) for it in v["in_call"])  # a call argument
    q = variant_items("single_double_quote", [], 20)
    assert {"long_string", "new_openers", "deep_nesting"} <= set(q)
    assert all(it.a.correct == '")' and it.b.correct == "')" for it in q["long_string"])


def test_prefix_variant_keeps_answers_and_is_deterministic():
    base = get_task("for_while").generate(10, split="test")
    v1 = variant_items("for_while", base, 10, seed=1)
    v2 = variant_items("for_while", base, 10, seed=1)
    assert v1 == v2
    for orig, shifted in zip(base, v1["prefix_code"]):
        assert shifted.a.prompt.endswith(orig.a.prompt) and shifted.a.prompt != orig.a.prompt
        assert shifted.b.prompt[: -len(orig.b.prompt)] == shifted.a.prompt[: -len(orig.a.prompt)]
        assert (shifted.a.correct, shifted.a.incorrect) == (orig.a.correct, orig.a.incorrect)
        assert shifted.a.prompt[: -len(orig.a.prompt)] in CODE_PREFIXES
    for p in CODE_PREFIXES:  # a prefix never leaves a bracket open
        assert p.count("[") == p.count("]") and p.count("(") == p.count(")") and p.endswith("\n\n")


def test_bracket_probes():
    stray = bracket_stray_items(12, seed=0)
    assert len(stray) == 12
    for it in stray:
        comment, _, code = it.a.prompt.partition("\n")
        assert comment.startswith("#") and comment.count("[") > comment.count("]")
        assert it.a.correct == "]" and it.b.correct == "]]"
    for length in (2, 5, 16):
        for it in bracket_length_items(length, 6):
            assert it.a.prompt.count(",") == length - 1  # a flat list of exactly `length` elements
            assert it.b.prompt.count("[") >= 2
