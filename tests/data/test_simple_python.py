"""Generated simple Python: valid, deterministic, consistent, and free of held-out task items."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from sparsecircuits.cli import main
from sparsecircuits.data.build import build_data
from sparsecircuits.data.leaks import decode_split, find_leaks, occurring
from sparsecircuits.data.simple_python import GENERATOR_NAME, generate_corpus, generate_module
from sparsecircuits.tasks.base import Task, TaskExample, TaskItem

MODULES = [generate_module(0, i) for i in range(300)]


def test_every_module_parses():
    for text in MODULES:
        ast.parse(text)


def test_modules_are_deterministic_across_processes():
    code = "from sparsecircuits.data.simple_python import generate_module; print(generate_module(3, 17))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}).stdout
    assert other == generate_module(3, 17) + "\n"
    assert generate_module(3, 17) != generate_module(4, 17)


def test_corpus_reaches_its_size():
    texts = generate_corpus(50_000, seed=1)
    size = sum(len(t.encode()) for t in texts)
    assert 50_000 <= size < 50_000 + max(len(t.encode()) for t in texts)


def _all_lines():
    return [line for text in MODULES for line in text.splitlines()]


def test_sets_grow_with_add_and_strings_with_plus_equals():
    """A variable's later use matches how it was made (the regularity real code has)."""
    for text in MODULES:
        made = dict(re.findall(r"^\s*(\w+) = (set\(\)|''|\"\")$", text, flags=re.M))
        for name, how in made.items():
            grown = re.findall(rf"^\s*{name}(\.add\(| \+= )", text, flags=re.M)
            want = ".add(" if how == "set()" else " += "
            # the name may be re-made with the other kind later in the module; only a
            # module that makes it one way only must never grow it the other way
            if len(set(re.findall(rf"^\s*{name} = (set\(\)|''|\"\")$", text, flags=re.M))) == 1:
                assert all(g == want for g in grown), (name, how, grown)


def test_files_opened_by_name_read_input_and_write_output():
    seen = {"r": 0, "w": 0}
    for line in _all_lines():
        m = re.search(r"open\((\w+), ['\"](\w+)['\"]\)", line)
        if not m:
            continue
        name, mode = m.groups()
        if name.startswith(("input", "in_", "infile", "src", "source", "data_path", "read")):
            assert mode.startswith("r"), line
            seen["r"] += 1
        if name.startswith(("output", "out", "dst", "dest", "save", "write")):
            assert mode[0] in "wa", line
            seen["w"] += 1
    assert seen["r"] > 5 and seen["w"] > 5


def test_keyword_parameters_come_after_positional_ones():
    n_kw = 0
    for text in MODULES:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                n_kw += len(node.args.defaults)
    assert n_kw > 50  # ast.parse already proves the order; make sure there is something to learn


def test_the_constructs_are_there():
    text = "\n".join(MODULES)
    for needle in ("[[", "]]", "lambda ", " if ", " else ", "elif ", "while True:", "enumerate(",
                   "range(", "with open(", ") as ", "self.", "f'", 'f"', "= set()", "+= ", ".add(",
                   "return True", "__init__", " == "):
        assert needle in text, needle


def _task_with(prompt: str, answer: str) -> Task:
    class One(Task):
        def generate(self, n, seed=0, split="train"):
            return [TaskItem(TaskExample(prompt, answer, "x"), TaskExample(prompt + " ", "x", answer))][:n]

    return One("one", "a fixed item")


def test_occurring_finds_exactly_the_strings_present():
    text = "def f(a):\n    with open(a, 'r') as fh:\n        pass\n"
    assert occurring({"with open(a, 'r", "open(b", "pass\n", ""}, text) == {"with open(a, 'r", "pass\n"}


def test_excluded_strings_never_appear_in_generated_code():
    line = next(line.strip() for line in MODULES[0].splitlines() if len(line.strip()) > 12)
    plain = generate_corpus(200_000, seed=0)
    assert any(line in t for t in plain)
    filtered = generate_corpus(200_000, seed=0, exclude={line})
    assert not any(line in t for t in filtered)
    assert sum(len(t.encode()) for t in filtered) >= 200_000


@pytest.fixture(scope="module")
def simple_data(tmp_path_factory, src_tree_module):
    out = tmp_path_factory.mktemp("simple") / "data"
    return build_data([src_tree_module], out, vocab_size=512, val_frac=0.2, progress=False, simple_bytes=60_000,
                      exclude={"print('hello world')"})


@pytest.fixture(scope="module")
def src_tree_module(tmp_path_factory, stdlib_texts):
    root = tmp_path_factory.mktemp("src")
    for i, text in enumerate(stdlib_texts):
        (root / f"m{i}.py").write_text(text, encoding="utf-8")
    return root


def test_build_puts_generated_code_in_train_only(simple_data):
    manifest = json.loads((simple_data / "manifest.json").read_text())
    meta = json.loads((simple_data / "meta.json").read_text())
    assert manifest["sources"][-1] == GENERATOR_NAME
    generated = [f for f in manifest["files"] if f["source"] == len(manifest["sources"]) - 1]
    assert generated and all(f["split"] == "train" for f in generated)
    assert sum(f["bytes"] for f in generated) >= 60_000
    assert meta["settings"]["simple_bytes"] == 60_000
    assert "print('hello world')" not in decode_split(simple_data)
    assert "self." in decode_split(simple_data)


def test_leak_check_reports_a_planted_item_and_passes_a_clean_one(simple_data, capsys):
    text = decode_split(simple_data)
    present = next(line for line in text.splitlines() if len(line) > 20 and "\n" not in line)
    planted = find_leaks(simple_data, {"planted": _task_with(present[:-1], present[-1])})
    assert planted.n_leaks == 1 and planted.leaks["planted"] == [present]
    clean = find_leaks(simple_data, {"clean": _task_with("zzz_not_in_any_corpus(", "q")})
    assert clean.n_leaks == 0 and clean.checked == {"clean": 2}


def test_check_leaks_cli(simple_data, capsys, tmp_path):
    code = main(["data", "check-leaks", str(simple_data), "--n", "3"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "leak check:" in out
    assert ("0 of" in out) == (code == 0)
    assert main(["data", "check-leaks", str(tmp_path / "nope")]) == 2
