"""The 20 generators and the control: single-token answers, minimal pairs, splits, seeds."""
from __future__ import annotations

import pytest

from sparsecircuits.errors import UserError
from sparsecircuits.tasks import (
    ANSWER_TOKENS,
    CONTROL_TASKS,
    TASKS,
    encode_examples,
    flatten,
    get_task,
    nonsense_task,
    task_names,
)
from sparsecircuits.tasks.python_tasks import FEMALE_NAMES, MALE_NAMES, split_of

PAPER_TASKS = [
    "single_double_quote", "bracket_counting", "set_or_string", "set_or_string_fixedvarname",
    "final_kwarg", "class_init", "with_as", "bracket_brace", "with_open", "for_while",
    "else_elif", "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func",
    "if_equals", "enumerate_range", "var_if", "while_return_true",
]
ALL = {**TASKS, **CONTROL_TASKS}
N = 150


def test_the_twenty_spec_tasks_in_order():
    assert task_names() == PAPER_TASKS
    assert all(TASKS[n].description and "\n" not in TASKS[n].description for n in PAPER_TASKS)
    assert "nonsense_name_when" in CONTROL_TASKS and "nonsense_name_when" not in TASKS


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(UserError) as err:
        get_task("no_such_task")
    msg = str(err.value)
    assert "no_such_task" in msg and "bracket_counting" in msg and "while_return_true" in msg
    assert get_task("for_while") is TASKS["for_while"]
    assert get_task("nonsense_name_when") is CONTROL_TASKS["nonsense_name_when"]


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("split", ["train", "test"])
def test_answers_are_single_tokens_and_prompts_fit(tokenizer, name, split):
    items = ALL[name].generate(N, seed=0, split=split)
    assert len(items) == N
    exs = flatten(items)
    batch = encode_examples(tokenizer, exs, task_name=name, max_len=128)  # raises if not single
    assert batch.tokens.shape[0] == 2 * N
    # The small test tokenizer (512 tokens) is less compact than the 2048 one; prompts
    # must fit the 96-token context of the cpu-tiny preset under it.
    assert int(batch.last_pos.max()) + 1 <= 96
    assert max(len(ex.prompt) for ex in exs) <= 300
    for ex in exs:
        assert ex.correct in ANSWER_TOKENS and ex.incorrect in ANSWER_TOKENS
        assert not ex.prompt[-1:].isspace()  # the answer token starts the next piece


@pytest.mark.parametrize("name", list(ALL))
def test_pairs_differ_and_answers_swap(name):
    for item in ALL[name].generate(N, seed=3, split="train"):
        assert item.a.prompt != item.b.prompt
        assert item.a.correct == item.b.incorrect and item.a.incorrect == item.b.correct
        assert item.a.correct != item.a.incorrect


@pytest.mark.parametrize("name", list(ALL))
def test_train_and_test_share_no_prompt(name):
    task = ALL[name]
    train = {ex.prompt for s in (0, 1) for ex in flatten(task.generate(300, seed=s, split="train"))}
    test = {ex.prompt for s in (0, 1) for ex in flatten(task.generate(300, seed=s, split="test"))}
    assert train and test
    assert not train & test
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "test" for p in test)


@pytest.mark.parametrize("name", list(ALL))
def test_same_seed_same_items_other_seed_other_items(name):
    task = ALL[name]
    assert task.generate(40, seed=7, split="test") == task.generate(40, seed=7, split="test")
    assert task.generate(40, seed=7, split="test") != task.generate(40, seed=8, split="test")
    # A prefix of a longer request is the shorter request.
    assert task.generate(60, seed=7)[:40] == task.generate(40, seed=7)


@pytest.mark.parametrize("name", list(ALL))
def test_items_are_varied(name):
    items = ALL[name].generate(200, seed=0, split="train")
    distinct = {(it.a.prompt, it.b.prompt) for it in items}
    assert len(distinct) == 200  # no repeats in 200 pairs
    lengths = {len(it.a.prompt) for it in items}
    assert len(lengths) >= 8  # different shapes, not one template with names swapped


@pytest.mark.parametrize("name", list(TASKS))
def test_each_answer_is_correct_half_the_time(name):
    exs = flatten(TASKS[name].generate(100, seed=0))
    answers = sorted({ex.correct for ex in exs})
    counts = [sum(ex.correct == a for ex in exs) for a in answers]
    # Pairs swap their answers, so no answer-prior shortcut: each label is correct in
    # exactly as many examples as it is incorrect.
    for a in answers:
        assert sum(ex.correct == a for ex in exs) == sum(ex.incorrect == a for ex in exs)
    assert sum(counts) == 200


def test_all_answer_tokens_are_single_tokens(tokenizer):
    from sparsecircuits.data.tokenizer import check_required_tokens

    check_required_tokens(tokenizer, ANSWER_TOKENS)


def test_answer_tokens_are_required_by_the_tokenizer():
    """A data build keeps exactly ``REQUIRED_TOKENS`` whole; the rest are single bytes or
    newline-plus-indent tokens that BPE learns from any Python corpus."""
    from sparsecircuits.data.required_tokens import REQUIRED_TOKENS
    from sparsecircuits.tasks.python_tasks import NEWLINE_ANSWERS

    rest = [a for a in ANSWER_TOKENS if a not in REQUIRED_TOKENS]
    assert all(len(a) == 1 or a in NEWLINE_ANSWERS for a in rest), rest
    assert "=None" in REQUIRED_TOKENS


