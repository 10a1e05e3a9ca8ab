"""The 20 binary next-token tasks on Python code of the paper's Table 1, plus a nonsense control.

Each task builds a pair of short prompts that look like lines of standard-library code
and differ only where the choice is decided, with answers that swap between the two.
``docs/tasks.md`` lists each task next to the paper's description and every place where
our answer tokens differ from the paper's, and why.

Choices made where the paper is silent:
- Answers are single tokens of our byte-level BPE (``sparsecircuits.data.tokenizer``):
  every required token is a piece of its own (``")``, ``]]``, ``.add``, ``=None``), a
  word carries its leading space (`` in``), and a newline merges with the following
  indentation minus the one space that attaches to the next word (``"\\n" + 7 spaces``
  before an 8-space line). The paper's tokenizer instead ends a punctuation run with
  its newline (``):\\n``, ``]]\\n``); where that differs we keep the punctuation and
  let the newline be the next token. Every answer string is listed in
  ``ANSWER_TOKENS`` so the tokenizer can keep it whole.
- Splits: a prompt belongs to train or test by a hash of its text, and an item is kept
  only if both its prompts belong to the requested split, so no prompt is ever shared
  between train and test, whatever the generator's pools.
- Randomness: ``random.Random`` seeded from the task name, split and seed, so the same
  arguments always give the same items, in any process.
"""
from __future__ import annotations

import hashlib
import random
from typing import Callable, Sequence

from ..errors import UserError
from .base import Task, TaskExample, TaskItem, check_split

# ----------------------------------------------------------------------------- pools

# Identifiers that are single tokens, with their leading space, in a 2048-token BPE
# trained on the standard library; used where the answer copies a name.
NAME_POOL = [
    "name", "value", "key", "data", "path", "size", "text", "file", "type", "args",
    "mode", "line", "result", "index", "count", "item", "node", "parent", "obj", "func",
    "level", "start", "end", "prefix", "source", "target", "base", "root", "offset",
    "default", "message", "error", "code", "state", "config", "options",
    "a", "b", "c", "d", "i", "j", "k", "n", "x", "y", "s", "v",
]

# Free identifiers (any tokenization) for context that is not an answer.
VAR_POOL = NAME_POOL + [
    "items", "entry", "names", "values", "keys", "parts", "lines", "words", "buf",
    "chunk", "record", "field", "attr", "label", "title", "suffix", "elem", "fields",
    "line_no", "lineno", "tokens", "header", "headers", "body", "reader", "writer",
]

ITERABLE_POOL = [
    "items", "self.items", "names", "lines", "args", "data", "values", "keys",
    "self._data", "fields", "entries", "nodes", "self.children", "parts", "files",
    "sys.argv[1:]", "os.listdir(path)", "text.splitlines()", "d.items()", "range(n)",
    "self.handlers", "tokens", "records", "sorted(names)", "reversed(stack)",
]

FUNC_POOL = [
    "process", "parse", "update", "handle", "run", "load", "read_data", "check",
    "_check", "_parse_args", "build", "format_item", "main", "setup", "reset",
    "find", "lookup", "_make", "convert", "visit", "render", "get_value", "add",
    "remove", "validate", "normalize", "collect", "_split", "encode", "decode",
    "open_file", "copy", "dump", "write_data", "get", "apply", "filter_items",
]

CLASS_POOL = [
    "Node", "Entry", "Item", "Record", "Config", "Handler", "Parser", "Reader",
    "Writer", "Token", "Field", "Message", "Request", "Response", "Option", "Element",
    "Event", "Task", "Job", "Server", "Client", "Connection", "Context", "Frame",
    "Buffer", "Cache", "Counter", "Stack", "Queue", "Point", "Rule", "Group",
]

WORD_POOL = [
    "invalid", "value", "no", "such", "file", "expected", "a", "string", "done",
    "cannot", "open", "unknown", "option", "error", "reading", "writing", "missing",
    "argument", "hello", "world", "not", "found", "bad", "name", "for", "the",
    "directory", "empty", "list", "key", "must", "be", "an", "integer", "failed",
    "to", "connect", "server", "closed", "unexpected", "end", "of", "data", "test",
    "skipping", "using", "default", "encoding", "line", "too", "long",
]

