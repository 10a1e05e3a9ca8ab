"""The run directory: the name of every file a run holds, how each is read and written,
and when a result cached in it still holds.

::

    RUN/
      config.json                  the RunConfig (model, train, data, seed)
      tokenizer.json               the byte-level BPE (absent for some imported models)
      model.safetensors            the final weights
      launch.json                  the torchrun launch that created the run (train/elastic.py)
      imported_from.json           an imported model's source (interop/openai.py)
      metrics.jsonl                one JSON object per logged step, appended while training
      checkpoints/step_NNNNNNN/    resumable training state (train/checkpoint.py)
      eval.json                    `eval`'s loss and the model's own measures
      tasks.json                   the full model's accuracy and loss per task
      node_means.safetensors       every node's mean activation (circuits/masking.py)
      circuits/TASK/circuit.json   a pruned circuit; annotations.json and search.json beside it
      circuits/TASK/stability.json `prune --seeds K`: every seed's nodes, their overlap and stable core
      circuits/TASK@VARIANT/       the same task pruned another way (``prune --method attribution``:
                                   TASK@attribution; the frontier's TASK@zero), kept apart
      circuits/summary.json        `prune --all-tasks`: the sizes and their geometric mean
      controls/TASK/circuit.json   nonsense-control circuits that `check` prunes; kept out of
                                   circuits/ so that the report and viewer list real circuits only
      kept/step_NNNNNNN/           the weights kept at one step during training (train.keep_checkpoints),
                                   a run directory of its own for that step's model.safetensors,
                                   node_means.safetensors and circuits/TASK/circuit.json, so a
                                   checkpoint's circuit never replaces the final model's
      timelines/TASK.json          `timeline`: the circuit of every kept step, and each node's persistence
      report/                      the HTML report
      bridge.json                  a bridged run: its dense run and the bridges' shapes
      bridges.safetensors          a bridged run's bridge weights (model.safetensors is the
                                   sparse model alone, an ordinary run)
      bridge_eval.json             `bridge eval`'s errors per location
      steer/TASK/NODE.{json,png}   `bridge steer`'s curves

Everything else asks this module for a path or a file's contents instead of spelling a
name, so a file moves by editing one line.  Writes are atomic (``io.py``): a crash leaves
the old file or the new one.  A file that exists but cannot be read is one ``UserError``
naming it.  No torch import: the report, the viewer and argument checks use this too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .circuit_sizes import EDGE_COUNT
from .errors import UserError
from .io import atomic_write_json, atomic_write_text, read_json, to_jsonable

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
LAUNCH = "launch.json"
IMPORTED = "imported_from.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval.json"
TASKS = "tasks.json"
NODE_MEANS = "node_means.safetensors"
CIRCUITS = "circuits"
CIRCUIT = "circuit.json"
ANNOTATIONS = "annotations.json"
SEARCH = "search.json"
STABILITY = "stability.json"
SUMMARY = "summary.json"
CONTROLS = "controls"
REPORT = "report"
BRIDGE = "bridge.json"
BRIDGE_WEIGHTS = "bridges.safetensors"
BRIDGE_EVAL = "bridge_eval.json"
STEER = "steer"
KEPT = "kept"
TIMELINES = "timelines"

# The values that decide what pruning finds: a cached circuit is reused only when each of
# them was recorded with the value asked for now (see ``circuit_key``).
PRUNE_KEYS = ("target_loss", "ablation", "steps", "k_coefs", "n_train", "n_test", "tie_qk")
# what a circuit written before a setting existed was pruned with
RECORDED_DEFAULTS = {"tie_qk": False}
CACHE_KEYS = ("task", "seed", "edge_count") + PRUNE_KEYS


def circuit_key(task: str, seed: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a cached circuit must have been pruned with to stand for a new pruning of
    ``task`` with ``seed`` and ``settings`` (``PruneSettings`` as a dict): the task, the
    seed, the pruning settings that change the result, and today's edge-count convention
    (a circuit counted another way is pruned again rather than mixed in)."""
    missing = [k for k in PRUNE_KEYS if k not in settings and k not in RECORDED_DEFAULTS]
    if missing:
        raise ValueError(f"pruning settings lack {', '.join(missing)}")
    return {"task": task, "seed": int(seed), "edge_count": EDGE_COUNT,
            **{k: to_jsonable(settings.get(k, RECORDED_DEFAULTS.get(k))) for k in PRUNE_KEYS}}


def variant_folder(task: str, variant: str | None) -> str:
    """The ``circuits/`` folder of ``task`` pruned another way (None: the plain circuit)."""
    return task if not variant else f"{task}@{variant}"


