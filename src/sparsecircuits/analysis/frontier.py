"""The capability-interpretability frontier: circuit size against pretraining loss.

The paper's headline (docs/method.md §4): at matched pretraining loss, sparse models' circuits are
about 16x smaller (edges) than dense models'.  ``frontier`` measures the same thing on a
grid of models over weight density (1.0 = dense) and width:

1. train each grid point into ``OUT/<name>/`` (skipped when ``model.safetensors`` is
   there; resumed when checkpoints are);
2. prune each model on each task, once, with ``target_loss`` = 0.15 (or the middle of
   ``targets``) and ``size_targets`` = ``targets``: the circuit sizes at the other targets
   are read off the same node ranking by bisection (``metrics.size_vs_target``), which
   costs a fraction of a separate pruning per target.  Circuits are saved to
   ``OUT/<name>/circuits/<task>/circuit.json`` and reused when their settings match;
   a task the model has not learned (below 80% accuracy) is skipped and noted;
3. per model and target, the geometric mean of edges (and nodes) over tasks.  Edges are
   nonzero weights between kept nodes (``sparsecircuits.circuit_sizes``), and a circuit
   counts only where it met the target on held-out items (``met_heldout``; a size that
   met it on the train items alone is not a result).  Curves
   compare geometric means over the same tasks: those whose circuits met the target in
   every model (``common_tasks``); if none, each model's own met tasks are plotted but
   no ratio is drawn from them (``mixed_tasks``: sizes of different tasks do not
   compare).  Ratios are also computed per task (``by_task``).  A task met by
   an empty circuit in every model (``trivial_tasks``: the last token alone decides it,
   through the embedding-to-logit path that has no nodes, e.g. ``else_elif``) says
   nothing about circuit size and is left out.  Otherwise a circuit with no edge counts
   as one edge (a geometric mean needs positive sizes);
4. the dense-to-sparse size ratio at matched pretraining loss: along each density's
   curve, log-size is interpolated linearly in val loss; the ratio is the geometric mean
   of dense/sparse over a grid spanning the losses both curves cover.  When the curves do
   not overlap, a straight-line fit of log-size vs loss extrapolates the curve with two
   or more points, and the ratio is marked ``extrapolated``;
5. ``frontier.json`` and the plots ``frontier_edges.png`` / ``frontier_nodes.png``
   (log y, one curve per density, one panel per target) and ``frontier_tasks.png``
   (edges per task and target).

Grids (``GRIDS``):

* ``smoke``: four one-layer toy models, seconds.  It prunes with ``force`` (such models
  learn no task) at targets 0.3 and 1.4 (per pair), one out of reach and one met by an empty
  circuit: it checks the plumbing, not the science.
* ``cpu``: 2 layers, d_model 32 and 64 x density 1, 1/4, 1/16, 1800 steps of 32 x 128
  tokens.  Measured on the 2-core reference machine at one torch thread: 46 minutes for
  the whole grid (5-10 minutes of training per model, about a minute of pruning per
  learned task).  Five of the six models learn ``single_double_quote`` (not d_model 32
  dense); ``lambda_func`` is learned by a few and is often met by an empty circuit at
  target 0.3; ``bracket_counting`` and ``for_while`` are not learned at this size.
  ``--steps 3600`` (about twice the time) gives lower losses and much smaller dense
  circuits; the README's results compare both.
* ``gpu``: 4 layers, d_model 128-512 x density 1 to 1/64, 10k steps of 64 x 256 tokens.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..circuit_sizes import EDGE_COUNT, geometric_mean
from ..config import TARGET_LOSS
from ..errors import UserError
from ..io import to_jsonable
from ..rundir import RunDir, circuit_key

DEFAULT_TARGETS = (0.1, TARGET_LOSS, 0.3)
PAPER_RATIO = 16.0

GRIDS: dict[str, dict[str, Any]] = {
    "smoke": {
        "widths": [16, 32], "densities": [1.0, 0.25], "n_layer": 1, "d_head": 8, "vocab_size": 512,
        "train": {"steps": 12, "batch_size": 4, "lr": 1e-2, "eval_every": 6, "eval_batches": 1, "log_every": 6,
                  "checkpoint_every": 6},
        "block_size": 96,
        "prune": {"steps": 8, "k_coefs": [1e-2], "n_train": 8, "n_test": 8},
        "tasks": ["single_double_quote"], "force": True, "targets": [0.3, 1.4],  # 1.4: just above chance per pair (2 ln 2)
    },
    "cpu": {
        "widths": [32, 64], "densities": [1.0, 0.25, 0.0625], "n_layer": 2, "d_head": 16, "vocab_size": 2048,
        "train": {"steps": 1800, "batch_size": 32, "lr": 0.1, "eval_every": 450, "eval_batches": 10,
                  "checkpoint_every": 450},
        "block_size": 128,
        "prune": {"steps": 150, "k_coefs": [3e-3, 1e-2], "n_train": 128, "n_test": 64},
        # tasks small models learn early and that need context (else_elif, learned first, is
        # decided by the last token alone: an empty circuit), then the paper's two case studies
        "tasks": ["lambda_func", "for_while", "single_double_quote", "bracket_counting"], "force": False,
    },
    "gpu": {
        "widths": [128, 256, 512], "densities": [1.0, 0.25, 0.0625, 1 / 64], "n_layer": 4, "d_head": 16,
        "vocab_size": 2048,
        "train": {"steps": 10_000, "batch_size": 64, "lr": 1e-2, "eval_every": 1000, "eval_batches": 20,
                  "checkpoint_every": 1000, "device": "cuda"},
        "block_size": 256,
        "prune": {"steps": 300, "k_coefs": [1e-3, 3e-3, 1e-2], "n_train": 256, "n_test": 128},
        "tasks": ["single_double_quote", "bracket_counting", "set_or_string", "for_while", "if_ternary",
                  "lambda_func", "enumerate_range", "var_if"], "force": False,
    },
}


@dataclass
class GridPoint:
    name: str
    width: int
    density: float
    sets: list[str] = field(default_factory=list)


def density_label(density: float) -> str:
    """``1.0 -> "dense"``, ``0.25 -> "1/4"``, other values as written."""
    if density >= 1.0:
        return "dense"
    inv = 1.0 / density
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-6 else f"{density:g}"


def point_name(width: int, density: float) -> str:
    lab = density_label(density)
    return f"w{width}-" + ("dense" if lab == "dense" else "s" + lab.replace("1/", "").replace(".", "p"))


def grid_points(grid: str, device: str | None = None, steps: int | None = None) -> list[GridPoint]:
    """The models of a grid, densest first, each with its ``--set`` overrides.

    ``steps`` replaces the grid's training length (evaluations and checkpoints then
    every quarter of it): small models learn the tasks slowly, so a longer budget buys
    a denser frontier.
    """
    if grid not in GRIDS:
        raise UserError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    if steps is not None and steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    g = GRIDS[grid]
    train_sets = dict(g["train"])
    if steps is not None:
        every = max(1, steps // 4)
        train_sets.update(steps=steps, eval_every=every, checkpoint_every=every)
    out = []
    for density in g["densities"]:
        for w in g["widths"]:
            n_head = max(1, w // g["d_head"])
            sets = [f"model.n_layer={g['n_layer']}", f"model.d_model={w}", f"model.n_head={n_head}",
                    f"model.d_head={g['d_head']}", f"model.d_mlp={4 * w}", f"model.block_size={g['block_size']}",
                    f"train.density={density}", f"data.vocab_size={g['vocab_size']}"]
            sets += [f"train.{k}={v}" for k, v in train_sets.items() if not (k == "device" and device)]
            if device:
                sets.append(f"train.device={device}")
            out.append(GridPoint(point_name(w, density), w, density, sets))
    return out


def _say(msg: str, progress: bool) -> None:
    if progress:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------------- training


def ensure_trained(point: GridPoint, out: Path, data_dir: Path, progress: bool = True) -> tuple[Path, str]:
    """Train a grid point, or reuse / resume it; returns ``(run_dir, "reused"|"resumed"|"trained")``."""
    from ..config import build_config
    from ..train import checkpoint as ckpt
    from ..train.trainer import train

    run_dir = RunDir(out / point.name)
    cfg = build_config(None, None, point.sets + [f"data.data_dir={data_dir}"])
    if run_dir.weights.is_file():
        _check_same(run_dir, cfg)
        return run_dir.path, "reused"
    if run_dir.config.is_file() and ckpt.list_checkpoints(run_dir.checkpoints):
        _check_same(run_dir, cfg)
        train(run_dir.read_config(), run_dir.path, resume=True, progress=progress)
        return run_dir.path, "resumed"
    # a run stopped before its first checkpoint: only the files training writes first are there
    for path in (run_dir.config, run_dir.tokenizer, run_dir.metrics):
        path.unlink(missing_ok=True)
    train(cfg, run_dir.path, progress=progress)
    return run_dir.path, "trained"


def _check_same(run_dir: RunDir, cfg) -> None:
    saved = run_dir.read_config()
    mine = (cfg.model.n_layer, cfg.model.d_model, cfg.train.density, cfg.train.steps)
    theirs = (saved.model.n_layer, saved.model.d_model, saved.train.density, saved.train.steps)
    if mine != theirs:
        raise UserError(f"{run_dir.path} holds another model (n_layer, d_model, density, steps = {theirs}, "
                        f"grid wants {mine}); choose another --out")


def val_loss(run_dir: Path) -> float | None:
    """The last ``val_loss`` in ``metrics.jsonl``."""
    rows, _ = RunDir(run_dir).read_metrics()
    losses = [float(r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    return losses[-1] if losses else None


def count_nonzeros(model) -> tuple[int, int]:
    """(nonzero, total) entries of the weight-sparsified tensors."""
    from ..train.evaluation import nonzero_table

    rows = [r for r in nonzero_table(model) if not r["dense_by_design"]]
    return sum(r["nonzero"] for r in rows), sum(r["numel"] for r in rows)


# ---------------------------------------------------------------------------- pruning


def _cached_circuit(path: Path, task: str, want: dict, targets: Sequence[float]):
    """The circuit at ``RUN/circuits/FOLDER/circuit.json`` if ``rundir``'s rule reuses it
    for ``task`` and ``want`` and it has a size for every target."""
    from ..circuits.circuit import Circuit

    data = RunDir(path.parents[2]).fresh_circuit(path, circuit_key(task, 0, want))
    if data is None:
        return None
    try:
        c = Circuit.from_json(data, source=str(path))
    except UserError:
        return None
    have = {round(float(r["target_loss"]), 6) for r in c.metrics.get("size_vs_target", [])}
    if not all(round(float(t), 6) in have for t in targets):
        return None
    return c


def prune_sizes(run, task: str, targets: Sequence[float], settings: dict, force: bool, progress: bool = True,
                variant: str | None = None) -> dict:
    """Circuit sizes of one model on one task at each target (cached next to the run).

    ``settings`` holds ``steps``, ``k_coefs``, ``n_train``, ``n_test`` and perhaps
    ``ablation`` (default mean).  A ``variant``
    (e.g. ``"zero"`` for zero ablation) is cached apart, in ``circuits/<task>@<variant>``.
    """
    from ..circuits import NotLearnedError, prune

    main = TARGET_LOSS if TARGET_LOSS in targets else sorted(targets)[len(targets) // 2]
    want = {"target_loss": main, "ablation": "mean", **settings}
    folder = task if variant is None else f"{task}@{variant}"
    path = RunDir(run.path).circuit(folder)
    c = _cached_circuit(path, task, want, targets)
    cached = c is not None
    if c is None:
        try:
            c = prune(run, task, target_loss=main, steps=want["steps"], k_coefs=want["k_coefs"],
                      n_train=want["n_train"], n_test=want["n_test"], ablation=want["ablation"], force=force,
                      progress=progress, size_targets=sorted(set(targets) | {main}))
        except NotLearnedError as exc:
            return {"skipped": str(exc)}
        except UserError as exc:  # e.g. a prompt longer than the context
            return {"skipped": f"could not prune: {exc}"}
        c.save(path)
    rows = {round(float(r["target_loss"]), 6): r for r in c.metrics.get("size_vs_target", [])}
    out: dict[str, Any] = {"full_accuracy": c.metrics.get("full_accuracy"), "forced": bool(c.forced),
                           "cached": cached, "targets": {}}
    for t in targets:
        r = rows.get(round(float(t), 6))
        if r is None:
            out["targets"][f"{t:g}"] = {"nodes": None, "edges": None, "met": False}
        else:
            met = bool(r.get("met_heldout", False))
            out["targets"][f"{t:g}"] = {"nodes": int(r["n_nodes"]) if met else None,
                                        "edges": int(r["n_edges"]) if met else None,
                                        "loss": r.get("loss"), "test_loss": r.get("test_loss"), "met": met,
                                        "met_train": bool(r.get("met", False))}
    return out


# ---------------------------------------------------------------------------- aggregation


def _clean(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (loss, log size) with duplicate losses averaged; sizes <= 0 or None dropped."""
    by: dict[float, list[float]] = {}
    for loss, size in points:
        if loss is None or size is None or not math.isfinite(loss) or size <= 0:
            continue
        by.setdefault(float(loss), []).append(math.log(size))
    xs = np.array(sorted(by))
    ys = np.array([float(np.mean(by[x])) for x in xs])
    return xs, ys


