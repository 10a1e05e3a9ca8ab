"""Mutation testing of the method's core with mutmut: which one-line faults no test notices.

mutmut puts small faults ("mutants": ``<`` for ``<=``, ``+`` for ``-``, a changed
constant, a dropped argument, ...) into one function at a time and runs the tests that
reach that function; a mutant the tests do not fail on "survives" and marks a property
nothing checks.  The run happens in a temporary copy of the repository (mutmut writes a
``mutants/`` folder next to the code it mutates), so the working tree is never touched.
mutmut skips decorated functions, so in that copy each ``@torch.no_grad()`` function of
the mutated module is first rewritten with a ``with torch.no_grad():`` body (the same
behaviour) to be mutated too.

Each core module is paired with the test files that are meant to guard it; a module is
mutated against those tests only (still tens of minutes a module on 2 shared cores).  Prints one JSON object:
per module the counts by status (``killed``, ``survived``, ``timeout``, ``no tests``,
...), the score ``detected / (detected + survived + no tests)`` (detected: killed, timed
out or crashed) and the survivors, each with mutmut's diff when ``--diffs`` is given.

    pip install -e '.[mutation]'
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mutation.py --module circuits/masking.py --diffs
    python benchmarks/mutation.py            # every core module (long: hours on 2 cores)
    python benchmarks/mutation.py --module model/sparsity.py --mutants 'sparsecircuits.model.sparsity.x_lr_at__mutmut_7'

``--rev HEAD`` mutates the last commit rather than the working tree, ``--mutants`` reruns
chosen mutants (say, an earlier run's survivors once a test is added), and
``--budget-minutes`` bounds a slow module's run, and ``--sample N`` tests N mutants
drawn at random (``--seed``) where all of them would take too long (the score is then
over the sample; ``sampled_from`` says of how many).

Not part of the test suite: run it on demand, like the other benchmarks.
"""
from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/sparsecircuits"

# module (under src/sparsecircuits) -> the test files that guard it; none of them starts a
# subprocess, which would import the unmutated package from src/ and hide every fault
CORE: dict[str, list[str]] = {
    "model/sparsity.py": ["tests/model/test_sparsity.py", "tests/model/test_sparsity_mutants.py"],
    "circuits/masking.py": ["tests/circuits/test_masking.py", "tests/circuits/test_prune_faults.py",
                            "tests/circuits/test_resample.py", "tests/circuits/test_fast_paths.py",
                            "tests/circuits/test_masking_mutants.py"],
    "circuits/prune.py": ["tests/circuits/test_prune.py", "tests/circuits/test_prune_faults.py",
                          "tests/circuits/test_fast_paths.py", "tests/circuits/test_prune_optimiser.py",
                          "tests/circuits/test_tie_qk.py", "tests/circuits/test_prune_mutants.py"],
    "circuits/circuit.py": ["tests/circuits/test_prune.py", "tests/circuits/test_prune_faults.py",
                            "tests/circuits/test_cli_and_files.py", "tests/circuits/test_circuit_build.py",
                            "tests/circuits/test_calibration_mutants.py"],
    "circuits/graph.py": ["tests/circuits/test_graph.py", "tests/circuits/test_graph_mutants.py",
                          "tests/circuits/test_prune.py"],
    "circuit_sizes.py": ["tests/circuits/test_circuit_sizes.py", "tests/circuits/test_stability.py",
                         "tests/circuits/test_cli_and_files.py"],
    "train/checkpoint.py": ["tests/train/test_checkpoint.py", "tests/train/test_checkpoint_state.py",
                            "tests/train/test_checkpoint_mutants.py"],
}
DETECTED = ("killed", "timeout", "segfault", "caught by type check")  # a test noticed the fault
STATUS_LINE = re.compile(r"^\s+(\S+): (.+)$")


COPIED = ("src", "tests", "docs", "pyproject.toml")  # what mutmut and the tests need (docs: the JSON schemas)


def _copy_repo(dest: Path, rev: str | None) -> None:
    """src/, tests/, docs/ and pyproject.toml, from the working tree or (``rev``) from a git commit.

    A commit gives a run that others' unfinished edits in the working tree cannot disturb.
    """
    if rev is None:
        shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copytree(ROOT / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "docs", dest / "docs")
        shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
        return
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, *COPIED],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"mutation: git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")


