"""Reading what a report shows from a run directory, tolerating broken pieces.

Only a missing or unreadable ``config.json`` is an error; a malformed ``metrics.jsonl``
line, ``tasks.json``, ``eval.json``, ``circuit.json`` or ``annotations.json`` becomes a
warning listed on the index page, so one bad file never hides the rest of a run.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..circuit_sizes import internal_nodes, upgrade_circuit_json
from ..errors import UserError
from ..io import read_json
from ..rundir import ANNOTATIONS, CIRCUIT, CIRCUITS, METRICS, STABILITY, RunDir, stability_matches
from .bridges import read_bridge_report

INDEX = "index.html"


@dataclass
class CircuitEntry:
    """One ``circuits/<dirname>/circuit.json``; ``data`` is None when it could not be read."""

    dirname: str
    task: str
    page: str
    data: dict | None = None
    error: str | None = None
    annotations: dict | None = None  # annotations.json next to circuit.json (supernodes, notes)
    stability: dict | None = None  # stability.json next to it (prune --seeds), when made with this circuit


@dataclass
class RunData:
    path: Path
    name: str
    config: dict
    metrics: list[dict]
    tasks: dict[str, dict]
    circuits: list[CircuitEntry]
    warnings: list[str] = field(default_factory=list)
    measures: dict = field(default_factory=dict)  # eval.json's "measures", when present
    timelines: dict[str, dict] = field(default_factory=dict)  # timelines/TASK.json by task (`timeline`)
    bridge: dict | None = None  # a bridged run's pair, errors and steering curves (report/bridges.py)


def _read_json_soft(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: {exc}"


def _page_name(dirname: str, used: set[str]) -> str:
    """A safe, unique file name for a circuit page (task names are untrusted text)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dirname).strip("._") or "task"
    name, n = f"circuit-{slug}.html", 2
    while name.lower() in used:
        name, n = f"circuit-{slug}-{n}.html", n + 1
    used.add(name.lower())
    return name


def _check_circuit(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("nodes"), list) or not isinstance(data.get("links", []), list):
        return "missing 'nodes' or 'links' list"
    return None


def read_annotations(path: Path, warnings: list[str]) -> dict | None:
    """A circuit's saved reading (the viewer's export); the page checks its contents."""
    if not path.is_file():
        return None
    raw, err = _read_json_soft(path)
    if err or not isinstance(raw, dict):
        warnings.append(f"{path.parent.name}/{path.name}: {err or 'not a JSON object'}")
        return None
    return raw


def load_run_data(run_dir: str | Path) -> RunData:
    """Read everything the report shows; only a missing ``config.json`` is an error."""
    path = Path(run_dir)
    rd = RunDir(path)
    if not path.is_dir():
        raise UserError(f"not a run directory: {path}")
    if not rd.is_run():
        raise UserError(f"not a run directory (no config.json): {path}")
    warnings: list[str] = []
    config, err = _read_json_soft(rd.config)
    if err or not isinstance(config, dict):
        raise UserError(f"run config is not a valid JSON object: {rd.config}")
    metrics, bad = rd.read_metrics()
    if bad:
        warnings.append(f"{METRICS}: skipped {bad} unreadable line(s)")
    tasks = _soft(rd.read_tasks, warnings) or {}
    circuits = _load_circuits(rd, warnings)
    evaluation = _soft(rd.read_eval, warnings) or {}
    measures = evaluation["measures"] if isinstance(evaluation.get("measures"), dict) else {}
    timelines = {t: r for t in rd.timeline_tasks() if (r := _soft(lambda t=t: rd.read_timeline(t), warnings))}
    bridge = read_bridge_report(rd, _read_json_soft, warnings)
    return RunData(path, path.resolve().name, config, metrics, tasks, circuits, warnings, measures, timelines,
                   bridge)


def _soft(read, warnings: list[str]):
    """``read()``, or None with its error as a warning: one damaged file hides nothing else."""
    try:
        return read()
    except UserError as exc:
        warnings.append(str(exc))
        return None


def _load_circuits(rd: RunDir, warnings: list[str]) -> list[CircuitEntry]:
    """Every ``circuits/<dirname>/circuit.json``, each with a page name of its own."""
    circuits: list[CircuitEntry] = []
    used: set[str] = {INDEX}
    for sub in rd.circuit_dirs():
        data, err = _read_json_soft(sub / CIRCUIT)
        err = err or _check_circuit(data)
        task = sub.name
        if not err and isinstance(data.get("task"), str) and data["task"]:
            task = data["task"]
        entry = CircuitEntry(sub.name, task, _page_name(sub.name, used))
        if err:
            entry.error = err
            warnings.append(f"{CIRCUITS}/{sub.name}/{CIRCUIT}: {err}")
        else:
            entry.data = upgrade_circuit_json(data)  # older files: edge counts from their links
            entry.annotations = read_annotations(sub / ANNOTATIONS, warnings)
            entry.stability = _read_stability(rd, sub.name, entry.data, warnings)
        circuits.append(entry)
    return circuits


def _read_stability(rd: RunDir, dirname: str, data: dict, warnings: list[str]) -> dict | None:
    """The circuit's ``stability.json`` if it was made with this very circuit; one that
    belongs to an earlier pruning is a warning, so no other circuit's core is shown."""
    record = _soft(lambda: rd.read_stability(dirname), warnings)
    if record is None:
        return None
    if not stability_matches(record, internal_nodes(data)):
        warnings.append(f"{CIRCUITS}/{dirname}/{STABILITY}: made with another circuit than the one there now "
                        "(pruned again since); run prune --seeds again")
        return None
    return record


def read_circuit_file(path: Path) -> dict:
    """One ``circuit.json`` given by path (``report --compare``): unlike a run's circuits, an
    unreadable one is an error."""
    data = read_json(path, "circuit file")
    err = _check_circuit(data)
    if err:
        raise UserError(f"not a circuit file ({err}): {path}")
    return upgrade_circuit_json(data)