def matched_ratio(dense: Sequence[tuple[float, float]], sparse: Sequence[tuple[float, float]],
                  n_grid: int = 9) -> dict:
    """Dense/sparse circuit-size ratio at matched pretraining loss.

    ``dense`` and ``sparse`` are ``(val_loss, size)`` points of two curves.  Inside the
    loss range both cover, log-size is interpolated linearly in loss and the ratio is
    the geometric mean over ``n_grid`` evenly spaced losses.  Without overlap, the curve
    with at least two points is extended by a least-squares line (``extrapolated``).
    """
    dx, dy = _clean(dense)
    sx, sy = _clean(sparse)
    res: dict[str, Any] = {"ratio": None, "loss_range": None, "extrapolated": False}
    if len(dx) == 0 or len(sx) == 0:
        res["note"] = "a curve has no points"
        return res
    lo, hi = max(dx[0], sx[0]), min(dx[-1], sx[-1])
    if lo <= hi:
        grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
        diff = np.interp(grid, dx, dy) - np.interp(grid, sx, sy)
        res.update(ratio=float(np.exp(diff.mean())), loss_range=[float(lo), float(hi)])
        return res
    if len(dx) >= 2:
        a, b = np.polyfit(dx, dy, 1)
        diff = (a * sx + b) - sy
        at = sx
    elif len(sx) >= 2:
        a, b = np.polyfit(sx, sy, 1)
        diff = dy - (a * dx + b)
        at = dx
    else:
        res["note"] = "the curves do not overlap in loss and neither has two points"
        return res
    res.update(ratio=float(np.exp(diff.mean())), loss_range=[float(at.min()), float(at.max())], extrapolated=True)
    return res


