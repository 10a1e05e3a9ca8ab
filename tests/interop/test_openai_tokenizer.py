"""Converting a GPT-2-style tokenizer (vocab.bpe + encoder.json, tinypython_2k's format) to
tokenizer.json: the same ids as tiktoken's rank-based BPE, checked against a reference
written here (and against tiktoken itself where it is installed)."""
from __future__ import annotations

import inspect
import json
import json.encoder
import re
from collections import Counter

import pytest

from sparsecircuits.data.gpt2_bpe import TINYPYTHON_PATTERN, tokenizer_from_gpt2_files
from sparsecircuits.data.tokenizer import EOT
from sparsecircuits.errors import UserError

# tinypython's split pattern with \p{L} = [A-Za-z] and \p{N} = [0-9]: equal to it on ASCII text.
ASCII_PATTERN = re.compile(
    r"""[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}| ?[^\sA-Za-z0-9]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte, listed in data-gym rank order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    order = printable + [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in printable)})
    return [chars[b] for b in order], order, chars


def train_merges(text: str, n_merges: int) -> list[tuple[str, str]]:
    """A plain BPE trainer over the split pieces; each merge makes a new token."""
    _, _, chars = byte_chars()
    words = Counter(tuple(chars[b] for b in piece.encode()) for piece in ASCII_PATTERN.findall(text))
    merges, made = [], set(chars.values())
    while len(merges) < n_merges:
        pairs = Counter()
        for word, n in words.items():
            for a, b in zip(word, word[1:]):
                pairs[a, b] += n
        best = next(((a, b) for (a, b), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
                     if a + b not in made), None)
        if best is None:
            break
        merges.append(best)
        made.add(best[0] + best[1])
        new = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new[tuple(out)] += n
        words = new
    return merges


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory):
    """vocab.bpe + encoder.json in the data-gym layout: 256 byte tokens, then one per merge,
    then <|endoftext|> (like tinypython_2k, whose EOT is the last id)."""
    d = tmp_path_factory.mktemp("tok")
    text = inspect.getsource(json.encoder)
    merges = train_merges(text, 150)
    byte_tokens, _, _ = byte_chars()
    encoder = {t: i for i, t in enumerate(byte_tokens)}
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder[EOT] = len(encoder)
    (d / "encoder.json").write_text(json.dumps(encoder))
    (d / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return d, encoder, text


def reference_encode(text: str, encoder: dict[str, int]) -> list[int]:
    """tiktoken's algorithm: split, then repeatedly merge the adjacent pair whose result has
    the lowest rank. ASCII text only (the split uses ASCII_PATTERN)."""
    _, _, chars = byte_chars()
    ids = []
    for piece in ASCII_PATTERN.findall(text):
        parts = [chars[b] for b in piece.encode()]
        while len(parts) > 1:
            ranks = [(encoder.get(a + b, 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranks)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids += [encoder[p] for p in parts]
    return ids


SAMPLES = [
    "def f(x):\n    return [x, x + 1]\n",
    "if a == 'b':\n\tprint(\"hi\")  # comment\n\n\n",
    "class Encoder(object):\n    def __init__(self, skipkeys=False, indent=None):\n        self.x = {'a': 1}",
    "x = 12345 + 0.5e-3   \n   y",
    "",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_conversion_gives_tiktoken_ids_on_python_code(gpt2_files, text):
    d, encoder, _ = gpt2_files
    tok = tokenizer_from_gpt2_files(d / "vocab.bpe", d / "encoder.json")
    assert tok.encode(text).ids == reference_encode(text, encoder)
    assert tok.decode(tok.encode(text).ids) == text


def test_conversion_uses_merges_on_the_training_text(gpt2_files):
    d, encoder, text = gpt2_files
    tok = tokenizer_from_gpt2_files(d / "vocab.bpe", d / "encoder.json")
    ids = tok.encode(text).ids
    assert ids == reference_encode(text, encoder)
    assert len(ids) < 0.6 * len(text.encode())  # merges really fire
    assert max(ids) >= 256


def test_endoftext_is_one_special_token_with_its_id(gpt2_files):
    d, encoder, _ = gpt2_files
    tok = tokenizer_from_gpt2_files(d / "vocab.bpe", d / "encoder.json")
    assert tok.token_to_id(EOT) == encoder[EOT] == len(encoder) - 1
    assert tok.encode(f"a{EOT}b").ids == [encoder["a"], encoder[EOT], encoder["b"]]
    assert tok.get_vocab_size() == len(encoder)


def test_endoftext_gets_the_next_id_when_encoder_json_lacks_it(gpt2_files, tmp_path):
    d, encoder, _ = gpt2_files
    (tmp_path / "encoder.json").write_text(json.dumps({k: v for k, v in encoder.items() if k != EOT}))
    tok = tokenizer_from_gpt2_files(d / "vocab.bpe", tmp_path / "encoder.json")
    assert tok.token_to_id(EOT) == len(encoder) - 1


def test_matches_tiktoken_itself_on_any_text(gpt2_files):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    d, encoder, text = gpt2_files
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(d / "vocab.bpe"),
                                            encoder_json_file=str(d / "encoder.json"))
    enc = tiktoken.Encoding(name="t", pat_str=TINYPYTHON_PATTERN, mergeable_ranks=ranks,
                            special_tokens={EOT: encoder[EOT]})
    tok = tokenizer_from_gpt2_files(d / "vocab.bpe", d / "encoder.json")
    for sample in [*SAMPLES, text, "naïve = 'Ünïcödé' → ok\r\n  日本語 123456 ÿ\x00"]:
        assert tok.encode(sample).ids == enc.encode(sample), sample


def test_merge_outside_the_vocabulary_is_refused(gpt2_files, tmp_path):
    d, encoder, _ = gpt2_files
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nq z\n")
    with pytest.raises(UserError, match="qz"):
        tokenizer_from_gpt2_files(tmp_path / "vocab.bpe", d / "encoder.json")
