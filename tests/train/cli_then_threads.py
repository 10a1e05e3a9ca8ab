"""Run the CLI, then record which threads are still alive in this process (for torchrun).

    torchrun ... tests/train/cli_then_threads.py OUT_DIR train ...

writes ``OUT_DIR/threads.<restart>.<rank>.json``: the names of the OS threads left
after the command returned, and its exit code. Anything but the main thread left at
that point is still running when the interpreter shuts down, which is how a gloo
worker thread used to abort a successful run at exit.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sparsecircuits.cli import main


def thread_names() -> list[str]:
    names = []
    for tid in sorted(os.listdir("/proc/self/task")):
        try:
            names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


if __name__ == "__main__":
    out = Path(sys.argv[1])
    rc = main(sys.argv[2:])
    record = {"rc": rc, "threads": thread_names()}
    name = f"threads.{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}.{os.environ.get('RANK', '0')}.json"
    (out / name).write_text(json.dumps(record))
    sys.exit(rc)