def summarize(models: list[dict], tasks: Sequence[str], targets: Sequence[float]) -> dict:
    """Geometric means per model and target, and dense-vs-sparse ratios per target."""
    summary: dict[str, Any] = {}
    for t in targets:
        key = f"{t:g}"
        met_by = [{task for task in tasks if (m["tasks"].get(task, {}).get("targets", {}).get(key) or {}).get("met")}
                  for m in models]
        trivial = sorted(task for task in set().union(*met_by)
                         if all(m["tasks"][task]["targets"][key]["nodes"] == 0 for m, mine in zip(models, met_by)
                                if task in mine))
        met_by = [mine - set(trivial) for mine in met_by]
        common = sorted(set.intersection(*met_by)) if met_by else []
        for m, mine in zip(models, met_by):
            use = common if common else sorted(mine)
            sizes = [m["tasks"][task]["targets"][key] for task in use]
            m.setdefault("geomean", {})[key] = {
                "edges": geometric_mean([s["edges"] for s in sizes]),
                "nodes": geometric_mean([s["nodes"] for s in sizes]),
                "tasks": use}
        by_task = {task: dense_over_sparse(task_curves(models, task, key))
                   for task in sorted(set().union(*met_by))}
        summary[key] = {"common_tasks": common, "trivial_tasks": trivial, "mixed_tasks": not common,
                        # sizes of different tasks are not comparable: no ratio from a mix
                        "dense_over_sparse": {} if not common else dense_over_sparse(curves_by_density(models, key)),
                        "by_task": {t: r for t, r in by_task.items() if r}}
    return summary