# Message texts as they appear in the library (each ends in a letter, so a closing
# quote stays its own token).
PHRASE_POOL = [
    "invalid value", "no such file", "expected a string", "cannot open file", "unknown option",
    "missing argument", "not found", "bad name", "empty list", "key must be a string",
    "failed to connect", "server closed", "unexpected end of data", "line too long", "hello world",
    "done", "skipping test", "using default encoding", "error reading file", "Usage", "OK",
    "ignored", "not implemented", "timed out", "connection refused", "invalid literal for int",
    "list index out of range", "too many values", "argument must be an integer", "no module named",
    "Processing", "Reading", "Writing", "Found", "Removing", "Creating directory", "Warning",
    "Error", "total", "result", "Checking", "Loaded", "Running", "Ran", "Done with", "count",
    "value of x", "object has no attribute", "Saving to", "Skipping",
]

CONDITION_POOL = [
    "{v} is None", "{v} is not None", "not {v}", "{v}", "{v} > 0", "{v} == 0",
    "{v} < 0", "{v} in seen", "self.debug", "verbose", "{v} == 1", "len({v}) > 1",
    "isinstance({v}, str)", "{v}.startswith(prefix)", "self._closed", "{v} != 0",
]

FEMALE_NAMES = [
    "Mary", "Anna", "Emma", "Alice", "Sarah", "Laura", "Julia", "Helen", "Grace",
    "Lisa", "Susan", "Karen", "Linda", "Nancy", "Rachel", "Emily", "Sophie", "Hannah",
    "Olivia", "Claire", "Jane", "Lucy", "Ruth", "Rose", "Ellen", "Diana", "Nina",
    "Maria", "Eva", "Amy", "Kate", "Sandra", "Monica", "Carol", "Irene",
]
MALE_NAMES = [
    "John", "James", "Robert", "Michael", "David", "William", "Richard", "Thomas",
    "Charles", "Daniel", "Paul", "Mark", "Peter", "George", "Henry", "Jack", "Frank",
    "Fred", "Victor", "Martin", "Steven", "Brian", "Kevin", "Eric", "Adam", "Greg",
    "Tim", "Ben", "Alex", "Simon", "Tony", "Carl", "Oscar", "Ivan",
]


def newline_token(indent: int) -> str:
    """The single token a byte-level BPE emits for a line break before a line indented
    by ``indent`` spaces: the newline plus all but the last space (that one space goes
    with the next word, as in `` return``)."""
    return "\n" + " " * max(indent - 1, 0)


# Fixed answers; name answers are " " + each of NAME_POOL; newline answers for the
# indentations the generators use (0..12).
FIXED_ANSWERS = [
    '")', "')", "]", "]]", ".add", " +=", "=None", "):", " as", ":", ",", "r", "w", " in",
    " {", " else", "(", " ==", " =", " enumerate", " range", " when", " is",
]
NEWLINE_ANSWERS = [newline_token(i) for i in (0, 4, 8, 12)]
ANSWER_TOKENS = FIXED_ANSWERS + NEWLINE_ANSWERS + [" " + n for n in NAME_POOL]


# ----------------------------------------------------------------------------- building blocks


def _ex(prompt: str, correct: str, incorrect: str) -> TaskExample:
    return TaskExample(prompt, correct, incorrect)


def _pair(prompt_a: str, prompt_b: str, ans_a: str, ans_b: str) -> TaskItem:
    """A pair whose answers swap: a wants ``ans_a`` over ``ans_b``, b the reverse."""
    return TaskItem(_ex(prompt_a, ans_a, ans_b), _ex(prompt_b, ans_b, ans_a))


