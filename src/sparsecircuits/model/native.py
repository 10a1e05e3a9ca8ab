"""The CPU kernels of ``csrc/sparse_kernels.c``, compiled on first use and called through ctypes.

Why plain C through ctypes rather than ``torch.utils.cpp_extension``: the file needs no
Python or torch headers, so it compiles in about a second, where a torch extension took
three minutes on a busy 2-core machine; and no build step is added to installing the
package.  The library is built with ``-march=native`` into
``$SPARSECIRCUITS_CACHE/kernels`` (else ``~/.cache/sparsecircuits/kernels``) under a name
that hashes the source, the compiler, the flags and the CPU, so a cache shared between
different machines never hands one a library built for another.  The build goes to a
temporary name and is renamed into place, so a half-written library is never loaded.

Without a C compiler (or on a build failure, or with ``SPARSECIRCUITS_NO_NATIVE=1`` set)
``library()`` returns None and ``unavailable_reason()`` says why; callers then keep
torch's own ops, which compute the same values.

Each kernel handles a range of rows; ``split_rows`` runs it over ``torch.get_num_threads()``
threads (ctypes releases the GIL during the call).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

SOURCE = Path(__file__).with_name("csrc") / "sparse_kernels.c"
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # the second where the compiler lacks -march=native
# rows per thread below which splitting costs more than it saves (thread hand-off ~20 us)
MIN_ROWS_PER_THREAD = 64

_lib: ctypes.CDLL | None = None
_reason: str | None = None
_loaded = False
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def cache_dir() -> Path:
    root = os.environ.get("SPARSECIRCUITS_CACHE") or Path.home() / ".cache" / "sparsecircuits"
    return Path(root).expanduser() / "kernels"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc.split()[0]):
            return cc
    return None


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.machine() + platform.processor()


def _build(cc: str) -> Path:
    src = SOURCE.read_bytes()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([src, cc.encode(), " ".join(flags).encode(), _cpu_id().encode()]))
        target = cache_dir() / f"sparse_kernels-{key.hexdigest()[:16]}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sparse_kernels.", suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = cc.split() + [*flags, "-std=c99", "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                os.replace(tmp, target)
                return target
            errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise RuntimeError(f"{cc} failed: {'; '.join(errors)}")


def _declare(lib: ctypes.CDLL) -> None:
    p, i = ctypes.c_void_p, ctypes.c_int64
    lib.spmm_scatter.argtypes = [p, p, p, p, p, i, i, i, i, p]
    lib.spmm_tiled.argtypes = [p, p, p, p, p, i, i, i, i, p, p]
    lib.abstopk_rows.argtypes = [p, p, p, p, i, i, i, i, p]
    for fn in (lib.spmm_scatter, lib.spmm_tiled, lib.abstopk_rows):
        fn.restype = None


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None if they cannot be built."""
    global _lib, _reason, _loaded
    if _loaded:
        return _lib
    _loaded = True
    if os.environ.get("SPARSECIRCUITS_NO_NATIVE"):
        _reason = "SPARSECIRCUITS_NO_NATIVE is set"
        return None
    cc = _compiler()
    if cc is None:
        _reason = "no C compiler found (set CC)"
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc)))
        _declare(lib)
    except (RuntimeError, OSError, AttributeError) as exc:
        _reason = f"the sparse kernels could not be built: {exc}"
        return None
    _lib = lib
    return lib


def unavailable_reason() -> str | None:
    """Why ``library()`` is None (None when it is not)."""
    library()
    return _reason


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def split_rows(run: Callable[[int, int], None], rows: int) -> None:
    """Call ``run(r0, r1)`` over [0, rows) in one contiguous range per torch thread."""
    global _pool, _pool_size
    threads = min(torch.get_num_threads(), rows // MIN_ROWS_PER_THREAD)
    if threads <= 1:
        run(0, rows)
        return
    if _pool_size < threads - 1:
        _pool, _pool_size = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="sparse-kernels"), threads - 1
    bounds = [rows * t // threads for t in range(threads + 1)]
    futures = [_pool.submit(run, bounds[t], bounds[t + 1]) for t in range(1, threads)]
    run(bounds[0], bounds[1])  # the first range on this thread: one hand-off fewer
    for f in futures:
        f.result()
