"""Before/after in one run: a benchmark script measured on this tree's library and on an
older revision's, alternately, so a busy machine slows both alike.

``source_tree(rev)`` unpacks ``git archive REV src`` into a temporary folder; ``measure``
runs a script in a child process with that ``src`` first on ``PYTHONPATH`` (``None``: this
tree's) and returns the JSON object the child printed last.  The scripts themselves always
come from this tree, so they may only call what both revisions have.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_tree(rev: str) -> Path:
    """``src`` of revision ``rev``, unpacked into a fresh temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="sparsecircuits-bench-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
                             check=True, capture_output=True).stdout
    tar = out / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as fh:
        fh.extractall(out, filter="data")
    tar.unlink()
    return out / "src"


def measure(script: Path, args: list[str], src: Path | None) -> dict:
    """Run ``script args`` with the library from ``src`` (None: this tree's); its last JSON line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src or ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tree = "the old" if src else "this"
        raise SystemExit(f"{script.name} {' '.join(args)} failed on {tree} tree:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on the machine), rounded."""
    return [round(x, 2) for x in os.getloadavg()]
