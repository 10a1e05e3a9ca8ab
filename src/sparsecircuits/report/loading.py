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

from ..circuit_sizes import upgrade_circuit_json
from ..errors import UserError
from ..io import read_json

INDEX = "index.html"
ANNOTATIONS = "annotations.json"


@dataclass
class CircuitEntry:
    """One ``circuits/<dirname>/circuit.json``; ``data`` is None when it could not be read."""

    dirname: str
    task: str
    page: str
    data: dict | None = None
    error: str | None = None
    annotations: dict | None = None  # annotations.json next to circuit.json (supernodes, notes)


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


def _load_metrics(path: Path, warnings: list[str]) -> list[dict]:
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        warnings.append(f"metrics.jsonl: skipped {bad} unreadable line(s)")
    return rows


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
    if not path.is_dir():
        raise UserError(f"not a run directory: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"not a run directory (no config.json): {path}")
    warnings: list[str] = []
    config, err = _read_json_soft(path / "config.json")
    if err or not isinstance(config, dict):
        raise UserError(f"run config is not a valid JSON object: {path / 'config.json'}")
    metrics = _load_metrics(path / "metrics.jsonl", warnings)
    tasks: dict[str, dict] = {}
    if (path / "tasks.json").is_file():
        raw, err = _read_json_soft(path / "tasks.json")
        if err:
            warnings.append(err)
        elif isinstance(raw, dict) and isinstance(raw.get("tasks"), dict):
            tasks = {str(k): v for k, v in raw["tasks"].items() if isinstance(v, dict)}
        else:
            warnings.append("tasks.json: expected {\"tasks\": {name: {...}}}")
    circuits: list[CircuitEntry] = []
    used: set[str] = {INDEX}
    cdir = path / "circuits"
    if cdir.is_dir():
        for sub in sorted(p for p in cdir.iterdir() if p.is_dir()):
            cfile = sub / "circuit.json"
            if not cfile.is_file():
                continue
            data, err = _read_json_soft(cfile)
            err = err or _check_circuit(data)
            task = sub.name
            if not err and isinstance(data.get("task"), str) and data["task"]:
                task = data["task"]
            entry = CircuitEntry(sub.name, task, _page_name(sub.name, used))
            if err:
                entry.error = err
                warnings.append(f"circuits/{sub.name}/circuit.json: {err}")
            else:
                entry.data = upgrade_circuit_json(data)  # older files: edge counts from their links
                entry.annotations = read_annotations(sub / ANNOTATIONS, warnings)
            circuits.append(entry)
    measures: dict = {}
    if (path / "eval.json").is_file():
        raw, err = _read_json_soft(path / "eval.json")
        if err:
            warnings.append(err)
        elif isinstance(raw, dict) and isinstance(raw.get("measures"), dict):
            measures = raw["measures"]
    return RunData(path, path.resolve().name, config, metrics, tasks, circuits, warnings, measures)


def read_circuit_file(path: Path) -> dict:
    """One ``circuit.json`` given by path (``report --compare``): unlike a run's circuits, an
    unreadable one is an error."""
    data = read_json(path, "circuit file")
    err = _check_circuit(data)
    if err:
        raise UserError(f"not a circuit file ({err}): {path}")
    return upgrade_circuit_json(data)
