"""The faithfulness report card: does a pruned circuit do the task the way the model does?

Low task loss alone proves little: pruning reaches it even on a nonsense task, can drop
the attention patterns the model uses, and can give nodes a new meaning (docs/method.md §5).  Each
check below tests one of these ways a circuit can mislead, and has a fixed threshold so
that a verdict is ``pass`` or ``flag`` (a flag asks for a closer look; it is not an
error).  All evaluations use the circuit's own ablation (mean or zero) and held-out test
items regenerated from the circuit's task, seed and ``n_test``.  Losses are the task loss
in nats per pair (``tasks.base.binary_task_loss``: the binary cross-entropies over the two
answer logits of a pair's two prompts, summed; chance is 2 ln 2 = 1.386).

=====================  ======================================================  ============
check                  value (and when it passes)                              threshold
=====================  ======================================================  ============
necessity              loss of the full model with only the circuit's nodes    >= 1.2
                       ablated, after the best scale and shift (fitted on
                       train items): removing the circuit must leave the model
                       near chance (1.2 = 87% of 2 ln 2).  Passes if >= 1.2
sufficiency            the circuit's calibrated loss on held-out test items;   target + 0.1
                       passes if value <= the pruning target + 0.1
sufficiency_shifted    worst excess loss over shifted variants (longer         <= 0.2
                       prompts, other names, other nesting, a prefix of other
                       code; ``analysis/variants.py``): per variant, the
                       circuit's loss minus max(target, the full model's loss
                       on that variant).  Passes if value <= 0.2
random_baseline        the circuit's calibrated test loss; random circuits     5th pct.
                       with the same number of nodes at every site (20 draws,
                       each calibrated the same way) give the threshold, their
                       5th percentile.  Passes if value < threshold
nonsense_control       min over nodes and edges of size(nonsense circuit) /    >= 2
                       size(circuit), the nonsense task ``nonsense_name_when``
                       pruned the same way (forced).  Passes if value >= 2, or
                       if the nonsense pruning never reached the target
node_roles             fraction of kept nodes whose activation in the circuit  <= 0.1
                       and in the full model (every position of the test
                       prompts) correlate below 0.5 (Pearson) or point the
                       opposite way (cosine < 0).  Passes if value <= 0.1
attention              fraction of the circuit's heads (any kept q/k/v node)   <= 0
                       flagged: total-variation distance between the circuit's
                       and the model's attention at the last position, mean
                       over test prompts, above 0.25; or a head kept with
                       value nodes only (its pattern is then frozen by the
                       ablation).  Passes if no head is flagged
bracket_stray          bracket_counting only: |circuit accuracy - model        <= 0.15
                       accuracy| with an unclosed ``[`` in a comment before
                       the list (a failure the paper predicts): a faithful
                       circuit predicts the model's behaviour there
bracket_length         bracket_counting only: the largest such accuracy gap    <= 0.15
                       over list lengths 2..32 (table in ``data``)
=====================  ======================================================  ============

Each check is ``{"value", "threshold", "verdict", "detail"}`` plus, where useful, a
``data`` object with the numbers behind it (per-variant losses, per-node correlations,
per-head divergences, the length table).  ``run_checks`` returns them by name.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..io import to_jsonable
from ..circuits.circuit import (
    Circuit,
    calibrated_diff,
    circuit_diffs,
    fit_calibration,
    orientation,
)
from ..circuits.masking import MaskedModel, ablation_baseline
from ..circuits.nodes import NodeSet
from ..config import TARGET_LOSS
from ..errors import UserError
from ..tasks.base import (
    PROMPTS_PER_PAIR,
    TaskBatch,
    TaskExample,
    TaskItem,
    diff_loss,
    encode_examples,
    example_units,
    score_diffs,
)

# ---------------------------------------------------------------------------- thresholds

# Loss thresholds are set per prompt and scaled to the per-pair task loss.
NECESSITY_MIN_LOSS = PROMPTS_PER_PAIR * 0.6
SUFFICIENCY_MARGIN = PROMPTS_PER_PAIR * 0.05
SHIFT_MAX_EXCESS = PROMPTS_PER_PAIR * 0.1
RANDOM_DRAWS = 20
RANDOM_PERCENTILE = 5.0
NONSENSE_MIN_RATIO = 2.0
ROLE_MIN_CORR = 0.5
ROLE_MAX_FLAGGED = 0.1
ATTN_MAX_TV = 0.25
ATTN_MAX_FLAGGED = 0.0
PROBE_MAX_GAP = 0.15
BRACKET_LENGTHS = (2, 4, 6, 8, 12, 16, 24, 32)
CONTROL_TASK = "nonsense_name_when"

CHECK_NAMES = ("necessity", "sufficiency", "sufficiency_shifted", "random_baseline", "nonsense_control",
               "node_roles", "attention", "bracket_stray", "bracket_length")
BRACKET_CHECKS = ("bracket_stray", "bracket_length")
MAX_CALIBRATION_PAIRS = 128  # train pairs used to fit scales and shifts in the checks
VARIANT_PAIRS = 64


def _result(value: float, threshold: float, passed: bool, detail: str, data: Any = None) -> dict:
    out = {"value": float(value), "threshold": float(threshold), "verdict": "pass" if passed else "flag",
           "detail": detail}
    if data is not None:
        out["data"] = data
    return out


# ---------------------------------------------------------------------------- encoding


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


# ---------------------------------------------------------------------------- a circuit from a node set


def circuit_from_keep(run, keep: torch.Tensor, train_items: Sequence, task: str = "custom",
                      ablation: str = "mean", means: torch.Tensor | None = None,
                      target_loss: float = TARGET_LOSS) -> Circuit:
    """A ``Circuit`` for a hand-chosen node set, calibrated on ``train_items``.

    Lets the report card judge any node set (a hypothesis, a circuit from another tool),
    not only what ``prune`` found.
    """
    from ..config import PruneSettings

    keep = keep.to(torch.bool).cpu()
    baseline = ablation_baseline(run, ablation, means)
    batch, _ = encode_items(run, list(train_items), task)
    if batch is None:
        raise UserError(f"task {task}: no train items fit the model")
    diff = circuit_diffs(MaskedModel(run.model, baseline), keep, batch)
    a, b = fit_calibration(diff, orientation(batch))
    settings = asdict(PruneSettings(target_loss=target_loss, ablation=ablation))
    train_loss = diff_loss(calibrated_diff(diff, orientation(batch), a, b))
    return Circuit.build(run, task, keep, (a, b), settings, [batch], baseline=baseline,
                         metrics={"circuit_train_loss": train_loss})


# ---------------------------------------------------------------------------- context


class _Ctx:
    """What every check needs: the model masked with the circuit's ablation, and items."""

    def __init__(self, run, circuit: Circuit, task, seed: int, means: torch.Tensor | None,
                 n_random: int, variants: dict | None, control) -> None:
        self.run, self.circuit, self.seed = run, circuit, seed
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
        self.n_random = n_random
        self.variants_override = variants
        self.control = control
        self.cal = (float(circuit.calibration["scale"]), float(circuit.calibration["shift"]))
        self._train = self._test = None
        self._test_items: list | None = None

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
    def circuit_eval(self, batch: TaskBatch, keep: torch.Tensor | None = None) -> dict:
        """The circuit (or another keep vector, with the circuit's calibration) on a batch."""
        diff = circuit_diffs(self.masked, self.keep if keep is None else keep, batch)
        return score_diffs(calibrated_diff(diff, orientation(batch), *self.cal))

    def model_eval(self, batch: TaskBatch) -> dict:
        return score_diffs(circuit_diffs(self.full, None, batch))

    def fitted_loss(self, keep: torch.Tensor) -> tuple[float, float, dict]:
        """Test loss of a keep vector after its own best scale and shift (fit on train)."""
        a, b = fit_calibration(circuit_diffs(self.masked, keep, self.train), orientation(self.train))
        diff = circuit_diffs(self.masked, keep, self.test)
        fitted, raw = score_diffs(calibrated_diff(diff, orientation(self.test), a, b)), score_diffs(diff)
        return fitted["loss"], fitted["accuracy"], {"raw_loss": raw["loss"], "raw_accuracy": raw["accuracy"]}