def _undecorate_no_grad(path: Path) -> int:
    """Rewrite each ``@torch.no_grad()`` function with a ``with torch.no_grad():`` body.

    The same behaviour, but mutmut skips every decorated function (it cannot put its
    trampoline behind an arbitrary decorator), and the no-grad ones are much of the core
    (top-k projection, node means, circuit evaluation).  Returns how many were rewritten.
    """
    import libcst as cst

    class Rewrite(cst.CSTTransformer):
        count = 0

        def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
            decorators = updated.decorators
            if len(decorators) != 1 or cst.Module([]).code_for_node(decorators[0].decorator) != "torch.no_grad()":
                return updated
            stmts = list(updated.body.body)
            head = []
            first = stmts[0] if stmts else None
            if (isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Expr)
                    and isinstance(first.body[0].value, (cst.SimpleString, cst.ConcatenatedString))):
                head, stmts = [first], stmts[1:]  # the docstring stays the docstring
            block = cst.With(items=[cst.WithItem(cst.parse_expression("torch.no_grad()"))],
                             body=cst.IndentedBlock(body=stmts))
            Rewrite.count += 1
            return updated.with_changes(decorators=[], body=updated.body.with_changes(body=[*head, block]))

    tree = cst.parse_module(path.read_text(encoding="utf-8"))
    path.write_text(tree.visit(Rewrite()).code, encoding="utf-8")
    return Rewrite.count


