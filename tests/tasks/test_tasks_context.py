"""Task prompts behind validation code: whole statements, shared by a pair, within budget."""
from __future__ import annotations

import io
import tokenize

import pytest

from sparsecircuits.data.shards import TokenShards
from sparsecircuits.tasks import TASKS, flatten
from sparsecircuits.tasks.context import CodeContext, statement_ends, with_code_context

N_TOKENS = 160


@pytest.fixture(scope="module")
def val(tiny_data_dir, tokenizer):
    shards = TokenShards(tiny_data_dir)
    return shards, tokenizer.decode(shards.val[:].tolist())


def _context(tiny_data_dir, tokenizer, seed=0):
    shards = TokenShards(tiny_data_dir)
    return CodeContext(shards.val, shards.eot_id, tokenizer.decode, span=3 * N_TOKENS + 64, seed=seed)


def _balanced(code: str) -> bool:
    """Python's tokenizer reads the code to its end with no bracket left open (a first
    line indented by 4 k spaces is read inside k ``if 1:`` blocks)."""
    indent = len(code) - len(code.lstrip(" "))
    opener = "".join(" " * (4 * i) + "if 1:\n" for i in range(indent // 4))
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(opener + code).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
    return depth == 0


def test_statement_ends_by_hand():
    code = "import os\n@dec\ndef f(a,\n      b):\n    return [a,\n            b]\nx = '''\n(\n'''\ny = 1"
    ends = statement_ends(code)
    # after "import os", after the return statement, after the string assignment; not after
    # the decorator, the def line, inside the brackets or the string, nor the unfinished last line
    assert [code[:e].splitlines()[-1] for e in ends] == ["import os", "            b]", "'''"]
    assert all(code[e - 1] == "\n" for e in ends)
    assert statement_ends("def f(:\n  x\n") == []  # a syntax error stops the scan, no crash


def test_pairs_share_whole_statements_of_val_code_within_budget(tiny_data_dir, tokenizer, val):
    _, val_text = val
    ctx = _context(tiny_data_dir, tokenizer)
    for name in ("bracket_counting", "class_init", "single_double_quote"):
        items = TASKS[name].generate(12, seed=0, split="test")
        exs = flatten(items)
        long = with_code_context(exs, tokenizer, ctx, N_TOKENS)
        assert len(long) == len(exs)
        used = 0
        for i in range(0, len(exs), 2):
            a, b = long[i], long[i + 1]
            pre_a = a.prompt[: len(a.prompt) - len(exs[i].prompt)]
            pre_b = b.prompt[: len(b.prompt) - len(exs[i + 1].prompt)]
            assert a.prompt.endswith(exs[i].prompt) and b.prompt.endswith(exs[i + 1].prompt)
            assert pre_a == pre_b  # the same code before both prompts of a pair
            assert (a.correct, a.incorrect) == (exs[i].correct, exs[i].incorrect)
            for ex in (a, b):
                assert len(tokenizer.encode(ex.prompt, add_special_tokens=False).ids) <= N_TOKENS
            if pre_a:
                used += 1
                assert pre_a.endswith("\n") and pre_a in val_text  # whole lines of val code
                assert _balanced(pre_a)
        assert used >= len(items) // 2  # most pairs get some context


def test_context_is_seeded_and_fills_the_budget(tiny_data_dir, tokenizer):
    exs = flatten(TASKS["for_while"].generate(10, seed=0, split="test"))
    one = with_code_context(exs, tokenizer, _context(tiny_data_dir, tokenizer), N_TOKENS)
    again = with_code_context(exs, tokenizer, _context(tiny_data_dir, tokenizer), N_TOKENS)
    other = with_code_context(exs, tokenizer, _context(tiny_data_dir, tokenizer, seed=1), N_TOKENS)
    assert one == again and one != other
    short = [len(tokenizer.encode(e.prompt, add_special_tokens=False).ids) for e in exs]
    long = [len(tokenizer.encode(e.prompt, add_special_tokens=False).ids) for e in one]
    assert sum(long) / len(long) > 2 * sum(short) / len(short)
