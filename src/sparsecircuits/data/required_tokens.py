"""Strings the tokenizer must keep as exactly one token each.

Every task compares two answer logits at the last position, so each answer must be a
single token, the way the paper chose its tokenizer so that ``("``, ``('`` and ``],``
are single tokens. The tokenizer treats every entry here as an *atom*: its
pre-tokenizer never lets a piece of text run into one (see
``sparsecircuits.data.tokenizer``), and training forces a merge chain for any entry BPE
did not learn by itself.

Keep this a plain list of plain strings, so task generators can append the answers
they need. A tokenizer must be rebuilt (``sparsecircuits data build``) after a change;
``check_required_tokens`` says which entries an existing tokenizer splits.
Entries are compared by encoding, so write them as text (``" in"``, not ``"Ġin"``).
"""

REQUIRED_TOKENS: list[str] = [
    # quotes: single_double_quote (close the string with the quote it opened with)
    "'",
    '"',
    "')",
    '")',
    "('",
    '("',
    # brackets: bracket_counting, bracket_brace
    "]",
    "]]",
    "],",
    ":",
    ",",
    # assignment and comparison: if_equals, var_if, set_or_string
    "=",
    "==",
    " =",
    " ==",
    "+=",
    " +=",
    ".add",
    # keywords: for_while, with_as
    " in",
    " as",
    # call vs lambda: lambda_func; a default after keyword parameters vs the end of a
    # signature: final_kwarg
    "(",
    "):",
    "=None",
]

# Answers of the task generators (sparsecircuits.tasks.python_tasks.ANSWER_TOKENS) that
# a byte-level BPE need not learn by itself: words after a prompt ending in a word or a
# punctuation token, and the names that class_init, var_swap and else_elif copy.
REQUIRED_TOKENS += [
    " {",
    " enumerate",
    " range",
    " else",
    " is",
    " when",
    " name", " value", " key", " data", " path", " size", " text", " file", " type",
    " args", " mode", " line", " result", " index", " count", " item", " node", " parent",
    " obj", " func", " level", " start", " end", " prefix", " source", " target", " base",
    " root", " offset", " default", " message", " error", " code", " state", " config",
    " options",
    " a", " b", " c", " d", " i", " j", " k", " n", " x", " y", " s", " v",
]
