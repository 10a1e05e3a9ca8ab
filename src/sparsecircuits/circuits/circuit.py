"""A pruned circuit: its nodes and edges, how it was found, and how to evaluate it again.

On disk a circuit is node-link JSON (``schema_version`` 1), the shape attribution-graph
front ends read::

    {"schema_version": 1,
     "model": {"run", "n_layer", "d_model", "n_head", "d_head", "d_mlp", "vocab_size"},
     "task": str, "forced": bool,
     "metrics": {"full_loss", "full_accuracy", "circuit_loss", "circuit_accuracy",
                 "n_nodes", "n_edges", "n_residual_links", "n_qk_pairs", "n_io_edges",
                 "n_edges_with_io", "edge_count", "target_loss", "ablation",
                 "curve": [{"step", "loss", "n_open"}],
                 "size_vs_target": [{"target_loss", "n_nodes", "n_edges", "loss", "met", ...}],
                 "calibration": {"scale", "shift"}, "settings": {...}, "seed", "seconds"},
     "nodes": [{"id", "hook", "index", "layer", "site", "head", "token", "mask"}],
     "links": [{"source", "target", "weight", "kind"}]}

``n_nodes`` counts internal nodes (not embed/logit).  ``n_edges``, the circuit's size, is
the paper's edge count: nonzero weights between kept nodes.  Residual links, q.k pairs
and embedding/logit links are in ``links`` too, counted apart (``n_residual_links``,
``n_qk_pairs``, ``n_io_edges``); ``sparsecircuits.circuit_sizes`` has the convention and
how files written before it are read (their counts recomputed from their links).

Calibration.  A discrete circuit's logits are off-scale, so a scale ``a >= 0`` and a shift
``b`` are fitted on train items (docs/method.md §3).  They act on the answer logits in a fixed
orientation: ``logit[lo] - logit[hi]`` where ``lo < hi`` are the two answer token ids
becomes ``a * (logit[lo] - logit[hi]) + b``.  The shift is thus a bias between the two
answer tokens, never towards "whichever is correct" (which would let a constant circuit
score perfectly), and the scale cannot flip a circuit's sign.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..circuit_sizes import EDGE_COUNT, RECOMPUTED, link_counts, upgrade_metrics
from ..io import to_jsonable
from ..errors import UserError
from ..rundir import CIRCUIT
from ..sites import SITE_KINDS
from ..tasks.base import answer_diff, flat_examples, score_diffs
from .graph import build_graph
from .lanes import map_masked
from .masking import MaskedModel, Resample, ablation_baseline
from .nodes import NodeSet

SCHEMA_VERSION = 1
NODE_SITES = ("embed",) + SITE_KINDS + ("logit",)
MODEL_KEYS = ("n_layer", "d_model", "n_head", "d_head", "d_mlp", "vocab_size")


# ---------------------------------------------------------------------------- calibration


def orientation(batch) -> torch.Tensor:
    """+1 where the correct answer has the lower token id, else -1; (N,) float."""
    return torch.where(batch.correct_id < batch.incorrect_id, 1.0, -1.0)


def calibrated_diff(diff: torch.Tensor, sign: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """Correct-minus-incorrect logit difference after calibration (see module docstring)."""
    return scale * diff + sign.to(diff) * shift


def fit_calibration(diff: torch.Tensor, sign: torch.Tensor, steps: int = 16) -> tuple[float, float]:
    """Scale ``a >= 0`` and shift ``b`` minimising the calibrated loss (LBFGS, ``steps`` iterations).

    Starts from the identity (a=1, b=0) and never returns a worse fit than it.
    """
    diff = diff.detach().double()
    sign = sign.detach().double()
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.softplus(-(log_a.clamp(-20, 20).exp() * diff + sign * b)).mean()
        loss.backward()
        return loss

    base = float(F.softplus(-diff).mean())
    try:
        opt.step(closure)
    except RuntimeError:  # pragma: no cover - degenerate inputs
        return 1.0, 0.0
    a, shift = float(log_a.detach().clamp(-20, 20).exp()), float(b.detach())
    fitted = float(F.softplus(-(a * diff + sign * shift)).mean())
    if not (math.isfinite(fitted) and math.isfinite(a) and math.isfinite(shift)) or fitted > base:
        return 1.0, 0.0
    return a, shift


@torch.no_grad()
def circuit_diffs(masked: MaskedModel, mask: torch.Tensor | None, batch, batch_size: int = 256) -> torch.Tensor:
    """Correct-minus-incorrect answer logit differences (N,) under a mask (None = full model)."""
    device = next(masked.model.parameters()).device

    def chunk_diffs(mm: MaskedModel, start: int) -> torch.Tensor:
        chunk = batch.select(slice(start, start + batch_size)).to(device)
        last = mm(chunk.tokens, mask, last_pos=chunk.last_pos)  # (b, V)
        return answer_diff(last, chunk).float().cpu()  # (b,)

    out = map_masked(masked, chunk_diffs, range(0, len(batch), batch_size))  # chunks side by side
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------------------- circuit


@dataclass
class Circuit:
    """A task circuit. ``keep`` is the boolean (n,) vector over the model's nodes."""

    task: str
    run: str
    model: dict
    nodes: list[dict]
    links: list[dict]
    keep: torch.Tensor
    calibration: dict = field(default_factory=lambda: {"scale": 1.0, "shift": 0.0})
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seed: int = 0
    forced: bool = False
    _run: Any = field(default=None, repr=False, compare=False)
    _baselines: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a circuit built in memory (pruning, the checks) is counted the current way: fill in
        # the counts apart from n_edges from its links; loaded files are upgraded in from_json
        if self.metrics.get("edge_count") not in (EDGE_COUNT, RECOMPUTED):
            self.metrics = {**self.metrics, **link_counts(self.nodes, self.links), "edge_count": EDGE_COUNT}

    @classmethod
    def build(cls, run, task: str, keep: torch.Tensor, calibration: tuple[float, float], settings: dict,
              batches: Sequence, *, baseline=None, tau: torch.Tensor | None = None, metrics: dict | None = None,
              seed: int = 0, forced: bool = False) -> "Circuit":
        """The circuit of a node set on ``run``'s model: the one constructor behind pruning
        and ``circuit_from_keep``, so a found and a hand-chosen circuit are alike.

        ``keep`` (n,) bool; ``calibration`` the fitted ``(scale, shift)``; ``settings`` the
        pruning settings (``target_loss`` and ``ablation`` are copied into the metrics).
        The graph labels its embedding nodes with the prompt tokens of ``batches`` and its
        logit nodes with the answers of the first batch, the items the circuit was fitted
        on; ``tau`` gives each node's mask value.  ``metrics`` come first, then the
        circuit's size.  ``baseline`` is the ablation values in use, kept for ``evaluate``.
        """
        model = run.model
        nodes = NodeSet.from_model(model)
        keep = keep.to(torch.bool).cpu()
        prompt_ids: set[int] = set()
        for batch in batches:
            for row, lp in zip(batch.tokens.tolist(), batch.last_pos.tolist()):
                prompt_ids.update(row[:lp + 1])
        answer_ids = set(batches[0].correct_id.tolist()) | set(batches[0].incorrect_id.tolist())
        graph = build_graph(model, nodes, keep, tau, prompt_ids, answer_ids, run.tokenizer)
        metrics = {**(metrics or {}), "n_nodes": int(keep.sum()), "n_edges": graph["n_edges"],
                   "n_edges_with_io": graph["n_edges_with_io"], "nodes_by_site": nodes.kind_counts(keep),
                   "target_loss": settings["target_loss"], "ablation": settings["ablation"]}
        return cls(task=task, run=str(run.path), model={k: int(getattr(model.cfg, k)) for k in MODEL_KEYS},
                   nodes=graph["nodes"], links=graph["links"], keep=keep,
                   calibration={"scale": calibration[0], "shift": calibration[1]}, metrics=metrics,
                   settings=settings, seed=int(seed), forced=bool(forced), _run=run,
                   _baselines={settings["ablation"]: baseline})

    # ------------------------------------------------------------ properties
    @property
    def node_set(self) -> NodeSet:
        m = self.model
        return NodeSet(m["n_layer"], m["d_model"], m["n_head"], m["d_head"], m["d_mlp"])

    @property
    def node_ids(self) -> list[str]:
        """Internal node ids in flat order (no embed/logit nodes)."""
        return self.node_set.names(self.keep.nonzero().flatten().tolist())

    @property
    def n_nodes(self) -> int:
        return int(self.keep.sum())

    @property
    def n_edges(self) -> int:
        return int(self.metrics.get("n_edges", 0))

    @property
    def ablation(self) -> str:
        return str(self.metrics.get("ablation", "mean"))

    # ------------------------------------------------------------ evaluation
    def attach(self, run) -> "Circuit":
        """Bind a loaded run (``sparsecircuits.load_run``) so ``evaluate`` can run the model.

        Binding the run already bound changes nothing (its ablation values are kept).
        """
        if run is self._run:
            return self
        cfg = run.model.cfg
        mine = {k: self.model[k] for k in MODEL_KEYS}
        theirs = {k: getattr(cfg, k) for k in MODEL_KEYS}
        if mine != theirs:
            raise UserError(f"circuit was pruned on a model of shape {mine}, but the run has {theirs}")
        self._run = run
        self._baselines = {}
        return self

    def baseline(self, ablation: str | None = None) -> "torch.Tensor | Resample | None":
        """The ablation values of the bound run (default: the circuit's own ablation), computed once."""
        ablation = ablation or self.ablation
        if ablation not in self._baselines:
            self._baselines[ablation] = ablation_baseline(self._require_run(), ablation)
        return self._baselines[ablation]

    def _require_run(self):
        if self._run is None:
            raise UserError("this circuit has no model attached; call circuit.attach(load_run(...)) "
                            "or circuit.evaluate(run, examples)")
        return self._run

    def evaluate(self, run_or_examples, examples=None, *, calibrated: bool = True,
                 keep: torch.Tensor | None = None, ablation: str | None = None,
                 batch_size: int = 256) -> dict:
        """``{"loss", "accuracy", "n"}`` of the circuit on examples (or ``TaskItem`` pairs).

        ``evaluate(examples)`` after ``attach``, or ``evaluate(run, examples)``.  ``keep``
        overrides the circuit's node set (e.g. ``~circuit.keep`` ablates only the circuit);
        ``calibrated`` applies the fitted scale and shift.
        """
        if examples is None:
            examples = run_or_examples
        else:
            self.attach(run_or_examples)
        run = self._require_run()
        batch = encode_for_run(run, examples, self.task)
        masked = MaskedModel(run.model, self.baseline(ablation), self.node_set)
        mask = self.keep if keep is None else keep.to(torch.bool)
        diff = circuit_diffs(masked, mask, batch, batch_size)
        if calibrated:
            diff = calibrated_diff(diff, orientation(batch), self.calibration["scale"], self.calibration["shift"])
        return score_diffs(diff)

    # ------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        metrics = dict(self.metrics)
        metrics["calibration"] = {"scale": float(self.calibration["scale"]), "shift": float(self.calibration["shift"])}
        metrics["settings"] = dict(self.settings)
        metrics["seed"] = int(self.seed)
        return {
            "schema_version": SCHEMA_VERSION,
            "model": {"run": str(self.run), **{k: int(self.model[k]) for k in MODEL_KEYS}},
            "task": self.task,
            "forced": bool(self.forced),
            "metrics": metrics,
            "nodes": self.nodes,
            "links": self.links,
        }

    def save(self, path: str | Path) -> Path:
        from ..io import atomic_write_json

        path = Path(path)
        atomic_write_json(path, to_jsonable(self.to_json()))
        return path

    @classmethod
    def from_json(cls, obj: Any, source: str = "circuit") -> "Circuit":
        def bad(msg: str) -> UserError:
            return UserError(f"{source}: malformed circuit JSON: {msg}")

        if not isinstance(obj, dict):
            raise bad("expected a JSON object")
        if obj.get("schema_version") != SCHEMA_VERSION:
            raise bad(f"schema_version must be {SCHEMA_VERSION}, got {obj.get('schema_version')!r}")
        for key, typ in (("model", dict), ("task", str), ("metrics", dict), ("nodes", list), ("links", list)):
            if not isinstance(obj.get(key), typ):
                raise bad(f"field {key!r} missing or not a {typ.__name__}")
        model = obj["model"]
        for k in MODEL_KEYS:
            if not isinstance(model.get(k), int) or isinstance(model.get(k), bool) or model[k] < 1:
                raise bad(f"model.{k} missing or not a positive integer")
        nodes = NodeSet(model["n_layer"], model["d_model"], model["n_head"], model["d_head"], model["d_mlp"])
        keep = torch.zeros(nodes.n, dtype=torch.bool)
        ids = set()
        for i, node in enumerate(obj["nodes"]):
            if not isinstance(node, dict) or not isinstance(node.get("id"), str):
                raise bad(f"nodes[{i}] has no string 'id'")
            site = node.get("site")
            if site not in NODE_SITES:
                raise bad(f"nodes[{i}] has unknown site {site!r}")
            ids.add(node["id"])
            if site in SITE_KINDS:
                try:
                    keep[nodes.index(node["id"])] = True
                except UserError as exc:
                    raise bad(f"nodes[{i}]: {exc}") from None
        for i, link in enumerate(obj["links"]):
            if not isinstance(link, dict) or link.get("source") not in ids or link.get("target") not in ids:
                raise bad(f"links[{i}] must join two listed node ids")
            if not isinstance(link.get("weight"), (int, float)) or isinstance(link.get("weight"), bool):
                raise bad(f"links[{i}] has no numeric weight")
        metrics = upgrade_metrics(dict(obj["metrics"]), obj["nodes"], obj["links"])
        cal = metrics.get("calibration", {"scale": 1.0, "shift": 0.0})
        if not (isinstance(cal, dict) and all(isinstance(cal.get(k), (int, float)) for k in ("scale", "shift"))):
            raise bad("metrics.calibration must be {scale, shift} numbers")
        settings = metrics.get("settings", {})
        if not isinstance(settings, dict):
            raise bad("metrics.settings must be an object")
        seed = metrics.get("seed", 0)
        if not isinstance(seed, int):
            raise bad("metrics.seed must be an integer")
        forced = obj.get("forced", False)
        if not isinstance(forced, bool):
            raise bad("'forced' must be true or false")
        return cls(task=obj["task"], run=str(model.get("run", "")), model={k: model[k] for k in MODEL_KEYS},
                   nodes=obj["nodes"], links=obj["links"], keep=keep,
                   calibration={"scale": float(cal["scale"]), "shift": float(cal["shift"])},
                   metrics=metrics, settings=settings, seed=seed, forced=forced)

    @classmethod
    def load(cls, path: str | Path) -> "Circuit":
        from ..io import read_json

        path = Path(path)
        if path.is_dir():
            path = path / CIRCUIT
        return cls.from_json(read_json(path, what="circuit file"), source=str(path))


def encode_for_run(run, examples: Sequence, task_name: str = "custom"):
    """Examples or ``TaskItem`` pairs -> a ``TaskBatch`` under the run's tokenizer (pairs adjacent)."""
    from ..tasks.base import encode_examples

    examples, _ = flat_examples(examples, task_name)
    return encode_examples(run.tokenizer, examples, task_name=task_name, max_len=run.model.cfg.block_size)
