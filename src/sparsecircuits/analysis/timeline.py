"""How a task's circuit forms during training: the circuit of every kept step.

``train.keep_checkpoints`` keeps the weights of evenly spaced steps (``train/kept.py``).
Each is pruned on its own weights, with its own node means (cached in its kept folder), the
same settings and the same seed, hence the same task items: what changes from one step to
the next is the model, not the pruning. A step at which the full model is below the
learned bar gets its accuracy only, unless ``force``: a mask can build a classifier out of
mean-ablation offsets where the model knows nothing, so such a circuit says little about
the model (``prune`` refuses it for the same reason).

Per step: the full model's test accuracy and loss, the circuit's size and held-out loss,
and the Jaccard overlap of its node set with the previous pruned step's and with the last
one's. Per node (every node kept at some step): the steps that keep it and its
persistence, the fraction of pruned steps that keep it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from ..circuit_sizes import internal_nodes, jaccard
from ..errors import UserError
from ..rundir import PRUNE_KEYS, RunDir, circuit_key


def _val_losses(run_dir: RunDir) -> dict[int, float]:
    """The val loss of each step at which ``metrics.jsonl`` logged one."""
    rows, _ = run_dir.read_metrics()
    return {r["step"]: r["val_loss"] for r in rows if isinstance(r.get("step"), int) and r.get("val_loss") is not None}


def _pruned_row(step: int, data: dict, path: Path, cached: bool) -> dict[str, Any]:
    m = data.get("metrics", {})
    return {"step": step, "pruned": True, "cached": cached, "full_accuracy": m.get("full_accuracy"),
            "full_loss": m.get("full_loss"), "n_nodes": m.get("n_nodes"), "n_edges": m.get("n_edges"),
            "circuit_loss": m.get("circuit_loss"), "circuit_accuracy": m.get("circuit_accuracy"),
            "target_met": m.get("target_met"), "forced": bool(data.get("forced")), "path": str(path),
            "nodes": internal_nodes(data)}


def _prune_step(run_path: Path, step: int, task: str, want: dict, prune_kwargs: dict, seed: int,
                force: bool, progress: bool, reuse: bool) -> dict[str, Any]:
    """One kept step: its cached circuit if it still stands, else pruned now (or its
    accuracy alone when the model has not learned the task there)."""
    from ..circuits.prune import NotLearnedError, prune
    from ..run import load_run

    run = load_run(run_path, checkpoint=step)
    kept = RunDir(run.path)
    path = kept.circuit(task)
    data = kept.fresh_circuit(path, want) if reuse else None
    if data is not None and (force or not data.get("forced")):
        return _pruned_row(step, data, path, cached=True)
    try:
        circuit = prune(run, task, seed=seed, force=force, progress=progress, **prune_kwargs)
    except NotLearnedError as exc:
        return {"step": step, "pruned": False, "full_accuracy": exc.accuracy, "full_loss": exc.loss,
                "reason": "not learned", "nodes": []}
    circuit.save(path)
    return _pruned_row(step, circuit.to_json(), path, cached=False)


def _persistence(rows: list[dict]) -> list[dict]:
    """Every node kept at some pruned step: the steps that keep it and the fraction they are."""
    pruned = [r for r in rows if r["pruned"]]
    steps_of: dict[str, list[int]] = {}
    for r in pruned:
        for node in r["nodes"]:
            steps_of.setdefault(node, []).append(r["step"])
    last = set(pruned[-1]["nodes"]) if pruned else set()
    out = [{"id": node, "steps": steps, "persistence": len(steps) / len(pruned), "first": steps[0],
            "in_last": node in last} for node, steps in steps_of.items()]
    # most persistent first; among equals, the earliest to appear, then by hook and channel number
    return sorted(out, key=lambda n: (-n["persistence"], n["first"], *_hook_channel(n["id"])))


def _hook_channel(node: str) -> tuple[str, int]:
    """``"blocks.0.attn.hook_v:22"`` -> ``("blocks.0.attn.hook_v", 22)``, so channel 9 sorts before 10."""
    hook, _, channel = node.rpartition(":")
    return (hook, int(channel)) if channel.isdigit() else (node, -1)


def build_timeline(run_path: str | Path, task: str, *, seed: int = 0, force: bool = False, progress: bool = True,
                   reuse: bool = True, at: Iterable[int] | None = None, **prune_kwargs) -> dict:
    """Prune ``task`` at every kept step of a run (or at the training steps ``at``) and
    return the timeline.

    ``prune_kwargs`` are ``prune()``'s settings (``target_loss``, ``ablation``, ``steps``,
    ``k_coefs``, ``threads``, ...; None means the default); a step's cached circuit is
    reused when it was pruned the same way after its weights were written.
    """
    from ..circuits.prune import make_settings

    run_path = Path(run_path)
    run_dir = RunDir(run_path)
    if not run_dir.is_run():
        raise UserError(f"{run_path} is not a run directory (no config.json)")
    kept = run_dir.kept_steps()
    chosen = kept if at is None else sorted(set(int(s) for s in at))
    if not chosen:
        raise UserError(f"{run_path} has no kept checkpoints; train with --set train.keep_checkpoints=N "
                        "(or prune one resumable checkpoint with prune --checkpoint STEP)")
    settings_args = {k: v for k, v in prune_kwargs.items() if v is not None}
    settings = make_settings(**settings_args)
    want = circuit_key(task, seed, asdict(settings))
    rows = [_prune_step(run_path, step, task, want, settings_args, seed, force, progress, reuse) for step in chosen]
    val = _val_losses(run_dir)
    cfg = run_dir.read_config()
    previous: list[str] | None = None
    last = next((r["nodes"] for r in reversed(rows) if r["pruned"]), None)
    for r in rows:
        r["tokens"] = r["step"] * cfg.train.batch_size * cfg.seq_len  # as training counts them
        r["val_loss"] = val.get(r["step"])
        r["learned"] = r.get("full_accuracy") is not None and r["full_accuracy"] >= settings.min_accuracy
        if r["pruned"]:
            r["jaccard_previous"] = jaccard(r["nodes"], previous) if previous is not None else None
            r["jaccard_last"] = jaccard(r["nodes"], last)
            previous = r["nodes"]
    learned = [r["step"] for r in rows if r["learned"]]
    return {"task": task, "run": str(run_path), "seed": int(seed), "force": bool(force),
            "settings": {k: want[k] for k in PRUNE_KEYS}, "learned_accuracy": settings.min_accuracy,
            "steps": rows, "nodes": _persistence(rows),
            "first_learned_step": learned[0] if learned else None}


def timeline(run_path: str | Path, task: str, **kwargs) -> tuple[dict, Path]:
    """``build_timeline`` and write it to ``RUN/timelines/TASK.json``; returns both."""
    record = build_timeline(run_path, task, **kwargs)
    return record, RunDir(run_path).write_timeline(task, record)

