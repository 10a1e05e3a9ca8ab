"""import-openai from the Hugging Face Hub, offline, through huggingface_hub's own cache.

The test lays out a Hub cache by hand (``models--OWNER--NAME/{blobs,refs,snapshots}``, files
as symlinks into blobs, as huggingface_hub writes it) with two commits of a small model
folder, then runs the CLI with ``HF_HUB_OFFLINE=1``: the real client resolves branches,
tags and commit hashes from that cache, so revision pinning is exercised for real and
nothing is downloaded.  The imported model has no tokenizer: it still loads and runs on
token ids, and only text asks for a tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.interop.openai import import_openai
from sparsecircuits.run import load_run

REPO = "openai/circuit-sparsity"
SUB = "csp_small"
NEW, OLD = "a" * 40, "b" * 40


def _add_snapshot(repo_dir: Path, commit: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture
def hub_cache(tmp_path, openai_folder, fmt):
    """A Hub cache with REPO at two commits (main -> NEW, tag v1 -> OLD), and the two source folders."""
    repo_dir = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    folders = {}
    for commit, seed in ((NEW, 0), (OLD, 1)):
        folder, _ = openai_folder(fmt.SMALL, name=f"src{seed}", seed=seed)
        folders[commit] = folder
        _add_snapshot(repo_dir, commit, {f"{SUB}/{f.name}": f.read_bytes() for f in folder.iterdir()}
                      | {"README.md": b"models\n"})
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(NEW)
    (repo_dir / "refs" / "v1").write_text(OLD)
    return tmp_path / "hub", folders


def _cli(args: list, cache: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(home),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sparsecircuits", "import-openai", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_run(a).model.state_dict(), load_run(b).model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hub_import_pins_revisions_offline(hub_cache, tmp_path):
    cache, folders = hub_cache
    home = tmp_path / "hf_home"
    refs = {c: import_openai(f, tmp_path / f"ref_{c[0]}").out for c, f in folders.items()}

    p = _cli([f"hf://{REPO}/{SUB}", "--out", tmp_path / "main"], cache, home)
    assert p.returncode == 0, p.stderr
    assert f"commit {NEW[:12]}" in p.stdout and "no tokenizer" in p.stderr
    assert _same_weights(tmp_path / "main", refs[NEW])
    prov = json.loads((tmp_path / "main" / "imported_from.json").read_text())["hub"]
    assert prov == {"repo_id": REPO, "subfolder": SUB, "revision": "main", "commit": NEW}

    p = _cli(["--hub-repo", REPO, "--subfolder", SUB, "--revision", OLD, "--out", tmp_path / "pinned"], cache, home)
    assert p.returncode == 0, p.stderr
    assert _same_weights(tmp_path / "pinned", refs[OLD]) and not _same_weights(tmp_path / "pinned", refs[NEW])

    p = _cli([f"hf://{REPO}@v1/{SUB}", "--out", tmp_path / "tag"], cache, home)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "tag" / "imported_from.json").read_text())["hub"]["commit"] == OLD


@pytest.mark.parametrize("args, needle", [
    ([f"hf://{REPO}/no_such_model"], "no folder 'no_such_model'"),
    ([f"hf://{REPO}@v9/{SUB}"], "not in the Hub cache"),
    ([f"hf://someone/else/{SUB}"], "not in the Hub cache"),
    ([f"hf://{REPO}/{SUB}", "--subfolder", "x"], "--subfolder goes with --hub-repo"),
    (["--hub-repo", "not a repo"], "not a Hub repository id"),
])
def test_hub_errors_are_one_line_and_write_nothing(hub_cache, tmp_path, args, needle):
    cache, _ = hub_cache
    p = _cli([*args, "--out", tmp_path / "out"], cache, tmp_path / "hf_home")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_without_tokenizer_loads_and_runs_on_token_ids(openai_folder, fmt, tmp_path):
    folder, _ = openai_folder(fmt.SMALL)
    out = import_openai(folder, tmp_path / "run").out
    assert not (out / "tokenizer.json").exists()
    run = load_run(out)
    tokens = torch.tensor([[1, 5, 7, 2]])
    logits = run.model(tokens)  # (1, 4, vocab)
    assert logits.shape == (1, 4, fmt.SMALL["vocab_size"]) and torch.isfinite(logits).all()
    _, cache = run.model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_q"].shape[:2] == (1, 4)
    assert not run.tokenizer
    for use in (lambda: run.encode("x = 1"), lambda: run.decode([1, 2]), lambda: run.tokenizer.get_vocab()):
        with pytest.raises(UserError, match="no tokenizer.json.*token ids"):
            use()
