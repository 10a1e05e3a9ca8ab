"""Simple Python, generated: short, plain modules for a small model to learn from.

A small model trained for minutes on the standard library sees the everyday idioms of
Python (a string closed by the quote that opened it, a nested list closed twice, a set
grown with ``.add`` and a string with ``+=``, a file opened ``'r'`` to read) only rarely,
between long stretches of hard, idiosyncratic code. The paper's models were pretrained
on simple Python, much of it written for the purpose; this module writes such code.

Each module is a random program built from a small grammar with a typed environment, so
the code is consistent the way real code is: a variable made with ``set()`` is later
grown with ``.add``, one made with ``""`` with ``+=``; a file whose name says "input" is
opened for reading, "output" for writing; a lambda's arguments are followed by ``:``;
keyword parameters come after positional ones; ``__init__`` stores its arguments.

This generator is written apart from the task suite (it imports nothing from it and
shares no template); ``sparsecircuits.data.leaks`` checks that no held-out task prompt,
with its answer, appears verbatim in the token shards built from it.

Everything is deterministic given the seed: module ``i`` of seed ``s`` is always the same
text, in any process.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from .corpus import Corpus, CorpusFile

# Word pools: common identifiers of everyday code, chosen independently of the tasks.
NOUNS = [
    "name", "value", "item", "key", "word", "line", "count", "total", "score", "size",
    "price", "amount", "index", "node", "row", "col", "cell", "user", "city", "color",
    "label", "title", "token", "entry", "record", "point", "step", "level", "depth", "width",
    "height", "speed", "age", "year", "day", "month", "hour", "rate", "weight", "cost",
    "number", "digit", "letter", "char", "text", "message", "path", "filename", "url", "tag",
    "kind", "status", "result", "answer", "guess", "target", "limit", "offset", "start", "stop",
    "first", "last", "left", "right", "low", "high", "head", "tail", "prev", "current",
    "parent", "child", "root", "edge", "pair", "group", "team", "player", "card", "move",
    "board", "grid", "cat", "dog", "animal", "fruit", "book", "page", "student", "grade",
    "order", "product", "customer", "account", "balance", "task", "job", "event", "shape",
]
PLURALS = [
    "names", "values", "items", "keys", "words", "lines", "scores", "prices", "nodes", "rows",
    "users", "cities", "colors", "labels", "tokens", "entries", "records", "points", "steps",
    "numbers", "digits", "letters", "chars", "messages", "paths", "files", "tags", "results",
    "pairs", "groups", "players", "cards", "moves", "cats", "animals", "fruits", "books",
    "pages", "students", "grades", "orders", "products", "tasks", "jobs", "events", "shapes",
    "data", "parts", "chunks", "fields", "elements", "options", "args", "children", "edges",
]
SHORT = ["i", "j", "k", "n", "m", "x", "y", "z", "a", "b", "c", "s", "t", "v", "w", "p", "q", "d"]
VERBS = [
    "get", "set", "add", "find", "make", "build", "load", "save", "read", "write", "parse",
    "check", "count", "update", "compute", "process", "show", "display", "draw", "move", "sort",
    "filter", "merge", "split", "clean", "convert", "format", "collect", "create", "remove",
    "handle", "run", "start", "reset", "apply", "render", "send", "fetch", "store", "scan",
]
CLASS_WORDS = [
    "Point", "Player", "Card", "Deck", "Account", "Student", "Book", "Library", "Shape",
    "Circle", "Square", "Animal", "Dog", "Cat", "Car", "Robot", "Game", "Board", "Node",
    "Tree", "Graph", "Stack", "Queue", "Counter", "Timer", "Item", "Order", "Cart", "User",
    "Message", "Config", "Task", "Team", "Room", "Hotel", "Vector", "Matrix", "Token",
]
TEXT_WORDS = [
    "hello", "world", "done", "error", "ok", "yes", "no", "start", "stop", "ready",
    "found", "missing", "total", "result", "value", "name", "file", "saved", "loaded",
    "invalid", "input", "output", "welcome", "goodbye", "score", "player", "game", "over",
    "the", "a", "is", "not", "of", "to", "and", "in", "for", "new", "old", "empty", "full",
    "number", "list", "items", "count", "line", "key", "red", "green", "blue", "cat", "dog",
]
INPUT_NAMES = ["input_path", "in_file", "source", "src", "infile", "input_file", "data_path",
               "read_path", "src_path", "in_name", "input_name", "inpath"]
OUTPUT_NAMES = ["output_path", "out_file", "dest", "dst", "outfile", "output_file", "save_path",
                "write_path", "dst_path", "out_name", "output_name", "outpath"]
FILE_WORDS_IN = ["input", "data", "source", "words", "numbers", "notes", "scores", "config"]
FILE_WORDS_OUT = ["output", "result", "report", "summary", "out", "log", "saved", "backup"]
IMPORTS = ["os", "sys", "math", "random", "json", "re", "time", "string", "itertools",
           "collections", "functools", "csv", "pathlib"]

INT_TYPES = ("int",)


@dataclass
class Scope:
    """Variables visible at a point in the program, by kind."""

    vars: dict[str, str] = field(default_factory=dict)  # name -> kind

    def of(self, *kinds: str) -> list[str]:
        return [n for n, k in self.vars.items() if k in kinds]

    def copy(self) -> "Scope":
        return Scope(dict(self.vars))


class ProgramWriter:
    """Writes one module: a few imports, constants, functions and classes, a main block."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines: list[str] = []

    # ------------------------------------------------------------------ small pieces
    def pick(self, seq):
        return self.rng.choice(seq)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def fresh(self, scope: Scope, pool=None) -> str:
        pool = pool or (NOUNS if self.chance(0.8) else SHORT)
        for _ in range(20):
            name = self.pick(pool)
            if name not in scope.vars:
                return name
        return self.pick(pool) + str(self.rng.randint(2, 9))

    def quote(self) -> str:
        return "'" if self.chance(0.5) else '"'

    def string_literal(self, words: int | None = None) -> str:
        q = self.quote()
        n = words if words is not None else self.rng.randint(1, 3)
        text = " ".join(self.pick(TEXT_WORDS) for _ in range(n))
        if self.chance(0.15):
            text = text.capitalize()
        if self.chance(0.1):
            text += self.pick([":", "!", ".", "?"])
        return f"{q}{text}{q}"

    def number(self) -> str:
        return str(self.pick([0, 1, 2, 3, 5, 10, 100, self.rng.randint(0, 50)]))

    def atom(self, scope: Scope, kind: str = "int") -> str:
        names = scope.of(kind)
        if names and self.chance(0.6):
            return self.pick(names)
        if kind == "str":
            return self.string_literal()
        if kind == "bool":
            return self.pick(["True", "False"])
        return self.number()

    def condition(self, scope: Scope) -> str:
        ints = scope.of("int")
        lists = scope.of("list", "set", "dict", "str")
        r = self.rng.random()
        if ints and r < 0.45:
            x = self.pick(ints)
            op = self.pick(["==", "!=", "<", ">", "<=", ">=", "==", ">"])
            return f"{x} {op} {self.atom(scope)}"
        if lists and r < 0.65:
            coll = self.pick(lists)
            if self.chance(0.5):
                return f"len({coll}) > {self.pick(['0', '1', '2', '10'])}"
            return f"{self.atom(scope, 'str') if scope.of('str') else self.number()} in {coll}"
        bools = scope.of("bool")
        if bools and r < 0.8:
            b = self.pick(bools)
            return self.pick([b, f"not {b}", f"{b} == True", f"{b} is False"])
        any_name = list(scope.vars) or ["x"]
        v = self.pick(any_name)
        return self.pick([f"{v} is None", f"{v} is not None", f"not {v}", v])

    def emit(self, indent: int, text: str) -> None:
        self.lines.append(" " * indent + text)

    # ------------------------------------------------------------------ literals
    def list_literal(self, depth: int = 1) -> str:
        n = self.rng.randint(1, 5)
        if depth > 1:
            inner = [self.list_literal(depth - 1) for _ in range(self.rng.randint(1, 4))]
            return "[" + ", ".join(inner) + "]"
        kind = self.rng.random()
        if kind < 0.5:
            elems = [str(self.rng.randint(0, 99)) for _ in range(n)]
        elif kind < 0.8:
            q = self.quote()
            elems = [f"{q}{self.pick(TEXT_WORDS)}{q}" for _ in range(n)]
        else:
            elems = [self.pick(["True", "False", "None", "0", "1", "x", "y", "n"]) for _ in range(n)]
        return "[" + ", ".join(elems) + "]"

    def dict_literal(self) -> str:
        n = self.rng.randint(1, 4)
        q = self.quote()
        keys = self.rng.sample(TEXT_WORDS, n) if self.chance(0.7) else [str(i) for i in self.rng.sample(range(20), n)]
        if keys[0].isalpha():
            keys = [f"{q}{k}{q}" for k in keys]
        vals = [self.pick([self.number(), self.string_literal(1), "None", "True", "[]"]) for _ in range(n)]
        return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, vals)) + "}"

    # ------------------------------------------------------------------ statements
    def assign_new(self, scope: Scope, indent: int) -> None:
        r = self.rng.random()
        if r < 0.16:
            name = self.fresh(scope, PLURALS if self.chance(0.7) else None)
            depth = 2 if self.chance(0.35) else (3 if self.chance(0.05) else 1)
            self.emit(indent, f"{name} = {self.list_literal(depth) if self.chance(0.7) else '[]'}")
            scope.vars[name] = "list"
        elif r < 0.28:
            name = self.fresh(scope, ["seen", "visited", "found", "unique", "tags", "used", "done",
                                      "names", "words", "keys", "letters", "current", "result", "ids"])
            self.emit(indent, f"{name} = set()" if self.chance(0.85) else f"{name} = set({self.pick(PLURALS)})")
            scope.vars[name] = "set"
        elif r < 0.40:
            name = self.fresh(scope, ["text", "line", "out", "result", "message", "s", "word", "buf",
                                      "current", "output", "label", "name", "prefix", "acc"])
            empty = self.pick(['""', "''", self.string_literal()])
            self.emit(indent, f"{name} = {empty}")
            scope.vars[name] = "str"
        elif r < 0.50:
            name = self.fresh(scope, ["counts", "table", "lookup", "ages", "scores", "config", "cache",
                                      "totals", "index", "mapping", "prices", "colors"])
            self.emit(indent, f"{name} = {self.dict_literal() if self.chance(0.6) else '{}'}")
            scope.vars[name] = "dict"
        elif r < 0.60:
            name = self.fresh(scope, ["done", "found", "ok", "ready", "running", "valid", "flag",
                                      "debug", "verbose", "active", "empty", "changed"])
            self.emit(indent, f"{name} = {self.pick(['True', 'False'])}")
            scope.vars[name] = "bool"
        elif r < 0.72 and scope.vars:
            name = self.fresh(scope)
            cond = self.condition(scope)
            self.emit(indent, f"{name} = {self.atom(scope)} if {cond} else {self.atom(scope)}")
            scope.vars[name] = "int"
        elif r < 0.80:
            name = self.pick(["key", "get_name", "by_score", "double", "square", "is_even", "add_one",
                              "first", "second", "area", "fn", "f", "cmp", "pick", "to_str"])
            args = self.pick(["x", "item", "p", "a, b", "x, y", "s", "n", "pair", "k, v", "row"])
            body = self.pick(["x * 2", "item[0]", "p[1]", "a + b", "x * y", "s.upper()", "n % 2 == 0",
                              "pair[1]", "v", "row[-1]", "len(s)", "x + 1", "-item[1]", "str(n)"])
            self.emit(indent, f"{name} = lambda {args}: {body}")
            scope.vars[name] = "func"
        else:
            name = self.fresh(scope)
            sized = scope.of("list", "str", "set", "dict")
            expr = self.pick([self.number(), f"len({self.pick(sized)})" if sized else "0",
                              f"{self.atom(scope)} + {self.atom(scope)}", f"{self.atom(scope)} * 2"])
            self.emit(indent, f"{name} = {expr}")
            scope.vars[name] = "int"

    def use_var(self, scope: Scope, indent: int, loop_var: str | None = None) -> None:
        """A statement that uses a variable the way its kind is used."""
        item = loop_var or (self.pick(scope.of("str", "int")) if scope.of("str", "int") else self.number())
        options = []
        for name in scope.of("set"):
            options.append(f"{name}.add({item})")
        for name in scope.of("str"):
            if name != item:
                options.append(f"{name} += {self.pick([item, self.string_literal(1), f'str({item})'])}")
        for name in scope.of("list"):
            options.append(f"{name}.append({item})")
        for name in scope.of("dict"):
            options.append(self.pick([f"{name}[{item}] = {self.atom(scope)}",
                                      f"{name}[{item}] = {name}.get({item}, 0) + 1"]))
        for name in scope.of("int"):
            if name != item:
                options.append(f"{name} {self.pick(['+=', '-=', '+=', '*='])} {self.pick(['1', '2', item])}")
        if not options:
            options.append(f"print({item})")
        self.emit(indent, self.pick(options))

    def print_stmt(self, scope: Scope, indent: int) -> None:
        names = list(scope.vars)
        if names and self.chance(0.5):
            q = self.quote()
            v = self.pick(names)
            words = " ".join(self.pick(TEXT_WORDS) for _ in range(self.rng.randint(0, 2)))
            sep = self.pick([": ", " = ", " ", " is "])
            if self.chance(0.6):
                self.emit(indent, f"print(f{q}{words}{sep if words else ''}{{{v}}}{q})")
            else:
                self.emit(indent, f"print({q}{words or self.pick(TEXT_WORDS)}{q}, {v})")
        else:
            self.emit(indent, f"print({self.string_literal()})")

    def for_loop(self, scope: Scope, indent: int, depth: int) -> None:
        colls = scope.of("list", "set", "str")
        r = self.rng.random()
        inner = scope.copy()
        if colls and r < 0.45:
            coll = self.pick(colls)
            v = self.fresh(inner, ["item", "x", "word", "name", "value", "c", "ch", "n", "row", "line", "p"])
            self.emit(indent, f"for {v} in {coll}:")
            inner.vars[v] = "str" if scope.vars[coll] == "str" else self.pick(["int", "str"])
        elif colls and r < 0.65:
            coll = self.pick(colls)
            i = self.pick(["i", "idx", "index", "n", "pos", "k"])
            v = self.fresh(inner, ["item", "x", "word", "value", "row", "line", "ch"])
            self.emit(indent, f"for {i}, {v} in enumerate({coll}):")
            inner.vars[i] = "int"
            inner.vars[v] = "str"
        elif scope.of("dict") and r < 0.75:
            d = self.pick(scope.of("dict"))
            self.emit(indent, f"for k, v in {d}.items():")
            inner.vars["k"] = "str"
            inner.vars["v"] = "int"
        else:
            i = self.pick(["i", "j", "n", "k", "x", "step"])
            ints = scope.of("int")
            bound = self.pick(ints) if ints and self.chance(0.5) else str(self.rng.randint(2, 20))
            arg = bound if self.chance(0.7) else f"1, {bound}"
            self.emit(indent, f"for {i} in range({arg}):")
            inner.vars[i] = "int"
        loop_var = [n for n in inner.vars if n not in scope.vars]
        self.block(inner, indent + 4, depth + 1, loop_var=loop_var[-1] if loop_var else None)

    def while_loop(self, scope: Scope, indent: int, depth: int) -> None:
        if self.chance(0.4):
            self.emit(indent, "while True:")
            inner = scope.copy()
            self.block(inner, indent + 4, depth + 1, n=self.rng.randint(1, 2))
            self.emit(indent + 4, f"if {self.condition(scope)}:")
            self.emit(indent + 8, "break")
        else:
            ints = scope.of("int")
            if ints and self.chance(0.6):
                v = self.pick(ints)
                self.emit(indent, f"while {v} {self.pick(['>', '<', '!=', '>='])} {self.number()}:")
                inner = scope.copy()
                self.block(inner, indent + 4, depth + 1, n=self.rng.randint(1, 2))
                self.emit(indent + 4, f"{v} {self.pick(['-=', '+='])} 1")
            else:
                self.emit(indent, f"while {self.condition(scope)}:")
                self.block(scope.copy(), indent + 4, depth + 1, n=self.rng.randint(1, 3))

    def if_chain(self, scope: Scope, indent: int, depth: int) -> None:
        self.emit(indent, f"if {self.condition(scope)}:")
        self.block(scope.copy(), indent + 4, depth + 1, n=self.rng.randint(1, 2))
        for _ in range(self.rng.choice([0, 0, 1, 1, 2])):
            self.emit(indent, f"elif {self.condition(scope)}:")
            self.block(scope.copy(), indent + 4, depth + 1, n=self.rng.randint(1, 2))
        if self.chance(0.5):
            self.emit(indent, "else:")
            self.block(scope.copy(), indent + 4, depth + 1, n=self.rng.randint(1, 2))

    def with_file(self, scope: Scope, indent: int, depth: int, reading: bool | None = None) -> None:
        reading = self.chance(0.5) if reading is None else reading
        path = self.file_name(scope, reading)
        q = self.quote()
        mode = ("r" if reading else self.pick(["w", "w", "a"])) if self.chance(0.9) else ("rb" if reading else "wb")
        f = self.pick(["f", "fh", "fp", "infile" if reading else "outfile", "src" if reading else "out"])
        inner = scope.copy()
        if self.chance(0.75):
            self.emit(indent, f"with open({path}, {q}{mode}{q}) as {f}:")
            body_indent, close = indent + 4, False
        else:
            self.emit(indent, f"{f} = open({path}, {q}{mode}{q})")
            body_indent, close = indent, True
        if reading:
            r = self.rng.random()
            target = self.fresh(inner, ["lines", "text", "data", "content", "rows", "words"])
            if r < 0.4:
                self.emit(body_indent, f"for line in {f}:")
                lst = self.fresh(inner, PLURALS)
                self.emit(body_indent + 4, f"{lst}.append(line.strip())" if lst in scope.of("list") else f"print(line.strip())")
            elif r < 0.7:
                self.emit(body_indent, f"{target} = {f}.read(){self.pick(['', '.splitlines()', '.split()', '.strip()'])}")
                inner.vars[target] = "str"
            else:
                self.emit(body_indent, f"{target} = {f}.readlines()")
                inner.vars[target] = "list"
        else:
            things = scope.of("list", "str")
            if things and self.chance(0.6):
                t = self.pick(things)
                if scope.vars[t] == "list":
                    v = self.pick(["item", "x", "row", "line"])
                    self.emit(body_indent, f"for {v} in {t}:")
                    self.emit(body_indent + 4, f"{f}.write(str({v}) + {q}\\n{q})")
                else:
                    self.emit(body_indent, f"{f}.write({t})")
            else:
                self.emit(body_indent, f"{f}.write({self.string_literal()})")
        if close:
            self.emit(indent, f"{f}.close()")
        scope.vars.update({k: v for k, v in inner.vars.items() if k not in scope.vars and not close})

    def file_name(self, scope: Scope, reading: bool) -> str:
        files = scope.of("in_path" if reading else "out_path")
        if files and self.chance(0.7):
            return self.pick(files)
        q = self.quote()
        word = self.pick(FILE_WORDS_IN if reading else FILE_WORDS_OUT)
        return f"{q}{word}.{self.pick(['txt', 'csv', 'json', 'log', 'dat'])}{q}"

    def swap(self, scope: Scope, indent: int) -> None:
        names = scope.of("int", "str")
        if len(names) >= 2:
            a, b = self.rng.sample(names, 2)
        else:
            a, b = self.rng.sample(["a", "b", "x", "y", "left", "right", "low", "high", "first", "last"], 2)
            self.emit(indent, f"{a}, {b} = {self.number()}, {self.number()}")
            scope.vars[a] = scope.vars[b] = "int"
        if self.chance(0.5):
            self.emit(indent, f"if {a} > {b}:")
            self.emit(indent + 4, f"{a}, {b} = {b}, {a}")
        else:
            self.emit(indent, f"{a}, {b} = {b}, {a}")

    def statement(self, scope: Scope, indent: int, depth: int, loop_var: str | None = None) -> None:
        r = self.rng.random()
        if depth < 3 and r < 0.14:
            self.for_loop(scope, indent, depth)
        elif depth < 3 and r < 0.2:
            self.while_loop(scope, indent, depth)
        elif depth < 3 and r < 0.32:
            self.if_chain(scope, indent, depth)
        elif depth < 3 and r < 0.37:
            self.with_file(scope, indent, depth)
        elif r < 0.55:
            self.assign_new(scope, indent)
        elif r < 0.72:
            self.use_var(scope, indent, loop_var)
        elif r < 0.8:
            self.print_stmt(scope, indent)
        elif r < 0.85:
            self.swap(scope, indent)
        elif r < 0.9 and scope.of("func"):
            fn = self.pick(scope.of("func"))
            lists = scope.of("list")
            if lists:
                self.emit(indent, f"{self.pick(lists)}.sort(key={fn})")
            else:
                self.emit(indent, f"print({fn}({self.number()}))")
        else:
            if self.chance(0.3):
                self.emit(indent, self.pick(["# TODO", f"# {self.pick(TEXT_WORDS)} {self.pick(TEXT_WORDS)}"]))
                self.emit(indent, "pass")
            else:
                self.emit(indent, f"print({self.string_literal()})")

    def block(self, scope: Scope, indent: int, depth: int, n: int | None = None, loop_var: str | None = None) -> None:
        n = n if n is not None else self.rng.randint(1, 3)
        for _ in range(n):
            self.statement(scope, indent, depth, loop_var)

    # ------------------------------------------------------------------ definitions
    def params(self) -> tuple[list[str], list[str]]:
        """Positional parameters, then keyword ones (which must come last)."""
        pos = self.rng.sample(NOUNS + SHORT[:8], self.rng.randint(0, 3))
        kw_names = [n for n in self.rng.sample(NOUNS, self.rng.randint(0, 3)) if n not in pos]
        defaults = ["None", "0", "1", "True", "False", "''", '""', "10", "[]", "()", "-1", "0.5"]
        return pos, [f"{n}={self.pick(defaults)}" for n in kw_names]

    def function(self, indent: int, method: bool = False) -> None:
        name = f"{self.pick(VERBS)}_{self.pick(NOUNS)}" if self.chance(0.7) else self.pick(VERBS)
        pos, kws = self.params()
        scope = Scope()
        for p in pos:
            scope.vars[p] = self.pick(["int", "str", "list"])
        for kw in kws:
            scope.vars[kw.split("=")[0]] = "int"
        files = []
        if self.chance(0.2):
            reading = self.chance(0.5)
            fname = self.pick(INPUT_NAMES if reading else OUTPUT_NAMES)
            pos.insert(0, fname)
            scope.vars[fname] = "in_path" if reading else "out_path"
            files.append(reading)
        args = (["self"] if method else []) + pos + kws
        self.emit(indent, f"def {name}({', '.join(args)}):")
        if self.chance(0.3):
            self.emit(indent + 4, f'"""{self.pick(VERBS).capitalize()} the {self.pick(NOUNS)}."""')
        for reading in files:
            self.with_file(scope, indent + 4, 1, reading)
        self.block(scope, indent + 4, 1, n=self.rng.randint(2, 6))
        self.emit(indent + 4, self.return_stmt(scope))

    def return_stmt(self, scope: Scope) -> str:
        names = list(scope.vars)
        r = self.rng.random()
        if r < 0.15:
            return self.pick(["return True", "return False", "return None"])
        if names and r < 0.8:
            return f"return {self.pick(names)}"
        return "return " + self.number()

    def klass(self) -> None:
        name = self.pick(CLASS_WORDS)
        base = self.pick(["", "", "", "(object)", "(Exception)", "(Base)"])
        self.emit(0, f"class {name}{base}:")
        if self.chance(0.4):
            self.emit(4, f'"""A {name.lower()}."""')
            self.emit(0, "")
        attrs = self.rng.sample(NOUNS, self.rng.randint(1, 5))
        kw = attrs[self.rng.randint(1, len(attrs)) :] if self.chance(0.3) else []
        params = [a for a in attrs if a not in kw] + [f"{a}={self.pick(['None', '0', '[]', 'False'])}" for a in kw]
        self.emit(4, f"def __init__(self, {', '.join(params)}):")
        order = list(attrs)
        if self.chance(0.3):
            self.rng.shuffle(order)
        for a in order:
            self.emit(8, f"self.{a} = {a}")
        if self.chance(0.3):
            self.emit(8, f"self.{self.pick(['items', 'count', 'children', 'history', 'total'])} = {self.pick(['[]', '0', 'set()', '{}'])}")
        for _ in range(self.rng.randint(1, 3)):
            self.emit(0, "")
            mname = f"{self.pick(VERBS)}_{self.pick(NOUNS)}" if self.chance(0.6) else self.pick(VERBS)
            self.emit(4, f"def {mname}(self):")
            a = self.pick(attrs)
            self.emit(8, self.pick([f"return self.{a}", f"print(self.{a})", f"self.{a} = None",
                                    f"return self.{a} * 2", f"return str(self.{a})"]))
        if self.chance(0.5):
            self.emit(0, "")
            self.emit(4, "def __repr__(self):")
            q = self.quote()
            self.emit(8, f"return f{q}{name}({{self.{attrs[0]}}}){q}")

    def module(self) -> str:
        if self.chance(0.3):
            self.emit(0, f'"""{self.pick(VERBS).capitalize()} {self.pick(PLURALS)}."""')
        for mod in sorted(self.rng.sample(IMPORTS, self.rng.randint(0, 3))):
            self.emit(0, f"import {mod}")
        if self.lines:
            self.emit(0, "")
        top = Scope()
        for _ in range(self.rng.randint(0, 3)):
            self.assign_new(top, 0)
        for _ in range(self.rng.randint(1, 4)):
            self.emit(0, "")
            self.emit(0, "")
            if self.chance(0.3):
                self.klass()
            else:
                self.function(0)
        self.emit(0, "")
        self.emit(0, "")
        if self.chance(0.5):
            self.emit(0, 'if __name__ == "__main__":')
            self.block(top, 4, 1, n=self.rng.randint(1, 4))
        else:
            self.block(top, 0, 0, n=self.rng.randint(1, 4))
        return "\n".join(self.lines) + "\n"