def recorded_key(data: Mapping[str, Any]) -> dict[str, Any]:
    """``circuit_key``'s values as a saved ``circuit.json`` records them (missing ones None)."""
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    settings = metrics.get("settings") if isinstance(metrics.get("settings"), dict) else {}
    return {"task": data.get("task"), "seed": metrics.get("seed", 0), "edge_count": metrics.get("edge_count"),
            **{k: settings.get(k, RECORDED_DEFAULTS.get(k)) for k in PRUNE_KEYS}}


def stability_matches(record: Mapping[str, Any], circuit_nodes: Iterable[str]) -> bool:
    """Whether a ``stability.json`` was made with this circuit (its first run has the
    circuit's node set), so a circuit pruned again since does not show another one's core."""
    runs = record.get("runs")
    if not isinstance(runs, list) or not runs or not isinstance(runs[0], dict):
        return False
    nodes = runs[0].get("nodes")
    return isinstance(nodes, list) and set(nodes) == set(circuit_nodes)


def parse_metrics(text: str) -> Iterator[tuple[str, dict | None]]:
    """Each non-blank line of ``metrics.jsonl`` with its record, or None where the line is
    not a JSON object (a line cut short by a kill mid-write, or damage)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        yield line, row if isinstance(row, dict) else None


@dataclass(frozen=True)
class RunDir:
    """A run directory's paths and files; ``RunDir(path)`` touches nothing on disk."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # -- paths ---------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def launch(self) -> Path:
        return self.path / LAUNCH

    @property
    def imported(self) -> Path:
        return self.path / IMPORTED

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def eval(self) -> Path:
        return self.path / EVAL

    @property
    def tasks(self) -> Path:
        return self.path / TASKS

    @property
    def node_means(self) -> Path:
        return self.path / NODE_MEANS

    @property
    def circuits(self) -> Path:
        return self.path / CIRCUITS

    @property
    def summary(self) -> Path:
        return self.circuits / SUMMARY

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def bridge(self) -> Path:
        return self.path / BRIDGE

    @property
    def bridge_weights(self) -> Path:
        return self.path / BRIDGE_WEIGHTS

    @property
    def bridge_eval(self) -> Path:
        return self.path / BRIDGE_EVAL

    def steer(self, task: str, node: str) -> Path:
        """The stem (no suffix) of a steering curve's files: ``:`` is no file-name character."""
        return self.path / STEER / task / node.replace(":", "_")

    def circuit_dir(self, task: str) -> Path:
        return self.circuits / task

    def circuit(self, task: str) -> Path:
        return self.circuit_dir(task) / CIRCUIT

    def annotations(self, task: str) -> Path:
        return self.circuit_dir(task) / ANNOTATIONS

    def search(self, task: str) -> Path:
        return self.circuit_dir(task) / SEARCH

    def stability(self, task: str) -> Path:
        return self.circuit_dir(task) / STABILITY

    def control(self, name: str) -> Path:
        return self.path / CONTROLS / name / CIRCUIT

    def kept(self, step: int) -> "RunDir":
        """The folder of the weights kept at ``step``: a run directory for that step's model
        (weights, node means, circuits), without config or tokenizer of its own."""
        return RunDir(self.path / KEPT / f"step_{int(step):07d}")

    def kept_steps(self) -> list[int]:
        """Steps whose kept weights are on disk, in order."""
        folder = self.path / KEPT
        if not folder.is_dir():
            return []
        steps = [int(d.name[len("step_"):]) for d in folder.iterdir()
                 if d.name.startswith("step_") and d.name[len("step_"):].isdigit() and (d / WEIGHTS).is_file()]
        return sorted(steps)

    def timeline(self, task: str) -> Path:
        return self.path / TIMELINES / f"{task}.json"

    def timeline_tasks(self) -> list[str]:
        """Tasks with a ``timelines/TASK.json``, sorted by name."""
        folder = self.path / TIMELINES
        return sorted(p.stem for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []

    def is_run(self) -> bool:
        """A folder with a ``config.json`` is a run (weights may still be training)."""
        return self.config.is_file()

    def circuit_dirs(self) -> list[Path]:
        """``circuits/*/`` folders holding a ``circuit.json``, sorted by name."""
        if not self.circuits.is_dir():
            return []
        return sorted(d for d in self.circuits.iterdir() if d.is_dir() and (d / CIRCUIT).is_file())

    # -- config --------------------------------------------------------------------
    def read_config(self):
        """The run's ``RunConfig`` (a missing or malformed file is a UserError naming it)."""
        from .config import RunConfig

        return RunConfig.load(self.config)

    def write_config(self, cfg) -> None:
        cfg.save(self.config)

    # -- metrics.jsonl -------------------------------------------------------------
    def read_metrics(self) -> tuple[list[dict], int]:
        """The logged records in order and how many lines could not be read; a run that
        has logged nothing yet gives ``([], 0)``."""
        if not self.metrics.is_file():
            return [], 0
        rows, bad = [], 0
        for _, row in parse_metrics(self.metrics.read_text(encoding="utf-8", errors="replace")):
            if row is None:
                bad += 1
            else:
                rows.append(row)
        return rows, bad

    def start_metrics(self) -> None:
        atomic_write_text(self.metrics, "")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """One record as one line (appended, not atomic: ``rewind_metrics`` drops a torn one)."""
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def rewind_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run logs them again) and lines
        that cannot be read; the file is rewritten only if that changes it."""
        if not self.metrics.exists():
            return
        text = self.metrics.read_text(encoding="utf-8", errors="replace")
        kept = [line for line, row in parse_metrics(text)
                if row is not None and _is_number(row.get("step")) and row["step"] <= step]
        new = "".join(line + "\n" for line in kept)
        if new != text:
            atomic_write_text(self.metrics, new)

    # -- JSON files ----------------------------------------------------------------
    def _read_object(self, path: Path, what: str) -> dict | None:
        """A JSON object file, None when absent; damage is a UserError naming the file."""
        if not path.is_file():
            return None
        data = read_json(path, what=what)
        if not isinstance(data, dict):
            raise UserError(f"{what} is not a JSON object: {path}")
        return data

    def read_tasks(self) -> dict[str, dict]:
        """``{task: {"accuracy", "loss", ...}}`` from ``tasks.json``; {} when there is none."""
        data = self._read_object(self.tasks, "task scores file")
        if data is None:
            return {}
        if not isinstance(data.get("tasks"), dict):
            raise UserError(f'task scores file has no {{"tasks": {{name: {{...}}}}}} object: {self.tasks}')
        return {str(k): v for k, v in data["tasks"].items() if isinstance(v, dict)}

    def write_tasks(self, scores: list[dict], split: str, n: int) -> Path:
        """The full model's score per task (each a dict with ``"task"``), scored on ``n``
        items of ``split``."""
        data = {"split": split, "n": n, "tasks": {s["task"]: s for s in scores}}
        atomic_write_json(self.tasks, to_jsonable(data))
        return self.tasks

    def read_eval(self) -> dict | None:
        return self._read_object(self.eval, "evaluation file")

    def write_eval(self, result: Mapping[str, Any]) -> Path:
        atomic_write_json(self.eval, to_jsonable(dict(result)))
        return self.eval

    def read_summary(self) -> dict | None:
        return self._read_object(self.summary, "circuit summary")

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        atomic_write_json(self.summary, to_jsonable(dict(summary)))
        return self.summary

    def write_search(self, task: str, record: Mapping[str, Any]) -> Path:
        """A failed hyperparameter search's trials, kept beside where its circuit would be."""
        path = self.search(task)
        atomic_write_json(path, to_jsonable(dict(record)))
        return path

    def read_timeline(self, task: str) -> dict | None:
        return self._read_object(self.timeline(task), "timeline file")

    def write_timeline(self, task: str, record: Mapping[str, Any]) -> Path:
        path = self.timeline(task)
        atomic_write_json(path, to_jsonable(dict(record)))
        return path

    def read_stability(self, task: str) -> dict | None:
        """``prune --seeds``'s record for a task, None when there is none."""
        return self._read_object(self.stability(task), "stability file")

    def write_stability(self, task: str, record: Mapping[str, Any]) -> Path:
        path = self.stability(task)
        atomic_write_json(path, to_jsonable(dict(record)))
        return path

    def read_circuit(self, task: str) -> dict:
        """A circuit's raw JSON (``Circuit.load`` checks its shape)."""
        path = self.circuit(task)
        data = self._read_object(path, "circuit file")
        if data is None:
            raise UserError(f"circuit file not found: {path}")
        return data

    # -- freshness -----------------------------------------------------------------
    def older_than_weights(self, path: Path) -> bool:
        """A file written before the run's weights was computed from an earlier model."""
        return self.weights.is_file() and path.stat().st_mtime_ns < self.weights.stat().st_mtime_ns

    def fresh_circuit(self, path: Path, want: Mapping[str, Any]) -> dict | None:
        """The circuit cached at ``path`` if it still stands for ``want`` (``circuit_key``),
        else None and the caller prunes again.  It stands when it was written after the
        run's weights, reads as a JSON object, and records every value of ``want``."""
        if not path.is_file() or self.older_than_weights(path):
            return None
        try:
            data = read_json(path, what="circuit file")
        except UserError:
            return None  # damaged: pruning again replaces it
        if not isinstance(data, dict):
            return None
        have = recorded_key(data)
        return data if all(have.get(k) == v for k, v in want.items()) else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