def _header(rng: random.Random, args: list[str] | None = None, docstring: bool = True) -> tuple[str, int]:
    """Opening lines of a function or method; returns (text, body indent)."""
    if args is None:
        args = rng.sample(VAR_POOL, rng.randint(0, 2))
    fn = rng.choice(FUNC_POOL)
    if rng.random() < 0.4:
        text = f"    def {fn}({', '.join(['self'] + args)}):\n"
        indent = 8
    else:
        text = f"def {fn}({', '.join(args)}):\n"
        indent = 4
    if docstring and rng.random() < 0.3:
        doc = rng.choice(["Return the result.", "Update the state.", "Process the input.",
                          "Internal parser utility.", "Check the arguments."])
        text += " " * indent + f'"""{doc}"""\n'
    return text, indent


def _cond(rng: random.Random, v: str) -> str:
    return rng.choice(CONDITION_POOL).format(v=v)


def _cond_alnum_end(rng: random.Random, v: str) -> str:
    """A condition that ends in a letter or digit, so a following ``:`` stays its own token."""
    while True:
        c = _cond(rng, v)
        if c[-1].isalnum() or c[-1] == "_":
            return c


def _words(rng: random.Random, lo: int = 1, hi: int = 4) -> str:
    return " ".join(rng.choice(WORD_POOL) for _ in range(rng.randint(lo, hi)))


def _two_names(rng: random.Random) -> tuple[str, str]:
    x, y = rng.sample(NAME_POOL, 2)
    return x, y


# ----------------------------------------------------------------------------- task class


def draw_distinct(n: int, make, rng: random.Random, patience: int, accept=lambda item: True) -> list[TaskItem]:
    """``n`` accepted items from ``make(rng)``, distinct pairs preferred: once ``patience``
    duplicates have been drawn, a generator whose pool is exhausted repeats rather than hangs."""
    items: list[TaskItem] = []
    seen: set[tuple[str, str]] = set()
    while len(items) < n:
        item = make(rng)
        if not accept(item):
            continue
        key = (item.a.prompt, item.b.prompt)
        if key in seen and patience > 0:
            patience -= 1
            continue
        seen.add(key)
        items.append(item)
    return items


def split_of(prompt: str) -> str:
    """Which split a prompt belongs to: a stable hash of its text (about half each)."""
    return "test" if hashlib.sha256(prompt.encode("utf-8")).digest()[0] & 1 else "train"