def dense_over_sparse(curves: dict[float, list[tuple[float, float, float]]]) -> dict:
    """``{density label: {"edges": matched_ratio, "nodes": matched_ratio}}`` against dense."""
    ratios = {}
    if 1.0 in curves:
        for dens, pts in curves.items():
            if dens >= 1.0:
                continue
            ratios[density_label(dens)] = {
                "edges": matched_ratio([(x, e) for x, e, _ in curves[1.0]], [(x, e) for x, e, _ in pts]),
                "nodes": matched_ratio([(x, n) for x, _, n in curves[1.0]], [(x, n) for x, _, n in pts])}
    return ratios


def task_curves(models: list[dict], task: str, key: str) -> dict[float, list[tuple[float, float, float]]]:
    """One task's ``{density: [(val_loss, edges, nodes), ...]}``: the models whose circuit met the target.

    Sizes below one count as one, as in ``geometric_mean``.
    """
    curves: dict[float, list] = {}
    for m in models:
        t = (m["tasks"].get(task) or {}).get("targets", {}).get(key) or {}
        if m.get("val_loss") is None or not t.get("met"):
            continue
        curves.setdefault(m["density"], []).append((m["val_loss"], max(1.0, float(t["edges"])),
                                                    max(1.0, float(t["nodes"]))))
    return {d: sorted(v) for d, v in sorted(curves.items(), reverse=True)}