# ---------------------------------------------------------------------------- the checks


def check_necessity(ctx: _Ctx) -> dict:
    keep = ~ctx.keep  # ablate only the circuit's nodes
    loss, acc, raw = ctx.fitted_loss(keep)
    full = ctx.model_eval(ctx.test)
    return _result(loss, NECESSITY_MIN_LOSS, loss >= NECESSITY_MIN_LOSS,
                   f"circuit ablated: loss {loss:.3f} (acc {acc:.0%}) after refit, raw loss {raw['raw_loss']:.3f} "
                   f"(acc {raw['raw_accuracy']:.0%}); full model {full['loss']:.3f} (acc {full['accuracy']:.0%}); "
                   f"chance {PROMPTS_PER_PAIR * math.log(2):.3f}",
                   {"calibrated_accuracy": acc, **raw, "full_loss": full["loss"], "full_accuracy": full["accuracy"]})


def check_sufficiency(ctx: _Ctx) -> dict:
    r = ctx.circuit_eval(ctx.test)
    full = ctx.model_eval(ctx.test)
    threshold = ctx.target + SUFFICIENCY_MARGIN
    return _result(r["loss"], threshold, r["loss"] <= threshold,
                   f"circuit on {r['n']} held-out prompts: loss {r['loss']:.3f} (acc {r['accuracy']:.0%}); "
                   f"target {ctx.target:g}; full model {full['loss']:.3f}",
                   {"accuracy": r["accuracy"], "full_loss": full["loss"], "n": r["n"]})