class GeneratedTask(Task):
    """A task from a function ``make(rng) -> TaskItem`` that draws one random pair."""

    def __init__(self, name: str, description: str, make: Callable[[random.Random], TaskItem]) -> None:
        super().__init__(name, description)
        self.make = make

    def generate(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        check_split(split)
        if n < 0:
            raise UserError(f"number of items must be >= 0, got {n}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        return draw_distinct(n, self.make, rng, patience=100 * n + 1000,
                             accept=lambda it: split_of(it.a.prompt) == split and split_of(it.b.prompt) == split)


# ----------------------------------------------------------------------------- the 20 tasks


def _single_double_quote(rng: random.Random) -> TaskItem:
    opener = rng.choice([
        "print(", "raise ValueError(", "raise TypeError(", "raise RuntimeError(",
        "self.assertEqual(result, ", "log.debug(", "warnings.warn(", "sys.stdout.write(",
        "parser.error(", "self.fail(", "result.append(", "lines.append(",
        "os.path.join(path, ", "self.skipTest(", "msg = _(", "raise KeyError(",
    ])
    text = rng.choice(PHRASE_POOL) if rng.random() < 0.7 else _words(rng)
    head, ind = _header(rng, docstring=False)
    pre = ""
    if rng.random() < 0.5:
        v = rng.choice(VAR_POOL)
        pre = " " * ind + f"if not {v}:\n"
        ind += 4
    prompt = head + pre + " " * ind + opener
    return _pair(prompt + '"' + text, prompt + "'" + text, '")', "')")


def list_elements(rng: random.Random, k: int, words: Sequence[str], names: Sequence[str],
                  p_word: float, p_name: float) -> list[str]:
    """``k`` list elements: a quoted word (never the last) below ``p_word``, a name below
    ``p_name``, else a number, so the list ends in a letter or digit and a closing
    bracket stays its own token."""
    out = []
    for i in range(k):
        r = rng.random()
        if i < k - 1 and r < p_word:
            out.append(repr(rng.choice(words)))
        elif r < p_name:
            out.append(rng.choice(names))
        else:
            out.append(str(rng.randint(0, 99)))
    return out


def flat_and_nested(rng: random.Random, elems: Sequence[str]) -> tuple[str, str]:
    """The open list ``[a, b, c, d`` and the same elements in groups of two or three, ``[[a, b], [c, d``."""
    g = rng.randint(2, 3)
    groups = [elems[i : i + g] for i in range(0, len(elems), g)]
    return "[" + ", ".join(elems), "[[" + "], [".join(", ".join(grp) for grp in groups)


def _bracket_counting(rng: random.Random) -> TaskItem:
    k = rng.randint(3, 7)
    elems = list_elements(rng, k, WORD_POOL, ["x", "y", "n", "i", "a", "b", "None", "True", "False", "value"],
                          0.25, 0.45)
    if not (elems[-1][-1].isalnum()):
        elems[-1] = str(rng.randint(0, 99))
    flat, nested = flat_and_nested(rng, elems)
    target = rng.choice(["x", "data", "result", "items", "self.items", "expected", "values",
                         "table", "rows", "return", "cases", "args", "pairs"])
    sep = " " if target == "return" else " = "
    if rng.random() < 0.5:
        head, ind = _header(rng)
        lead = head + " " * ind
    else:
        lead = rng.choice(["", "# test data\n", "import sys\n\n", "DEBUG = False\n"])
        if target == "return":
            target = "x"
            sep = " = "
    return _pair(lead + target + sep + flat, lead + target + sep + nested, "]", "]]")


def _set_or_string_make(fixed_name: str | None) -> Callable[[random.Random], TaskItem]:
    def make(rng: random.Random) -> TaskItem:
        var = fixed_name or rng.choice(["seen", "result", "out", "s", "chars", "names", "found",
                                        "text", "res", "keys", "parts", "acc", "buf", "words"])
        loop = rng.choice([v for v in ["item", "name", "c", "ch", "line", "word", "key", "part", "tok", "e"]
                           if v != var])
        it = rng.choice(ITERABLE_POOL)
        head, ind = _header(rng, docstring=False)
        empty_str = rng.choice(['""', "''"])
        body = " " * ind + f"for {loop} in {it}:\n"
        inner = ind + 4
        if rng.random() < 0.3:
            body += " " * inner + rng.choice([f"{loop} = {loop}.strip()", f"{loop} = str({loop})",
                                              f"{loop} = {loop}.lower()"]) + "\n"
        if rng.random() < 0.5:
            body += " " * inner + f"if {_cond_alnum_end(rng, loop)}:\n"
            inner += 4
        a = head + " " * ind + f"{var} = set()\n" + body + " " * inner + var
        b = head + " " * ind + f"{var} = {empty_str}\n" + body + " " * inner + var
        return _pair(a, b, ".add", " +=")

    return make


def _final_kwarg(rng: random.Random) -> TaskItem:
    """The paper's answers are ``=None`` vs ``):\\n``. Ours are ``=None`` vs ``):``: our
    tokenizer joins a line break with the next line's indentation (see ``newline_token``),
    so the newline after ``):`` is the next token, not part of this one."""
    names = rng.sample(VAR_POOL, rng.randint(2, 4))
    *earlier, last = names
    defaults = ["None", "0", "1", "True", "False", "''", "()", "-1", "None", "None"]
    kw = ", ".join(f"{n}={rng.choice(defaults)}" for n in earlier)
    pos = ", ".join(earlier)
    fn = rng.choice(FUNC_POOL)
    if rng.random() < 0.4:
        lead = f"class {rng.choice(CLASS_POOL)}:\n\n    def {fn}(self, "
    else:
        lead = rng.choice(["", "", "\n", "import os\n\n"]) + f"def {fn}("
    return _pair(lead + kw + ", " + last, lead + pos + ", " + last, "=None", "):")


def _class_init(rng: random.Random) -> TaskItem:
    """As in the paper, an ``__init__`` of many ``self.p = p`` lines (2 to 4 before the
    last two); the answer copies the attribute name just written, never the name
    assigned on the line above."""
    x, y = _two_names(rng)
    extra = rng.sample([n for n in NAME_POOL if n not in (x, y)], rng.randint(2, 4))
    params = [x, y] + extra
    rng.shuffle(params)
    cls = rng.choice(CLASS_POOL)
    base = rng.choice(["", "(object)", "(Exception)", "(Base)"])
    head = f"class {cls}{base}:\n"
    if len(extra) < 4 and rng.random() < 0.3:  # keeps the longest prompt within 96 tokens
        head += f'    """A {cls.lower()}."""\n\n'
    head += f"    def __init__(self, {', '.join(params)}):\n"
    pre = "".join(f"        self.{e} = {e}\n" for e in extra)
    a = head + pre + f"        self.{x} = {x}\n        self.{y} ="
    b = head + pre + f"        self.{y} = {y}\n        self.{x} ="
    return _pair(a, b, " " + y, " " + x)


def _with_as(rng: random.Random) -> TaskItem:
    path = rng.choice(["path", "filename", "self.path", "fn", "name", "file", "os.path.join(d, name)",
                       "self.filename", "src", "fullname", "cfgfile"])
    opened = rng.choice([
        f"open({path})", f"open({path}, 'rb')", f"open({path}, 'w')", f"open({path}, 'r')",
        f"open({path}, encoding='utf-8')", f"open({path}, 'wb')", f"zipfile.ZipFile({path})",
        f"tarfile.open({path})", "tempfile.TemporaryDirectory()", "io.StringIO()",
        "tempfile.NamedTemporaryFile()", f"open({path}, 'rb', 0)",
    ])
    var = rng.choice(["f", "fp", "fh", "fd", "fobj", "stream", "zf", "tmp", "out", "infile"])
    if rng.random() < 0.3:
        lead, ind = "", 0
    else:
        lead, ind = _header(rng)
    sp = " " * ind
    return _pair(lead + sp + "with " + opened, lead + sp + f"{var} = " + opened, " as", newline_token(ind))


def _bracket_brace(rng: random.Random) -> TaskItem:
    k = rng.randint(1, 3)
    key_kind = rng.random()
    if key_kind < 0.35:
        keys = [str(v) for v in rng.sample(range(0, 100), k + 1)]
    elif key_kind < 0.7:
        keys = [repr(w) for w in rng.sample(WORD_POOL, k + 1)]
    else:
        keys = rng.sample(["RED", "GREEN", "BLUE", "OK", "ERROR", "WARNING", "INFO", "DEBUG",
                           "a", "b", "x", "y", "True", "False", "None", "EOF", "NAME", "STRING"], k + 1)
    vals = []
    for _ in range(k):
        r = rng.random()
        vals.append(repr(rng.choice(WORD_POOL)) if r < 0.5 else str(rng.randint(0, 999)) if r < 0.8
                    else rng.choice(["None", "True", "False", "x", "1.0", "[]"]))
    dct = "{" + "".join(f"{kk}: {vv}, " for kk, vv in zip(keys, vals)) + keys[-1]
    lst = "[" + "".join(f"{kk}, " for kk in keys[:-1]) + keys[-1]
    target = rng.choice(["x", "d", "table", "mapping", "_names", "self._map", "codes", "result",
                         "data", "TABLE", "lookup", "return"])
    sep = " " if target == "return" else " = "
    if rng.random() < 0.5:
        head, ind = _header(rng, docstring=False)
        lead = head + " " * ind
    else:
        lead = rng.choice(["", "\n", "# constants\n"])
        if target == "return":
            target, sep = "x", " = "
    return _pair(lead + target + sep + dct, lead + target + sep + lst, ":", ",")


_IN_OUT_NAMES = [
    ("infile", "outfile"), ("src", "dst"), ("source", "dest"), ("input_path", "output_path"),
    ("in_path", "out_path"), ("inname", "outname"), ("self.infile", "self.outfile"),
    ("input_file", "output_file"), ("src_path", "dst_path"), ("infn", "outfn"),
    ("input_filename", "output_filename"), ("'input.txt'", "'output.txt'"),
    ('"input.txt"', '"output.txt"'), ("srcfile", "dstfile"), ("in_file", "out_file"),
    ("self.input", "self.output"), ("args.input", "args.output"), ("fromfile", "tofile"),
]


def _with_open(rng: random.Random) -> TaskItem:
    src, dst = rng.choice(_IN_OUT_NAMES)
    q = rng.choice(["'", '"'])
    var = rng.choice(["f", "fp", "fh", "fin", "fout", "stream"])
    if rng.random() < 0.6:
        fmt = lambda n: f"with open({n}, {q}"  # noqa: E731
    else:
        fmt = lambda n: f"{var} = open({n}, {q}"  # noqa: E731
    if rng.random() < 0.6:
        fn = rng.choice(FUNC_POOL)
        params = ", ".join(x for x in (src, dst) if x.isidentifier())
        lead = f"def {fn}({params}):\n    "
    else:
        lead = ""
    return _pair(lead + fmt(src), lead + fmt(dst), "r", "w")


def _for_while(rng: random.Random) -> TaskItem:
    v = rng.choice(VAR_POOL)
    head, ind = _header(rng)
    pre = ""
    if rng.random() < 0.5:
        pre = " " * ind + rng.choice([f"{rng.choice(VAR_POOL)} = []", "result = None", "count = 0",
                                      f"{v} = self.head", "i = 0", "stack = [root]"]) + "\n"
    return _pair(head + pre + " " * ind + f"for {v}", head + pre + " " * ind + f"while {v}", " in", ":")


def _else_elif(rng: random.Random) -> TaskItem:
    """The paper: ``:`` or not ``:`` after ``else`` / ``elif``. Our tasks compare two
    tokens, so "not ``:``" is the token that does follow ``elif`` here: the first name of
    its condition, the variable the ``if`` above tested."""
    v = rng.choice(NAME_POOL)
    head, ind = _header(rng, args=[v] + rng.sample(VAR_POOL, rng.randint(0, 1)) if rng.random() < 0.7 else None)
    cond = rng.choice(["{v} is None", "{v} > 0", "{v} == 0", "{v} < 0", "{v} in seen", "{v}",
                       "{v} is not None", "{v} == 1", "{v} != 0"]).format(v=v)
    stmt = rng.choice(["return None", "return 0", "pass", f"{v} = 0", "result = []", "continue",
                       f"return {v}", "raise ValueError", "self._count += 1", "break"])
    base = head + " " * ind + f"if {cond}:\n" + " " * (ind + 4) + stmt + "\n" + " " * ind
    return _pair(base + "else", base + "elif", ":", " " + v)


def _fstring_brace(rng: random.Random) -> TaskItem:
    """The paper: does the model insert a variable into ``print``'s string, i.e. open
    `` {`` inside an f-string. The two-token contrast: `` {`` vs closing the string
    (``")`` or ``')``, the quote it opened with) inside a plain string; the loop above
    supplies a variable to insert."""
    v = rng.choice(VAR_POOL)
    it = rng.choice(ITERABLE_POOL)
    head, ind = _header(rng, docstring=False)
    text = rng.choice(PHRASE_POOL) if rng.random() < 0.7 else _words(rng, 1, 3)
    q = rng.choice(['"', "'"])
    loop = " " * ind + f"for {v} in {it}:\n" + " " * (ind + 4)
    return _pair(head + loop + f"print(f{q}{text}", head + loop + f"print({q}{text}", " {", q + ")")


def _if_ternary(rng: random.Random) -> TaskItem:
    v = rng.choice(VAR_POOL)
    cond = _cond_alnum_end(rng, v)
    head, ind = _header(rng)
    val = rng.choice(["1", "0", "None", "True", "False", "x", "default", "name", "[]", "''", v])
    lhs = rng.choice(["result = ", "x = ", "value = ", "return ", "self._value = ", "n = ", "key = "])
    sp = " " * ind
    return _pair(head + sp + f"if {cond}", head + sp + f"{lhs}{val} if {cond}", ":", " else")


def _var_swap(rng: random.Random) -> TaskItem:
    x, y = _two_names(rng)
    head, ind = _header(rng, args=[x, y] if rng.random() < 0.5 else None)
    sp = " " * ind
    pre = rng.choice(["", f"if {x} > {y}:\n", "if reverse:\n", "# swap\n", f"if {y} < {x}:\n"])
    if pre.startswith("if"):
        pre = sp + pre
        sp += "    "
    elif pre:
        pre = sp + pre
    return _pair(head + pre + sp + f"{x}, {y} = {y},", head + pre + sp + f"{y}, {x} = {x},", " " + x, " " + y)


def _indent_for(rng: random.Random) -> TaskItem:
    v = rng.choice(VAR_POOL)
    it = rng.choice(ITERABLE_POOL)
    head, ind = _header(rng)
    sp = " " * ind
    plain = rng.choice([f"{v} = {it}[0]", f"{v} = len({it})", f"{v} = None", f"{v} = list({it})",
                        f"{v} = next(iter({it}))", f"{v} = {it}", f"{v} = sorted({it})"])
    return _pair(head + sp + f"for {v} in {it}:", head + sp + plain, newline_token(ind + 4), newline_token(ind))


def _lambda_func(rng: random.Random) -> TaskItem:
    fname = rng.choice(["key", "func", "callback", "handler", "check", "wrapper", "inner", "getter",
                        "convert", "predicate", "sort_key", "fn", "_filter", "transform", "f"])
    args = rng.choice(["x", "item", "s", "k", "v", "e", "p", "name", "obj", "self", "a, b", "x, y",
                       "k, v", "*args", "node", "line", "m", "t"])
    head, ind = _header(rng)
    sp = " " * ind
    return _pair(head + sp + f"{fname} = lambda {args}", head + sp + f"def {fname}", ":", "(")


def _if_equals(rng: random.Random) -> TaskItem:
    v = rng.choice(VAR_POOL)
    head, ind = _header(rng)
    sp = " " * ind
    pre = ""
    if rng.random() < 0.5:
        pre = sp + rng.choice([f"{v} = self.{v}", f"{v} = None", f"{v} = kwargs.get('{v}')",
                               "result = []", f"{v} = args[0]"]) + "\n"
    kw = rng.choice(["if", "if", "if", "assert"])
    return _pair(head + pre + sp + f"{kw} {v}", head + pre + sp + v, " ==", " =")


def _enumerate_range(rng: random.Random) -> TaskItem:
    i = rng.choice(["i", "j", "k", "n", "idx", "index", "lineno", "pos", "count", "num"])
    v = rng.choice([x for x in VAR_POOL if x not in (i,)])
    head, ind = _header(rng)
    sp = " " * ind
    return _pair(head + sp + f"for {i}, {v} in", head + sp + f"for {i} in", " enumerate", " range")


def _var_if(rng: random.Random) -> TaskItem:
    v = rng.choice(VAR_POOL)
    val = rng.choice(["True", "False", "None", "0", "1", "-1", "2", "self", "default", "x"])
    op = rng.choice(["==", "==", "==", "!="])
    head, ind = _header(rng)
    sp = " " * ind
    return _pair(head + sp + f"if {v} {op} {val}", head + sp + f"{v} = {val}", ":", newline_token(ind))


def _while_return_true(rng: random.Random) -> TaskItem:
    """The paper predicts the indentation that follows the statement. Our newline token
    carries that indentation, so the prompts end in ``while True:`` and ``return True``
    and the answers are the line breaks one level in and one level out of the
    statement's own indentation (4 or 8 spaces)."""
    v = rng.choice(VAR_POOL)
    head, ind = _header(rng, args=[v] if rng.random() < 0.5 else None)
    base = head
    if ind == 4 and rng.random() < 0.6:
        base += " " * ind + f"if {_cond(rng, v)}:\n"
        ind += 4
    base += " " * ind
    return _pair(base + "while True:", base + "return True", newline_token(ind + 4), newline_token(ind - 4))


_SPECS: list[tuple[str, str, Callable[[random.Random], TaskItem]]] = [
    ("single_double_quote", "close a string with its own quote: '\")' vs \"')\"", _single_double_quote),
    ("bracket_counting", "close a list literal: ']' at nesting depth 1 vs ']]' at depth 2", _bracket_counting),
    ("set_or_string", "after x = set() vs x = '': '.add' vs ' +='", _set_or_string_make(None)),
    ("set_or_string_fixedvarname", "set_or_string with the variable always named 'current'",
     _set_or_string_make("current")),
    ("final_kwarg", "after keyword parameters '=None' vs after positional ones '):'", _final_kwarg),
    ("class_init", "in __init__, copy the attribute's name: self.x = ' x' (not the other parameter)",
     _class_init),
    ("with_as", "' as' after 'with open(...)' vs a newline after 'f = open(...)'", _with_as),
    ("bracket_brace", "':' after a key inside a dict literal vs ',' inside a list", _bracket_brace),
    ("with_open", "open mode 'r' for an input file name vs 'w' for an output one", _with_open),
    ("for_while", "' in' after 'for x' vs ':' after 'while x'", _for_while),
    ("else_elif", "':' after 'else' vs the condition's name after 'elif'", _else_elif),
    ("fstring_brace", "inside print(f\"...\" a ' {' vs closing '\")' in a plain string", _fstring_brace),
    ("if_ternary", "':' after an if statement's condition vs ' else' in a ternary", _if_ternary),
    ("var_swap", "complete 'x, y = y,' with ' x' (not ' y')", _var_swap),
    ("indent_for", "newline with one more indent level after a for line vs the same level", _indent_for),
    ("lambda_func", "':' after lambda arguments vs '(' after 'def name'", _lambda_func),
    ("if_equals", "' ==' after 'if x' vs ' =' after a bare 'x' statement", _if_equals),
    ("enumerate_range", "' enumerate' for 'for i, x in' vs ' range' for 'for i in'", _enumerate_range),
    ("var_if", "':' after 'if x == True' vs a newline after 'x = True'", _var_if),
    ("while_return_true", "the indentation after 'while True:' (one level in) vs after "
     "'return True' (one level out)", _while_return_true),
]

TASKS: dict[str, Task] = {name: GeneratedTask(name, desc, make) for name, desc, make in _SPECS}


# ----------------------------------------------------------------------------- control


def nonsense_task(name: str = "nonsense_name_when") -> Task:
    """A control task whose label is meaningless: a female first name -> ' when', a male
    one -> ' is'.  Pruning that reaches a low loss here shows how much low task
    loss alone can prove about a circuit."""
    templates = [
        "# Written by {n}", "# Thanks to {n}", "# Patch by {n}", '"""Contributed by {n}',
        "# Originally by {n}", "__author__ = '{n}", "# Copyright (C) 2001 {n}", "# Based on code by {n}",
        "    # {n}", "# XXX {n}", "# Reviewed by {n}", "# Fixed by {n}", "# Ported by {n}",
        "    # Suggested by {n}", "# Maintainer: {n}", "# Idea from {n}",
    ]

    def make(rng: random.Random) -> TaskItem:
        t = rng.choice(templates)
        lead = rng.choice(["", "", "import os\n", "\n", "import sys\n\n"])
        f, m = rng.choice(FEMALE_NAMES), rng.choice(MALE_NAMES)
        return _pair(lead + t.format(n=f), lead + t.format(n=m), " when", " is")

    return GeneratedTask(name, "control: ' when' after a female first name vs ' is' after a male one", make)


CONTROL_TASKS: dict[str, Task] = {"nonsense_name_when": nonsense_task()}


def task_names() -> list[str]:
    """The 20 task names, in their fixed order."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """A task by name (the 20 of ``TASKS`` or a control task); a clear error otherwise."""
    if name in TASKS:
        return TASKS[name]
    if name in CONTROL_TASKS:
        return CONTROL_TASKS[name]
    raise UserError(
        f"unknown task {name!r}; valid tasks: {', '.join(TASKS)} "
        f"(controls: {', '.join(CONTROL_TASKS)})"
    )