def curves_by_density(models: list[dict], key: str) -> dict[float, list[tuple[float, float, float]]]:
    """``{density: [(val_loss, geomean edges, geomean nodes), ...]}`` sorted by loss."""
    curves: dict[float, list] = {}
    for m in models:
        g = m.get("geomean", {}).get(key) or {}
        if m.get("val_loss") is None or g.get("edges") is None:
            continue
        curves.setdefault(m["density"], []).append((m["val_loss"], g["edges"], g["nodes"]))
    return {d: sorted(v) for d, v in sorted(curves.items(), reverse=True)}


# ---------------------------------------------------------------------------- plots


def _draw_curves(ax, curves: dict, idx: int, ylabel: str, title: str, colours: dict[float, str]) -> None:
    """One panel: size (log y) against val loss, one line per density (same colour in every panel)."""
    for dens, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[idx] for p in pts], marker="o", label=density_label(dens),
                color=colours.get(dens))
    if not curves:
        ax.text(0.5, 0.5, "no circuit met this target", ha="center", va="center", transform=ax.transAxes)
    ax.set_yscale("log")
    ax.set_xlabel("pretraining val loss (nats/token)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(title="density", fontsize=8)


def plot_frontier(models: list[dict], targets: Sequence[float], out: Path,
                  tasks: Sequence[str] = (), summary: dict | None = None) -> list[Path]:
    """``frontier_edges.png`` / ``frontier_nodes.png`` (geometric means, one panel per
    target) and ``frontier_tasks.png`` (edges, one row per task of ``tasks`` met by some model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    def save(fig, name: str) -> Path:
        fig.tight_layout()
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        return path

    colours = {d: f"C{i}" for i, d in enumerate(sorted({m["density"] for m in models}, reverse=True))}
    paths = []
    for idx, what in ((1, "edges"), (2, "nodes")):
        fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.6), squeeze=False)
        for ax, t in zip(axes[0], targets):
            mixed = bool((summary or {}).get(f"{t:g}", {}).get("mixed_tasks"))
            _draw_curves(ax, curves_by_density(models, f"{t:g}"), idx, f"circuit {what} (geometric mean)",
                         f"target task loss {t:g}" + (" (each model's own tasks)" if mixed else ""), colours)
        paths.append(save(fig, f"frontier_{what}.png"))
    shown = [task for task in tasks if any(task_curves(models, task, f"{t:g}") for t in targets)]
    if shown:
        fig, axes = plt.subplots(len(shown), len(targets), figsize=(4.2 * len(targets), 3.4 * len(shown)),
                                 squeeze=False)
        for row, task in zip(axes, shown):
            for ax, t in zip(row, targets):
                _draw_curves(ax, task_curves(models, task, f"{t:g}"), 1, "circuit edges",
                             f"{task}, target {t:g}", colours)
        paths.append(save(fig, "frontier_tasks.png"))
    return paths


# ---------------------------------------------------------------------------- entry point


def train_model(point: GridPoint, out: Path, data_dir: Path, device: str, progress: bool = True) -> dict:
    """Train (or reuse, or resume) one grid point; its ``frontier.json`` record, tasks empty.

    Needs nothing but its arguments and the files under ``out`` and ``data_dir``, so it
    runs the same in this process or as a Ray task on another machine.
    """
    return _train_and_load(point, out, data_dir, device, progress)[0]


def _train_and_load(point: GridPoint, out: Path, data_dir: Path, device: str, progress: bool):
    from ..run import load_run

    t0 = time.perf_counter()
    run_dir, how = ensure_trained(point, out, data_dir, progress)
    t_train = time.perf_counter() - t0
    run = load_run(run_dir, device=device)
    nz, total = count_nonzeros(run.model)
    rec = {"name": point.name, "density": point.density, "width": point.width, "n_layer": run.model.cfg.n_layer,
           "nonzeros": nz, "sparse_params": total, "val_loss": val_loss(run_dir), "training": how,
           "train_seconds": round(t_train, 1), "tasks": {}}
    return rec, run


def prune_model(run_dir: Path, task: str, targets: Sequence[float], settings: dict, force: bool, device: str,
                progress: bool = True, run=None) -> dict:
    """``prune_sizes`` of one trained model on one task, timed; loads the run unless given."""
    from ..run import load_run

    t0 = time.perf_counter()
    if run is None:
        run = load_run(run_dir, device=device)
    r = prune_sizes(run, task, targets, settings, force, progress)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


def task_line(task: str, r: dict) -> str:
    return f"    {task}: " + (r["skipped"] if "skipped" in r else ", ".join(
        f"{k}: {v['nodes']} nodes / {v['edges']} edges" if v["met"] else f"{k}: not met"
        for k, v in r["targets"].items()) + (" (cached)" if r["cached"] else ""))


def model_line(rec: dict) -> str:
    val = "?" if rec["val_loss"] is None else f"{rec['val_loss']:.3f}"
    return (f"    {rec['training']}, val loss {val}, {rec['nonzeros']}/{rec['sparse_params']} nonzero, "
            f"{rec['seconds']:.0f} s")


def frontier(grid: str, out: str | Path, tasks: Sequence[str] | None = None,
             targets: Sequence[float] | None = None, data_dir: str | Path | None = None,
             device: str | None = None, progress: bool = True, steps: int | None = None,
             ray_address: str | None = None) -> dict:
    """Train (or reuse) a grid of models, prune them, write ``frontier.json`` and plots.

    With ``ray_address`` (``"local"`` for a Ray instance on this machine) every model is
    trained, and every model and task pruned, as its own Ray task (``frontier_ray``);
    ``frontier.json`` is the same as this process would write, timings aside.
    """
    from ..io import atomic_write_json
    from ..tasks.python_tasks import get_task

    if grid not in GRIDS:
        raise UserError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    g = GRIDS[grid]
    tasks = list(tasks) if tasks else list(g["tasks"])
    for t in tasks:
        get_task(t)  # a clear error for an unknown name
    targets = sorted(set(float(t) for t in (targets or g.get("targets", DEFAULT_TARGETS))))
    if not targets or any(not (t > 0 and math.isfinite(t)) for t in targets):
        raise UserError(f"targets must be positive numbers, got {targets}")
    out = Path(out)
    grid_points(grid, device, steps)  # bad --steps: an error before any data is built
    from ..data.build import ensure_default_data, require_data_dir

    if data_dir is None:
        if grid == "smoke":
            raise UserError("the smoke grid needs --data DIR (e.g. a tiny data dir from 'data build')")
        data_dir = ensure_default_data(vocab_size=g["vocab_size"], progress=progress)
    data_dir = require_data_dir(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid, device, steps)
    load_device = device or g["train"].get("device", "cpu")
    t_all = time.perf_counter()
    if ray_address is not None:
        from .frontier_ray import frontier_on_ray

        models = frontier_on_ray(ray_address, points, out, data_dir, tasks, targets, dict(g["prune"]), g["force"],
                                 load_device, progress)
    else:
        models = []
        for i, p in enumerate(points, 1):
            _say(f"[{i}/{len(points)}] {p.name}: width {p.width}, density {density_label(p.density)}", progress)
            rec, run = _train_and_load(p, out, data_dir, load_device, progress)
            for task in tasks:
                rec["tasks"][task] = prune_model(out / p.name, task, targets, dict(g["prune"]), g["force"],
                                                 load_device, progress, run=run)
                _say(task_line(task, rec["tasks"][task]), progress)
            rec["seconds"] = round(rec["train_seconds"] + sum(r["seconds"] for r in rec["tasks"].values()), 1)
            _say(model_line(rec), progress)
            models.append(rec)
    summary = summarize(models, tasks, targets)
    result = {"grid": grid, "tasks": tasks, "targets": targets, "data_dir": str(data_dir),
              "paper_ratio_edges": PAPER_RATIO, "edge_count": EDGE_COUNT, "models": models, "summary": summary,
              "seconds": round(time.perf_counter() - t_all, 1)}
    atomic_write_json(out / "frontier.json", to_jsonable(result))
    result["plots"] = [str(p) for p in plot_frontier(models, targets, out, tasks, summary)]
    return result


def ratio_lines(result: dict) -> list[str]:
    """Human-readable dense/sparse ratios next to the paper's ~16x: per task, then over tasks."""
    def parts(r: dict) -> str:
        out = []
        for what in ("edges", "nodes"):
            x = r[what]
            if x["ratio"] is None:
                out.append(f"{what}: n/a")
            else:
                out.append(f"{what} {x['ratio']:.2f}x" + (" (extrapolated)" if x["extrapolated"] else ""))
        return ", ".join(out)

    lines = []
    for key, s in result["summary"].items():
        for task, ratios in s.get("by_task", {}).items():
            for dens, r in ratios.items():
                lines.append(f"target {key}, {task}: dense/sparse({dens}) at matched loss: {parts(r)}")
        if s.get("mixed_tasks"):
            lines.append(f"target {key}: no task met by every model, so no ratio over tasks; "
                         f"read the per-task lines (paper: ~{PAPER_RATIO:g}x edges)")
        for dens, r in s["dense_over_sparse"].items():
            lines.append(f"target {key}, geometric mean over {', '.join(s['common_tasks'])}: dense/sparse({dens}) "
                         f"at matched loss: {parts(r)} (paper: ~{PAPER_RATIO:g}x edges)")
    return lines