def _variants(ctx: _Ctx) -> dict[str, list[TaskItem]]:
    if ctx.variants_override is not None:
        return dict(ctx.variants_override)
    from .variants import variant_items

    return variant_items(ctx.task_name, ctx.test_items, VARIANT_PAIRS, seed=ctx.seed)


def check_sufficiency_shifted(ctx: _Ctx) -> dict | None:
    rows, worst, worst_name = [], -math.inf, ""
    for name, items in _variants(ctx).items():
        batch, dropped = encode_items(ctx.run, items, ctx.task_name)
        if batch is None:
            rows.append({"variant": name, "skipped": f"no prompt fits ({dropped} dropped)"})
            continue
        c, m = ctx.circuit_eval(batch), ctx.model_eval(batch)
        excess = c["loss"] - max(ctx.target, m["loss"])
        rows.append({"variant": name, "circuit_loss": c["loss"], "circuit_accuracy": c["accuracy"],
                     "model_loss": m["loss"], "model_accuracy": m["accuracy"], "excess": excess,
                     "n": c["n"], "dropped_pairs": dropped})
        if excess > worst:
            worst, worst_name = excess, name
    scored = [r for r in rows if "excess" in r]
    if not scored:
        return None
    parts = ", ".join(f"{r['variant']} {r['circuit_loss']:.2f}/{r['model_loss']:.2f}" for r in scored)
    return _result(worst, SHIFT_MAX_EXCESS, worst <= SHIFT_MAX_EXCESS,
                   f"worst: {worst_name} ({worst:+.3f} nats over the allowance); "
                   f"circuit/model loss per variant: {parts}", rows)