def _configure(dest: Path, module: str, tests: list[str]) -> None:
    """Append a [tool.mutmut] table naming the one module and its tests."""
    table = {
        "source_paths": ["src/"],
        "also_copy": ["docs/"],  # mutmut runs the tests in mutants/, which gets tests/ but not docs/
        "only_mutate": [f"{PKG}/{module}"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-x", "-q"],
        # torch is not fork-safe once it has run: fork each mutant from a clean server
        "process_isolation": "forkserver",
        # a mutant's process also builds the session fixtures (a tiny data set, a short
        # training) that the per-test times mutmut measures leave out: without room for
        # them a fault the tests would catch is reported as a timeout.  mutmut allows
        # (estimate + constant) x multiplier seconds of wall time, twice that of CPU time.
        "timeout_multiplier": 5.0,
        "timeout_constant": 60.0,
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    with open(dest / "pyproject.toml", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _mutmut(dest: Path, *args: str, budget: float | None = None) -> tuple[subprocess.CompletedProcess, bool]:
    """Run one mutmut command in ``dest``; (its result, whether ``budget`` seconds ran out).

    Out of budget, mutmut is stopped as by Ctrl-C: it stops its workers and keeps the
    verdicts it has (each is saved as it comes), the rest stay "not checked".
    """
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONHASHSEED="0")
    # mutmut's own entry point (its console script does the same): `python -m mutmut`
    # re-executes mutmut.__main__ and warns on every worker
    # SIGINT handled as Ctrl-C even when this script runs in the background (where the
    # shell starts it with SIGINT ignored, and the child would inherit that)
    cmd = [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from mutmut.__main__ import cli; cli()", *args]
    proc = subprocess.Popen(cmd, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=budget)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err), False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: mutmut and the workers it forked
            out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err), True


def _generate(dest: Path) -> list[str]:
    """Write the module's mutants (as ``mutmut run`` does first) and return their names, running no test.

    The names let a run test a random sample of the mutants (``--sample``) where testing
    them all would not fit the time at hand.
    """
    code = ("import os; from mutmut.__main__ import copy_src_dir, copy_also_copy_files, setup_source_paths, "
            "create_mutants, set_mutant_under_test; set_mutant_under_test('mutant_generation'); "
            "os.makedirs('mutants', exist_ok=True); copy_src_dir(); copy_also_copy_files(); "
            "setup_source_paths(); create_mutants(1)")
    made = subprocess.run([sys.executable, "-c", code], cwd=dest, capture_output=True, text=True)
    if made.returncode != 0:
        sys.exit(f"mutation: generating the mutants failed: {made.stderr.strip()[-2000:]}")
    listed, _ = _mutmut(dest, "results", "--all", "true")
    return sorted(m.group(1) for m in map(STATUS_LINE.match, listed.stdout.splitlines()) if m)


def run_module(module: str, tests: list[str], max_children: int, diffs: bool, keep: Path | None,
               rev: str | None = None, only: list[str] | None = None, budget: float | None = None,
               sample: int | None = None, seed: int = 0) -> dict:
    """Mutate one module in a fresh copy and collect mutmut's verdicts.

    ``only``: mutant-name patterns (fnmatch, as ``mutmut run`` takes them, e.g.
    ``*.x_lr_at__mutmut_*``); the others are neither run nor reported.  ``budget``:
    seconds for ``mutmut run``; mutmut tests the mutants with the fastest tests first, so
    a run cut short has judged those, and reports the others as "not checked".
    ``sample``: test only this many of the (matching) mutants, drawn at random with
    ``seed``; the score is then killed / tested over the sample.
    """
    work = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        _copy_repo(work, rev)
        missing = [t for t in tests if not (work / t).exists()]
        if missing:
            return {"module": module, "error": f"test files not found: {' '.join(missing)}"}
        undecorated = _undecorate_no_grad(work / PKG / module)
        _configure(work, module, tests)
        print(f"mutation: {module} against {' '.join(tests)}", file=sys.stderr, flush=True)
        population = None
        if sample is not None:
            names = _generate(work)
            if only:
                names = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in only)]
            population = len(names)
            only = sorted(random.Random(seed).sample(names, min(sample, len(names))))
        t0 = time.perf_counter()
        run, out_of_budget = _mutmut(work, "run", "--max-children", str(max_children), *(only or []), budget=budget)
        seconds = time.perf_counter() - t0
        listed, _ = _mutmut(work, "results", "--all", "true")
        statuses: dict[str, str] = {}
        for line in listed.stdout.splitlines():
            m = STATUS_LINE.match(line)
            if m and (not only or any(fnmatch.fnmatch(m.group(1), pat) for pat in only)):
                statuses[m.group(1)] = m.group(2).strip()
        if (run.returncode != 0 and not out_of_budget) or all(s == "not checked" for s in statuses.values()):
            # mutmut stops before mutating when the unmutated tests fail: show why
            tail = (run.stdout + run.stderr).strip().splitlines()[-25:]
            return {"module": module, "error": f"mutmut run exited {run.returncode} with "
                                               f"{len(statuses)} mutants and no verdicts", "output": tail}
        counts: dict[str, int] = {}
        for s in statuses.values():
            counts[s] = counts.get(s, 0) + 1
        detected = sum(counts.get(s, 0) for s in DETECTED)
        judged = detected + counts.get("survived", 0) + counts.get("no tests", 0)
        survivors = []
        for name, s in sorted(statuses.items()):
            if s in ("survived", "no tests"):
                entry: dict = {"mutant": name, "status": s}
                if diffs:
                    shown = _mutmut(work, "show", name)[0].stdout
                    entry["diff"] = [ln for ln in shown.splitlines() if ln.startswith(("-", "+"))
                                     and not ln.startswith(("---", "+++"))]
                survivors.append(entry)
        return {"module": module, "tests": tests, "rev": rev or "working tree", "mutants": len(statuses),
                "sampled_from": population, "seed": seed if sample is not None else None,
                "undecorated": undecorated,
                "counts": counts,
                "score": round(detected / judged, 4) if judged else None, "seconds": round(seconds, 1),
                "out_of_budget": out_of_budget,
                "survivors": survivors}
    finally:
        if keep is not None:
            target = keep / module.replace("/", "_").removesuffix(".py")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work, target, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(CORE),
                    help="a core module to mutate (repeatable; default: all of them)")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="mutants tested in parallel (default: half the cores)")
    ap.add_argument("--diffs", action="store_true", help="include each survivor's diff")
    ap.add_argument("--keep", type=Path, help="copy each run's work folder (mutants/, results) here")
    ap.add_argument("--rev", help="mutate this git commit (e.g. HEAD) instead of the working tree")
    ap.add_argument("--mutants", action="append", metavar="PATTERN",
                    help="run only the mutants matching this name pattern (repeatable; e.g. the survivors "
                         "of an earlier run, '*.x_lr_at__mutmut_*'); needs one --module")
    ap.add_argument("--budget-minutes", type=float,
                    help="stop each module's mutmut run after this long (the mutants with the fastest tests "
                         "come first; the rest are reported as not checked)")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="test N mutants of each module drawn at random (of those --mutants matches), not all")
    ap.add_argument("--seed", type=int, default=0, help="the random draw of --sample (default 0)")
    args = ap.parse_args()
    if args.sample is not None and args.sample < 1:
        ap.error("--sample must be at least 1")
    if args.mutants and len(args.module or []) != 1:
        ap.error("--mutants needs exactly one --module")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        ap.error("mutmut is not installed: pip install -e '.[mutation]'")
    modules = args.module or list(CORE)
    if args.rev:  # pin the commit, so every module of this run mutates the same one
        found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.rev}^{{commit}}"],
                               capture_output=True, text=True)
        if found.returncode != 0:
            ap.error(f"--rev {args.rev} is not a commit of {ROOT}")
        args.rev = found.stdout.strip()
    budget = None if args.budget_minutes is None else 60 * args.budget_minutes
    out = [run_module(m, CORE[m], args.max_children, args.diffs, args.keep, args.rev, args.mutants, budget,
                      args.sample, args.seed)
           for m in modules]
    print(json.dumps({"tool": "mutmut", "modules": out}, indent=2))


if __name__ == "__main__":
    main()
