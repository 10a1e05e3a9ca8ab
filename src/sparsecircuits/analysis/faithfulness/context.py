"""What every check needs: the circuit's own ablation and calibration, the task's items
(the very ones pruning used), and a few ways to score and read the circuit on them."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ...circuits.circuit import Circuit, calibrated_diff, circuit_diffs, fit_calibration, orientation
from ...circuits.masking import MaskedModel
from ...circuits.nodes import NodeSet
from ...config import TARGET_LOSS
from ...errors import UserError
from ...tasks.base import TaskBatch, TaskExample, TaskItem, encode_examples, example_units, score_diffs

MAX_CALIBRATION_PAIRS = 128  # train pairs used to fit scales and shifts in the checks
VARIANT_PAIRS = 64  # pairs per shifted variant and per probe


def result(value: float, threshold: float, passed: bool, detail: str, data: Any = None) -> dict:
    """One check's verdict: ``{"value", "threshold", "verdict", "detail"[, "data"]}``."""
    out = {"value": float(value), "threshold": float(threshold), "verdict": "pass" if passed else "flag",
           "detail": detail}
    if data is not None:
        out["data"] = data
    return out


def encode_items(run, items: Sequence[TaskItem | TaskExample],
                 task_name: str = "custom") -> tuple[TaskBatch | None, int]:
    """Encode pairs (or examples) under the run's tokenizer, dropping any that do not fit.

    Shifted prompts can be longer than the model's context or tokenize so that an answer
    is not one token; those pairs are left out (and counted) rather than failing the
    whole check.  Returns ``(batch or None, number dropped)``.
    """
    if not items:
        return None, 0
    units, _ = example_units(items, task_name)
    max_len = run.model.cfg.block_size
    flat = [e for u in units for e in u]
    try:
        return encode_examples(run.tokenizer, flat, task_name=task_name, max_len=max_len), 0
    except UserError:
        pass
    kept, dropped = [], 0
    for u in units:
        try:
            encode_examples(run.tokenizer, u, task_name=task_name, max_len=max_len)
            kept += u
        except UserError:
            dropped += 1
    if not kept:
        return None, dropped
    return encode_examples(run.tokenizer, kept, task_name=task_name, max_len=max_len), dropped