def generate_module(seed: int, index: int) -> str:
    """Module ``index`` of the stream for ``seed``: the same text in any process."""
    return ProgramWriter(random.Random(f"simple-python/{seed}/{index}")).module()


def generate_corpus(total_bytes: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[str]:
    """Modules until their UTF-8 size reaches ``total_bytes``.

    A module containing any string of ``exclude`` verbatim (the held-out task prompts with
    their answers) is dropped and replaced by the next one, so the generated code never
    holds a test item, even by coincidence.
    """
    from .leaks import occurring

    exclude = set(exclude)
    out: list[str] = []
    size, i = 0, 0
    while size < total_bytes:
        batch = []
        while size < total_bytes:
            text = generate_module(seed, i)
            batch.append(text)
            size += len(text.encode("utf-8"))
            i += 1
        bad = occurring(exclude, "\n".join(batch)) if exclude else set()
        for text in batch:
            if any(s in text for s in bad):
                size -= len(text.encode("utf-8"))
            else:
                out.append(text)
    return out


GENERATOR_NAME = "generated:simple-python-v1"  # bump when the generated text changes


def add_simple_python(corpus: Corpus, total_bytes: int, seed: int = 0, exclude: Iterable[str] = ()) -> Corpus:
    """``corpus`` plus ``total_bytes`` of generated modules, all in the train split.

    Val stays the real code, so val loss keeps measuring Python as people write it (and
    stays comparable with runs trained without generated code).
    """
    if total_bytes <= 0:
        return corpus
    source = len(corpus.sources)
    files = list(corpus.files)
    for i, text in enumerate(generate_corpus(total_bytes, seed, exclude)):
        data = text.encode("utf-8")
        files.append(CorpusFile(source, f"simple/{i:06d}.py", text, len(data),
                                hashlib.sha256(data).hexdigest(), "train"))
    settings = dict(corpus.settings, simple_bytes=total_bytes, simple_generator=GENERATOR_NAME)
    return Corpus(list(corpus.sources) + [GENERATOR_NAME], files, list(corpus.skipped), settings)