def random_keeps(nodes: NodeSet, keep: torch.Tensor, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """``draws`` random keep vectors with as many nodes as ``keep`` at every site."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        r = torch.zeros(nodes.n, dtype=torch.bool)
        for s in nodes.sites:
            k = int(keep[s.start:s.stop].sum())
            if k:
                r[s.start + torch.randperm(s.width, generator=g)[:k]] = True
        out.append(r)
    return out


def check_random_baseline(ctx: _Ctx) -> dict:
    real = ctx.circuit_eval(ctx.test)["loss"]
    losses = [ctx.fitted_loss(k)[0] for k in random_keeps(ctx.nodes, ctx.keep, ctx.n_random, ctx.seed)]
    t = torch.tensor([x if math.isfinite(x) else 1e9 for x in losses], dtype=torch.float64)
    p = float(torch.quantile(t, RANDOM_PERCENTILE / 100))
    med = float(t.median())
    return _result(real, p, real < p,
                   f"circuit {real:.3f} vs {len(losses)} random circuits of the same composition: "
                   f"5th percentile {p:.3f}, median {med:.3f}, best {float(t.min()):.3f}",
                   {"random_losses": losses, "median": med})


def _control_name(control) -> str:
    """The name a nonsense control is cached under: its task name, or for a list of items
    a digest of them, so that two controls never share a cached circuit."""
    if isinstance(control, str):
        return control
    text = json.dumps([asdict(x) for x in control], sort_keys=True)
    return "custom-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _control_circuit(ctx: _Ctx, progress: bool) -> Circuit:
    """The nonsense task pruned with the circuit's own settings (cached in the run dir)."""
    from ..circuits.prune import prune
    from ..config import PruneSettings
    from ..rundir import RunDir, circuit_key

    s = {**asdict(PruneSettings()), **ctx.settings}
    s["target_loss"] = ctx.target
    s["ablation"] = ctx.ablation
    control = ctx.control if ctx.control is not None else CONTROL_TASK
    name = _control_name(control)
    run_dir = RunDir(ctx.run.path) if ctx.run.path else None
    path = run_dir.control(name) if run_dir is not None else None
    if path is not None:
        cached = run_dir.fresh_circuit(path, circuit_key(name, ctx.prune_seed, s))
        if cached is not None:
            try:
                return Circuit.from_json(cached, source=str(path))
            except UserError:
                pass  # not a circuit after all: pruned again below and replaced
    means = ctx.baseline if ctx.ablation == "mean" else None
    circ = prune(ctx.run, control, target_loss=ctx.target, ablation=ctx.ablation, steps=int(s["steps"]),
                 seed=ctx.prune_seed, force=True, k_coefs=list(s["k_coefs"]), n_train=int(s["n_train"]),
                 n_test=int(s["n_test"]), progress=progress, name=name, means=means)
    if path is not None and run_dir.path.is_dir():
        try:
            circ.save(path)
        except OSError:
            pass  # a read-only run directory: the control is simply pruned again next time
    return circ


def check_nonsense_control(ctx: _Ctx, progress: bool = False) -> dict:
    ctrl = _control_circuit(ctx, progress)
    real_n, real_e = ctx.circuit.n_nodes, ctx.circuit.n_edges
    ctrl_n, ctrl_e = ctrl.n_nodes, ctrl.n_edges
    r_nodes = ctrl_n / max(real_n, 1)
    r_edges = ctrl_e / max(real_e, 1)
    value = min(r_nodes, r_edges)
    met = bool(ctrl.metrics.get("target_met", True))
    note = "" if met else " (the nonsense circuit never reached the target, so it cannot pass as a real one)"
    return _result(value, NONSENSE_MIN_RATIO, (not met) or value >= NONSENSE_MIN_RATIO,
                   f"nonsense/real: nodes {ctrl_n}/{real_n} = {r_nodes:.2f}x, edges {ctrl_e}/{real_e} = "
                   f"{r_edges:.2f}x; nonsense loss {ctrl.metrics.get('circuit_loss', float('nan')):.3f}{note}",
                   {"nodes_ratio": r_nodes, "edges_ratio": r_edges, "nonsense_nodes": ctrl_n, "nonsense_edges": ctrl_e,
                    "real_nodes": real_n, "real_edges": real_e, "nonsense_target_met": met})


@torch.no_grad()
def _collect(ctx: _Ctx, batch: TaskBatch, reducers: dict[str, Callable], keep: torch.Tensor | None,
             chunk: int = 64) -> dict[str, torch.Tensor]:
    """Activations at some hooks for the full model (``keep`` None) or the circuit.

    ``reducers[name](activation, last_pos)`` cuts each chunk's activation down to what a
    check needs (kept channels at real positions, the last query's attention) before
    the next chunk runs, so memory stays small; the pieces are concatenated on dim 0.
    """
    device = next(ctx.model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in reducers}
    hooks = [] if keep is None else ctx.masked.hooks(keep)
    for start in range(0, len(batch), chunk):
        b = batch.select(slice(start, start + chunk)).to(device)
        _, cache = ctx.model.run_with_cache(b.tokens, names_filter=list(reducers), fwd_hooks=hooks)
        for n, reduce in reducers.items():
            parts[n].append(reduce(cache[n].float(), b.last_pos).cpu())
        del cache
    return {n: torch.cat(p) for n, p in parts.items()}


def _kept_at_positions(idx: torch.Tensor) -> Callable:
    """Reducer: the kept channels ``idx`` at every real (non-padding) position -> (n_pos, k)."""

    def reduce(act: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
        B, T = act.shape[:2]
        valid = torch.arange(T, device=act.device)[None, :] <= last_pos[:, None]  # (B, T)
        return act.reshape(B, T, -1)[valid][:, idx.to(act.device)]  # q/k/v (B, T, H, Dh) flattened to H*Dh

    return reduce


def _last_query(width: int) -> Callable:
    """Reducer: each prompt's last query row of an attention pattern (B, H, T, T) -> (B, H, width),
    zero-padded to the whole batch's width (chunks are trimmed to their own longest prompt)."""

    def reduce(act: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(act.shape[0], device=act.device)
        row = act[rows, :, last_pos]  # (B, H, T)
        return torch.nn.functional.pad(row, (0, width - row.shape[-1]))

    return reduce


def role_correlations(full: torch.Tensor, circ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: Pearson correlation and cosine of circuit vs full activations (N, k) -> (k,), (k,).

    A node that is constant in the full model has no correlation to speak of: it counts
    as 1 when the circuit holds it at (about) the same value, else 0.
    """
    full, circ = full.double(), circ.double()
    fc, cc = full - full.mean(0), circ - circ.mean(0)
    sf, sc = fc.norm(dim=0), cc.norm(dim=0)
    scale = full.abs().amax(0).clamp_min(1e-12)
    const_f = sf <= 1e-6 * scale * math.sqrt(max(full.shape[0], 1))
    const_c = sc <= 1e-6 * circ.abs().amax(0).clamp_min(1e-12) * math.sqrt(max(circ.shape[0], 1))
    corr = (fc * cc).sum(0) / (sf * sc).clamp_min(1e-30)
    corr = torch.where(const_c & ~const_f, torch.zeros_like(corr), corr)
    same = (full.mean(0) - circ.mean(0)).abs() <= 0.1 * full.mean(0).abs() + 1e-6
    corr = torch.where(const_f, torch.where(const_c & same, 1.0, 0.0).to(corr), corr)
    nf, nc = full.norm(dim=0), circ.norm(dim=0)
    cos = (full * circ).sum(0) / (nf * nc).clamp_min(1e-30)
    cos = torch.where((nf == 0) & (nc == 0), torch.ones_like(cos), cos)
    return corr.float().clamp(-1, 1), cos.float().clamp(-1, 1)


def check_node_roles(ctx: _Ctx) -> dict:
    batch = ctx.test
    sites = [s for s in ctx.nodes.sites if bool(ctx.keep[s.start:s.stop].any())]
    if not sites:
        return _result(0.0, ROLE_MAX_FLAGGED, True, "the circuit has no nodes", {})
    idxs = {s.hook: ctx.keep[s.start:s.stop].nonzero().flatten() for s in sites}
    reducers = {h: _kept_at_positions(i) for h, i in idxs.items()}
    full = _collect(ctx, batch, reducers, None)
    circ = _collect(ctx, batch, reducers, ctx.keep)
    per_node: dict[str, dict] = {}
    flagged = []
    for s in sites:
        idx = idxs[s.hook]
        corr, cos = role_correlations(full[s.hook], circ[s.hook])
        for j, i in enumerate(idx.tolist()):
            nid = f"{s.hook}:{i}"
            c, k = float(corr[j]), float(cos[j])
            bad = c < ROLE_MIN_CORR or k < 0
            per_node[nid] = {"corr": round(c, 4), "cosine": round(k, 4), "flag": bad}
            if bad:
                flagged.append((nid, c, k))
    frac = len(flagged) / max(len(per_node), 1)
    worst = ", ".join(f"{n} (r={c:.2f}{', flipped' if k < 0 else ''})"
                      for n, c, k in sorted(flagged, key=lambda x: x[1])[:5])
    detail = (f"{len(flagged)}/{len(per_node)} nodes change role in the circuit"
              + (f": {worst}" if flagged else f"; min correlation {min(v['corr'] for v in per_node.values()):.3f}"))
    return _result(frac, ROLE_MAX_FLAGGED, frac <= ROLE_MAX_FLAGGED, detail, per_node)


def circuit_heads(nodes: NodeSet, keep: torch.Tensor) -> dict[tuple[int, int], set[str]]:
    """``{(layer, head): {"q", "k", "v"} kinds kept}`` for heads with any kept q/k/v node."""
    out: dict[tuple[int, int], set[str]] = {}
    for s in nodes.sites:
        if s.kind not in ("q", "k", "v"):
            continue
        for i in keep[s.start:s.stop].nonzero().flatten().tolist():
            out.setdefault((s.layer, s.head(i)), set()).add(s.kind)
    return out


def check_attention(ctx: _Ctx) -> dict:
    heads = circuit_heads(ctx.nodes, ctx.keep)
    if not heads:
        return _result(0.0, ATTN_MAX_FLAGGED, True, "the circuit keeps no attention q/k/v node", {})
    batch = ctx.test
    layers = sorted({layer for layer, _ in heads})
    reducers = {f"blocks.{layer}.attn.hook_pattern": _last_query(batch.tokens.shape[1]) for layer in layers}
    full = _collect(ctx, batch, reducers, None)
    circ = _collect(ctx, batch, reducers, ctx.keep)
    per_head, flagged = {}, []
    for layer in layers:
        name = f"blocks.{layer}.attn.hook_pattern"
        p, q = full[name], circ[name]  # (N, H, T)
        sink_gap = ((1 - p.sum(-1)) - (1 - q.sum(-1))).abs()  # (N, H): the sink's share
        tv = (0.5 * ((p - q).abs().sum(-1) + sink_gap)).mean(0)  # (H,)
        for (lay, h), kinds in sorted(heads.items()):
            if lay != layer:
                continue
            values_only = kinds == {"v"}
            d = float(tv[h])
            bad = values_only or d > ATTN_MAX_TV
            hid = f"blocks.{layer}.attn.head{h}"
            per_head[hid] = {"tv": round(d, 4), "kinds": sorted(kinds), "values_only": values_only, "flag": bad}
            if bad:
                flagged.append(hid)
    frac = len(flagged) / len(per_head)
    shown = [h for h in per_head if per_head[h]["flag"]] or list(per_head)
    parts = ", ".join(f"{h} tv={per_head[h]['tv']:.2f}{' v-only' if per_head[h]['values_only'] else ''}"
                      for h in shown[:8]) + (", ..." if len(shown) > 8 else "")
    return _result(frac, ATTN_MAX_FLAGGED, frac <= ATTN_MAX_FLAGGED,
                   f"{len(flagged)}/{len(per_head)} heads flagged: {parts}", per_head)


def _probe(ctx: _Ctx, items: list[TaskItem]) -> dict | None:
    batch, dropped = encode_items(ctx.run, items, ctx.task_name)
    if batch is None:
        return None
    c, m = ctx.circuit_eval(batch), ctx.model_eval(batch)
    return {"circuit_accuracy": c["accuracy"], "model_accuracy": m["accuracy"], "circuit_loss": c["loss"],
            "model_loss": m["loss"], "n": c["n"], "dropped_pairs": dropped}


def check_bracket_stray(ctx: _Ctx) -> dict | None:
    from .variants import bracket_stray_items

    r = _probe(ctx, bracket_stray_items(VARIANT_PAIRS, ctx.seed))
    if r is None:
        return None
    base = ctx.circuit_eval(ctx.test)["accuracy"], ctx.model_eval(ctx.test)["accuracy"]
    gap = abs(r["circuit_accuracy"] - r["model_accuracy"])
    return _result(gap, PROBE_MAX_GAP, gap <= PROBE_MAX_GAP,
                   f"stray '[' in a comment: model acc {r['model_accuracy']:.0%}, circuit {r['circuit_accuracy']:.0%} "
                   f"(without it: model {base[1]:.0%}, circuit {base[0]:.0%})",
                   {**r, "test_circuit_accuracy": base[0], "test_model_accuracy": base[1]})


def check_bracket_length(ctx: _Ctx) -> dict | None:
    from .variants import bracket_length_items

    rows = []
    for length in BRACKET_LENGTHS:
        r = _probe(ctx, bracket_length_items(length, VARIANT_PAIRS // 2, ctx.seed))
        if r is not None and r["n"]:
            rows.append({"length": length, **r})
    if not rows:
        return None
    gaps = [abs(r["circuit_accuracy"] - r["model_accuracy"]) for r in rows]
    table = " ".join(f"{r['length']}:{r['model_accuracy']:.0%}/{r['circuit_accuracy']:.0%}" for r in rows)
    return _result(max(gaps), PROBE_MAX_GAP, max(gaps) <= PROBE_MAX_GAP,
                   f"accuracy by list length, model/circuit: {table}", rows)


_CHECKS: dict[str, Callable[..., dict | None]] = {
    "necessity": check_necessity,
    "sufficiency": check_sufficiency,
    "sufficiency_shifted": check_sufficiency_shifted,
    "random_baseline": check_random_baseline,
    "nonsense_control": check_nonsense_control,
    "node_roles": check_node_roles,
    "attention": check_attention,
    "bracket_stray": check_bracket_stray,
    "bracket_length": check_bracket_length,
}


def default_checks(task_name: str) -> list[str]:
    """Every check that applies to a task (the bracket probes only to bracket_counting)."""
    return [c for c in CHECK_NAMES if c not in BRACKET_CHECKS or task_name == "bracket_counting"]


def run_checks(run, circuit: Circuit, checks: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
               *, task=None, variants: dict[str, list[TaskItem]] | None = None, control=None,
               means: torch.Tensor | None = None, n_random: int = RANDOM_DRAWS) -> dict:
    """Run the report card's checks on ``circuit`` (pruned from ``run``'s model).

    Returns ``{name: {"value", "threshold", "verdict", "detail"[, "data"]}}`` for every
    check that could run (a check with nothing to measure, such as shifted variants that
    no prompt of which fits the context, is left out and said so on stderr).

    ``checks`` picks a subset of ``CHECK_NAMES`` (default: all that apply).  ``task`` is a
    ``Task`` (anything with ``generate(n, seed, split)``) for a circuit of a custom task;
    ``variants`` replaces the shifted variants (``{name: [TaskItem]}``); ``control`` the
    nonsense control (a task name or ``TaskItem`` list); ``means`` the node means.
    """
    if task is None:
        from ..tasks.python_tasks import get_task

        task = get_task(circuit.task)
    task_name = getattr(task, "name", None) or circuit.task
    if checks is None:
        names = default_checks(task_name)
    else:
        names = list(checks)
        unknown = [c for c in names if c not in _CHECKS]
        if unknown:
            raise UserError(f"unknown check(s) {', '.join(unknown)}; valid: {', '.join(CHECK_NAMES)}")
        if task_name != "bracket_counting" and any(c in BRACKET_CHECKS for c in names):
            raise UserError("the bracket_stray and bracket_length probes apply to bracket_counting only")
    if n_random < 1:
        raise UserError(f"random draws must be >= 1, got {n_random}")
    circuit.attach(run)
    ctx = _Ctx(run, circuit, task, seed, means, n_random, variants, control)
    from tqdm.auto import tqdm

    out: dict[str, dict] = {}
    bar = tqdm(names, desc=f"check {task_name}", disable=None if progress else True, leave=False,
               dynamic_ncols=True)
    try:
        for name in bar:
            bar.set_postfix_str(name, refresh=True)
            fn = _CHECKS[name]
            r = fn(ctx, progress) if name == "nonsense_control" else fn(ctx)
            if r is None:
                if progress:
                    sys.stderr.write(f"check {name}: nothing to measure (no prompt fits the model); left out\n")
                continue
            out[name] = r
    finally:
        bar.close()
    return out


def format_table(checks: dict) -> str:
    """A plain-text table of check results, one row per check."""
    rows = [("check", "value", "threshold", "verdict", "detail")]
    for name, r in checks.items():
        rows.append((name, f"{r['value']:.3f}", f"{r['threshold']:.3f}", r["verdict"].upper(), r["detail"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(lines)


def write_checks(circuit_path: str | Path, checks: dict, merge: bool = True) -> None:
    """Store ``checks`` in a circuit file under the top-level key ``"checks"`` (atomic)."""
    from ..io import atomic_write_json, read_json

    path = Path(circuit_path)
    obj = read_json(path, what="circuit file")
    if not isinstance(obj, dict):
        raise UserError(f"{path}: malformed circuit JSON: expected a JSON object")
    old = obj.get("checks") if merge and isinstance(obj.get("checks"), dict) else {}
    obj["checks"] = to_jsonable({**old, **checks})
    atomic_write_json(path, obj)


__all__ = ["CHECK_NAMES", "circuit_from_keep", "default_checks", "encode_items", "format_table",
           "random_keeps", "role_correlations", "run_checks", "write_checks"]