def test_generate_rejects_bad_split_and_negative_n():
    with pytest.raises(UserError, match="split"):
        TASKS["for_while"].generate(3, split="validation")
    with pytest.raises(UserError):
        TASKS["for_while"].generate(-1)
    assert TASKS["for_while"].generate(0) == []


# ---------------------------------------------------------------------------- specific tasks


def _items(name, n=60):
    return TASKS[name].generate(n, seed=0, split="train")


def test_quote_answer_matches_opening_quote():
    for it in _items("single_double_quote"):
        for ex in (it.a, it.b):
            last_quote = max(ex.prompt.rfind('"'), ex.prompt.rfind("'"))
            assert ex.correct == ex.prompt[last_quote] + ")"


def test_bracket_counting_depth():
    for it in _items("bracket_counting"):
        for ex in (it.a, it.b):
            line = ex.prompt.splitlines()[-1]
            depth = line.count("[") - line.count("]")
            assert ex.correct == "]" * depth


def test_set_or_string_initialiser_decides():
    for name in ("set_or_string", "set_or_string_fixedvarname"):
        for it in _items(name):
            for ex in (it.a, it.b):
                var = ex.prompt.splitlines()[-1].strip()
                is_set = f"{var} = set()" in ex.prompt
                assert ex.correct == (".add" if is_set else " +=")
                if name == "set_or_string_fixedvarname":
                    assert var == "current"  # the paper's fixed name


def test_class_init_copies_attribute_name():
    for it in _items("class_init"):
        for ex in (it.a, it.b):
            attr = ex.prompt.splitlines()[-1].strip()[len("self."):-len(" =")]
            assert ex.correct == " " + attr
            assert f"self.{ex.incorrect.strip()} = {ex.incorrect.strip()}" in ex.prompt


def test_class_init_has_many_assignment_lines():
    for it in _items("class_init"):
        for ex in (it.a, it.b):
            lines = ex.prompt.splitlines()
            params = lines[[i for i, l in enumerate(lines) if "def __init__" in l][0]]
            copies = [l.strip() for l in lines if l.strip().startswith("self.") and not l.endswith("=")]
            assert len(copies) >= 3  # the paper: "many lines of the form self.x = x"
            for c in copies:
                a, b = c[len("self."):].split(" = ")
                assert a == b and a in params
        assert it.a.prompt.splitlines()[:-2] == it.b.prompt.splitlines()[:-2]


def test_final_kwarg_paper_answers():
    for it in _items("final_kwarg"):
        assert (it.a.correct, it.a.incorrect) == ("=None", "):")
        sig = it.a.prompt.rsplit("def ", 1)[1].split("(", 1)[1].replace("self, ", "")
        assert sig.count("=") == sig.count(",")  # every earlier parameter has a default
        assert "=" not in it.b.prompt.rsplit("def ", 1)[1]


def test_while_return_true_predicts_the_next_indentation():
    seen = set()
    for it in _items("while_return_true"):
        line = it.a.prompt.splitlines()[-1]
        indent = len(line) - len(line.lstrip())
        assert line.strip() == "while True:" and it.b.prompt.splitlines()[-1].strip() == "return True"
        assert it.a.correct == "\n" + " " * (indent + 3)  # one level in
        assert it.b.correct == "\n" + " " * max(indent - 5, 0)  # one level out
        seen.add(indent)
    assert seen == {4, 8}


def test_var_swap_names():
    for it in _items("var_swap"):
        for ex in (it.a, it.b):
            first = ex.prompt.splitlines()[-1].strip().split(",")[0]
            assert ex.correct == " " + first


def test_indent_for_newline_tokens():
    for it in _items("indent_for"):
        line = it.a.prompt.splitlines()[-1]
        indent = len(line) - len(line.lstrip())
        assert line.strip().startswith("for ") and line.endswith(":")
        assert it.a.correct == "\n" + " " * (indent + 3)
        assert it.b.correct == "\n" + " " * (indent - 1)


def test_enumerate_range_loop_variables():
    for it in _items("enumerate_range"):
        assert "," in it.a.prompt.splitlines()[-1] and it.a.correct == " enumerate"
        assert "," not in it.b.prompt.splitlines()[-1] and it.b.correct == " range"


def test_with_open_mode_from_name():
    for it in _items("with_open"):
        assert it.a.correct == "r" and it.b.correct == "w"
        assert any(s in it.a.prompt.splitlines()[-1] for s in ("in", "src", "source", "from"))
        assert any(s in it.b.prompt.splitlines()[-1] for s in ("out", "dst", "dest", "to"))


def test_nonsense_control_keys_on_name_gender():
    task = nonsense_task()
    assert task.name == "nonsense_name_when"
    for it in task.generate(60, seed=0):
        assert it.a.correct == " when" and it.b.correct == " is"
        assert any(it.a.prompt.endswith(n) for n in FEMALE_NAMES)
        assert any(it.b.prompt.endswith(n) for n in MALE_NAMES)
    assert not set(FEMALE_NAMES) & set(MALE_NAMES)
    assert nonsense_task("other").name == "other"
