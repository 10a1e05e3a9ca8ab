"""Seeded outputs are the same in another process with another hash seed.

Two calls in one process share ``PYTHONHASHSEED``, so a generator that iterates over a set
of strings, or seeds from ``hash()``, looks deterministic there and still changes from run
to run.  Here a second process with a different hash seed recomputes everything seeded
that a user sees again on the next run: the 20 tasks and the control (both splits, two
seeds), the shifted variants and bracket probes of the report card, the corpus manifest
(the train/val split by file) and a trained tokenizer.

Run as a script (``python tests/test_determinism.py TREE``) it prints that fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SAMPLES = ["bisect.py", "colorsys.py", "copy.py", "fnmatch.py", "glob.py", "keyword.py", "textwrap.py",
           "shlex.py", "heapq.py"]
VARIANT_TASKS = ["single_double_quote", "bracket_counting", "for_while"]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def fingerprint(tree: Path) -> dict[str, str]:
    """A short hash of each seeded artefact, computed in this process."""
    from sparsecircuits.analysis.variants import bracket_length_items, bracket_stray_items, variant_items
    from sparsecircuits.data.corpus import collect_corpus
    from sparsecircuits.data.tokenizer import train_tokenizer
    from sparsecircuits.tasks import CONTROL_TASKS, TASKS

    out = {}
    for name, task in {**TASKS, **CONTROL_TASKS}.items():
        out[f"task/{name}"] = _digest([task.generate(24, seed=s, split=sp) for s in (0, 5) for sp in ("train", "test")])
    for name in VARIANT_TASKS:
        base = TASKS[name].generate(8, seed=0, split="test")
        out[f"variants/{name}"] = _digest(variant_items(name, base, 8, seed=3))
    out["bracket_stray"] = _digest(bracket_stray_items(16, seed=2))
    out["bracket_length"] = _digest([bracket_length_items(n, 8, seed=2) for n in (2, 7, 32)])
    corpus = collect_corpus([tree], seed=4, val_frac=0.3)
    out["corpus"] = _digest(corpus.manifest())
    texts = [(tree / n).read_text(encoding="utf-8") for n in SAMPLES]
    out["tokenizer"] = _digest(train_tokenizer(texts, vocab_size=520).to_str())
    return out


def _other_hash_seed() -> str:
    """A hash seed this process does not have (it is random when the variable is unset)."""
    mine = os.environ.get("PYTHONHASHSEED", "")
    return str(int(mine) + 1) if mine.isdigit() else "12345"


def test_seeded_outputs_do_not_depend_on_the_hash_seed(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in SAMPLES:
        shutil.copy(stdlib / name, tree / name)
    here = fingerprint(tree)
    env = dict(os.environ, PYTHONHASHSEED=_other_hash_seed(), OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, str(tree)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    there = json.loads(proc.stdout)
    assert there.keys() == here.keys()
    assert {k for k in here if here[k] != there[k]} == set()


if __name__ == "__main__":
    print(json.dumps(fingerprint(Path(sys.argv[1]))))
