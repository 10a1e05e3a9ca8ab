"""GPT-2-style BPE files (``vocab.bpe`` + ``encoder.json``) as a ``tokenizers`` tokenizer.

OpenAI's released models use ``tinypython_2k``, a tiktoken byte-level BPE published in
this format; converting it gives the same ids through the same library our own
tokenizer uses, so an imported run encodes and decodes like any other.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .tokenizer import EOT

# tinypython_2k's pre-tokenizer regex (the tiktoken encoding's ``pat_str``).
TINYPYTHON_PATTERN = (
    r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def tokenizer_from_gpt2_files(vocab_bpe: Path, encoder_json: Path, pattern: str = TINYPYTHON_PATTERN):
    """GPT-2-style ``vocab.bpe`` + ``encoder.json`` -> a ``tokenizers`` byte-level BPE with
    the same ids: the tinypython regex split, then the byte-to-character map GPT-2 and
    tiktoken's data-gym loader share, then the merges; ``<|endoftext|>`` is special (its
    id from encoder.json, else the next free id, 2047 for tinypython_2k).

    tiktoken merges the adjacent pair whose result has the lowest id, ``tokenizers`` the
    pair listed earliest in the merges; on a data-gym vocabulary these agree except on
    a token reachable through a split the merges never list, which BPE training rarely makes.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    try:
        vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the tokenizer files {vocab_bpe} / {encoder_json}: {exc}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise UserError(f"{encoder_json} must map token strings to integer ids")
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(lines, 1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise UserError(f"{vocab_bpe}:{n}: a merge must be two tokens separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
    vocab = {k: v for k, v in vocab.items() if k != "<|startoftext|>"}  # tiktoken drops it too
    ids = sorted(vocab.values())
    if len(set(ids)) != len(ids):
        raise UserError(f"{encoder_json}: two tokens share an id")
    missing = [a + b for a, b in merges if a + b not in vocab]
    if missing:
        raise UserError(f"{encoder_json}: merge result(s) {missing[:3]} from {vocab_bpe} are not in the vocabulary")
    eot_id = vocab.get(EOT, max(ids) + 1)
    try:
        tok = Tokenizer(models.BPE(vocab={**vocab, EOT: eot_id}, merges=merges))
    except Exception as exc:  # tokenizers raises its own exception types
        raise UserError(f"cannot build a tokenizer from {vocab_bpe} / {encoder_json}: {exc}") from None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return tok
