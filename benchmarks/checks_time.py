"""Wall and CPU time of the report card (the faithfulness checks) and of node details for one
circuit (targets on 2 CPU cores: the report card at most 20 s, node details at most 15 s).

Works on a copy of RUN_DIR (weights, node means, tokenizer and the circuit, modification
times kept so the node means stay valid), without the cached control circuits, so the
controls are pruned and timed too (``--cached-controls``: with them, as a second report
card finds them).  Prints one JSON object: per check its ``seconds``,
``cpu_seconds`` and value; ``checks_seconds`` in all and ``controls_seconds`` (the checks
that prune a control: nonsense_control and random_weights, which a run directory caches
after the first report card); ``details_seconds`` (``compute_details`` with
``--detail-pairs`` test pairs, default the circuit's own count) and its CPU time.

With ``--compare REV`` the same measurement runs on this tree's library and on revision
REV's, alternately (``compare.py``), and the object holds both sides, the before/after
ratios, whether every check gave the same value, and the load average.

    python benchmarks/checks_time.py RUN_DIR --task while_return_true [--detail-pairs 32] [--compare REV]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

CONTROL_CHECKS = ("nonsense_control", "random_weights")
RUN_FILES = ("config.json", "model.safetensors", "node_means.safetensors", "tokenizer.json")


def _copy_run(run_dir: Path, task: str, into: Path, controls: bool = False) -> Path:
    """The run's weights, means, tokenizer and this task's circuit, modification times kept;
    with ``controls`` also its cached control circuits (the report card's second run)."""
    out = into / "run"
    (out / "circuits" / task).mkdir(parents=True)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, out / name)
    shutil.copy2(run_dir / "circuits" / task / "circuit.json", out / "circuits" / task / "circuit.json")
    if controls and (run_dir / "controls").is_dir():
        shutil.copytree(run_dir / "controls", out / "controls")
    return out


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def _time_each_check(checks: dict) -> None:
    """Wrap every registered check so that its wall and CPU time land in ``checks[name]``
    while ``run_checks`` runs them all in one context (as the report card does)."""
    from dataclasses import replace

    from sparsecircuits.analysis.faithfulness import registry

    registry.all_checks()  # imports every check module

    def timed(name, fn):
        def run(ctx):
            out, sec, cpu = _timed(lambda: fn(ctx))
            checks[name].update(seconds=sec, cpu_seconds=cpu)
            return out
        return run

    for name, check in list(registry._REGISTRY.items()):
        if name in checks:
            registry._REGISTRY[name] = replace(check, fn=timed(name, check.fn))


def measure(args) -> dict:
    import torch

    from sparsecircuits.analysis.faithfulness import default_checks, run_checks
    from sparsecircuits.analysis.node_details import compute_details
    from sparsecircuits.circuits.circuit import Circuit
    from sparsecircuits.run import load_run

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = _copy_run(Path(args.run_dir), args.task, Path(tmp), args.cached_controls)
        run = load_run(run_dir)
        circuit = Circuit.load(run_dir / "circuits" / args.task / "circuit.json")
        circuit.attach(run)
        circuit.baseline()  # node means read once, outside the timings
        checks = {name: {} for name in default_checks(args.task)}
        _time_each_check(checks)
        results, sec, cpu = _timed(lambda: run_checks(run, circuit, progress=False))
        for name, r in checks.items():
            r["value"] = results[name]["value"] if name in results else None
        details, d_sec, d_cpu = _timed(lambda: compute_details(run, circuit, progress=False,
                                                               n_test=args.detail_pairs))
    total = lambda key, names: round(sum(checks[n][key] for n in names), 2)  # noqa: E731
    controls = [n for n in checks if n in CONTROL_CHECKS]
    return {"task": args.task, "n_nodes": circuit.n_nodes, "checks": checks,
            "checks_seconds": sec, "checks_cpu_seconds": cpu,
            "controls_seconds": total("seconds", controls), "controls_cpu_seconds": total("cpu_seconds", controls),
            "details_seconds": d_sec, "details_cpu_seconds": d_cpu, "details_nodes": len(details),
            "detail_pairs": args.detail_pairs, "threads": torch.get_num_threads()}


def compare(args) -> dict:
    from compare import load_average, measure as measure_child, source_tree

    old_src = source_tree(args.compare)
    child = [args.run_dir, "--task", args.task, "--threads", str(args.threads)]
    if args.cached_controls:
        child.append("--cached-controls")
    if args.detail_pairs:
        child += ["--detail-pairs", str(args.detail_pairs)]
    load = [load_average()]
    before = measure_child(Path(__file__), child, old_src)
    load.append(load_average())
    after = measure_child(Path(__file__), child, None)
    load.append(load_average())
    ratio = lambda key: round(before[key] / max(after[key], 1e-9), 2)  # noqa: E731
    same = {n: before["checks"][n]["value"] == after["checks"][n]["value"] for n in before["checks"]}
    return {"revision": args.compare, "before": before, "after": after,
            "speedup_checks_seconds": ratio("checks_seconds"), "speedup_checks_cpu": ratio("checks_cpu_seconds"),
            "speedup_details_seconds": ratio("details_seconds"), "speedup_details_cpu": ratio("details_cpu_seconds"),
            "same_values": same, "load_average": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--task", required=True)
    ap.add_argument("--detail-pairs", type=int, default=None, help="test pairs for node details")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--compare", metavar="REV", help="also time revision REV's library")
    ap.add_argument("--cached-controls", action="store_true",
                    help="keep the run's cached control circuits (the card as it runs a second time)")
    args = ap.parse_args()
    print(json.dumps(compare(args) if args.compare else measure(args)))


if __name__ == "__main__":
    main()