class CheckContext:
    """The circuit, its model masked with the circuit's ablation, its task and items.

    ``task`` is anything with ``generate(n, seed, split)``; items are drawn with the
    circuit's pruning seed and counts, so the test items are those behind its reported
    loss.  ``seed`` is the checks' own (random circuits, shifted prompts); ``options``
    holds what only some checks read (``n_random``, ``variants``, ``control``).
    """

    def __init__(self, run, circuit: Circuit, task, seed: int, means: torch.Tensor | None,
                 progress: bool = False, **options) -> None:
        self.run, self.circuit, self.seed, self.progress = run, circuit, seed, progress
        self.model = run.model
        self.nodes = NodeSet.from_model(self.model)
        if circuit.keep.shape != (self.nodes.n,):
            raise UserError("the circuit was pruned on a model of another shape than this run's")
        self.keep = circuit.keep.to(torch.bool).cpu()
        self.ablation = circuit.ablation
        self.baseline = means if means is not None and self.ablation == "mean" else circuit.baseline()
        self.masked = MaskedModel(self.model, self.baseline, self.nodes)
        self.full = MaskedModel(self.model, None, self.nodes)
        s = dict(circuit.settings or {})
        self.settings = s
        self.target = float(circuit.metrics.get("target_loss", s.get("target_loss", TARGET_LOSS)))
        self.n_train = int(s.get("n_train", 256))
        self.n_test = int(s.get("n_test", 128))
        self.prune_seed = int(circuit.seed)
        self.task = task
        self.task_name = getattr(task, "name", None) or circuit.task
        self.options = options
        self.cal = (float(circuit.calibration["scale"]), float(circuit.calibration["shift"]))
        self._train = self._test = None
        self._test_items: list | None = None
        self._diffs: dict[tuple, tuple[TaskBatch, torch.Tensor]] = {}

    # -- items
    def _items(self, n: int, split: str) -> list:
        return list(self.task.generate(n, seed=self.prune_seed, split=split))

    @property
    def test_items(self) -> list:
        if self._test_items is None:
            self._test_items = self._items(self.n_test, "test")
        return self._test_items

    @property
    def test(self) -> TaskBatch:
        if self._test is None:
            self._test, _ = encode_items(self.run, self.test_items, self.task_name)
            if self._test is None:
                raise UserError(f"task {self.task_name}: no test item fits the model")
        return self._test

    @property
    def train(self) -> TaskBatch:
        """Train items for fitting scales and shifts (at most ``MAX_CALIBRATION_PAIRS``)."""
        if self._train is None:
            self._train, _ = encode_items(self.run, self._items(min(self.n_train, MAX_CALIBRATION_PAIRS), "train"),
                                          self.task_name)
            if self._train is None:
                raise UserError(f"task {self.task_name}: no train item fits the model")
        return self._train

    # -- evaluation
    def diffs(self, batch: TaskBatch, keep: torch.Tensor | None) -> torch.Tensor:
        """Uncalibrated answer differences (N,) of a keep vector (None: the full model) on a
        batch, computed once per batch and node set: several checks score the circuit and
        the model on the same test items."""
        key = (id(batch), None if keep is None else keep.to(torch.bool).cpu().numpy().tobytes())
        if key not in self._diffs:  # the batch is kept alive with its entry, so its id is never reused
            self._diffs[key] = (batch, circuit_diffs(self.full, None, batch) if keep is None
                                else circuit_diffs(self.masked, keep, batch))
        return self._diffs[key][1]

    def circuit_eval(self, batch: TaskBatch, keep: torch.Tensor | None = None) -> dict:
        """The circuit (or another keep vector, with the circuit's calibration) on a batch."""
        diff = self.diffs(batch, self.keep if keep is None else keep)
        return score_diffs(calibrated_diff(diff, orientation(batch), *self.cal))

    def model_eval(self, batch: TaskBatch) -> dict:
        return score_diffs(self.diffs(batch, None))

    def fitted_loss(self, keep: torch.Tensor) -> tuple[float, float, dict]:
        """Test loss of a keep vector after its own best scale and shift (fit on train)."""
        a, b = fit_calibration(self.diffs(self.train, keep), orientation(self.train))
        diff = self.diffs(self.test, keep)
        fitted, raw = score_diffs(calibrated_diff(diff, orientation(self.test), a, b)), score_diffs(diff)
        return fitted["loss"], fitted["accuracy"], {"raw_loss": raw["loss"], "raw_accuracy": raw["accuracy"]}

    def probe(self, items: list[TaskItem]) -> dict | None:
        """Circuit and full model side by side on extra items (None when none fits)."""
        batch, dropped = encode_items(self.run, items, self.task_name)
        if batch is None:
            return None
        c, m = self.circuit_eval(batch), self.model_eval(batch)
        return {"circuit_accuracy": c["accuracy"], "model_accuracy": m["accuracy"], "circuit_loss": c["loss"],
                "model_loss": m["loss"], "n": c["n"], "dropped_pairs": dropped}

    # -- activations
    @torch.no_grad()
    def collect(self, batch: TaskBatch, reducers: dict[str, Callable], keep: torch.Tensor | None,
                chunk: int = 64) -> dict[str, torch.Tensor]:
        """Activations at some hooks for the full model (``keep`` None) or the circuit.

        ``reducers[name](activation, last_pos)`` cuts each chunk's activation down to what a
        check needs (kept channels at real positions, the last query's attention) before
        the next chunk runs, so memory stays small; the pieces are concatenated on dim 0.
        """
        device = next(self.model.parameters()).device
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in reducers}
        hooks = [] if keep is None else self.masked.hooks(keep)
        for start in range(0, len(batch), chunk):
            b = batch.select(slice(start, start + chunk)).to(device)
            _, cache = self.model.run_with_cache(b.tokens, names_filter=list(reducers), fwd_hooks=hooks)
            for n, reduce in reducers.items():
                parts[n].append(reduce(cache[n].float(), b.last_pos).cpu())
            del cache
        return {n: torch.cat(p) for n, p in parts.items()}
