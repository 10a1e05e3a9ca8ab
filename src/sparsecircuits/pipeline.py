"""The demo's pipeline: the whole method on one run directory, reusing whatever is built.

data (the stdlib plus generated simple Python) -> train -> score the 20 tasks -> prune
every learned task (single_double_quote and bracket_counting, the paper's two, first) ->
node details -> HTML report.  Each stage is skipped when its output already exists (a
circuit only while ``rundir``'s freshness rule says it still stands for these settings),
so a second run is fast and an interrupted run picks up where it stopped: training
resumes from its last checkpoint.  ``sparsecircuits demo`` parses its arguments into ``DemoSettings`` and calls
``run_demo``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import LEARNED_ACCURACY, RunConfig
from .rundir import RunDir, circuit_key

# The two tasks the paper studies: pruned first, and with ``force_paper_tasks`` even where
# the model has not learned them (a forced circuit of an unlearned task misses the target
# with hundreds of nodes, and was the slowest to prune: 79 s of the demo's pruning).
ALWAYS = ("single_double_quote", "bracket_counting")
# Test pairs behind each node's ablation effect in the report.  The effect costs one
# masked forward per node, and a forced bracket circuit keeps hundreds of nodes: with the
# pruner's 128 pairs the details alone took over three minutes of the demo's twenty.
DETAIL_PAIRS = 32
SEED = 0  # the pruning seed (prune's default)
N_STAGES = 6


@dataclass
class DemoSettings:
    out: Path = Path("runs/demo")
    preset: str = "cpu-small"
    sets: list[str] = field(default_factory=list)  # --set overrides of the training config
    data: Path | None = None  # a token-shard folder; None: the stdlib, built once and cached
    extra_tasks: int | None = None  # at most this many learned tasks besides ALWAYS (None: all)
    n: int = 200  # test items per task when scoring the full model
    prune_steps: int | None = None  # optimisation steps per k_coef (None: the pruner's own)
    prune_items: int | None = None  # task pairs for pruning, half as many held out (None: the pruner's own)
    jobs: int | None = None  # tasks pruned at once, one process and one thread each (None: one per core)
    force_paper_tasks: bool = False  # prune ALWAYS's tasks even where not learned, marked forced


class _Clock:
    """Stage lines with the minutes spent since the start (the demo aims at 15 in all)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def stage(self, i: int, text: str) -> None:
        mins = (time.perf_counter() - self.t0) / 60
        print(f"[{i}/{N_STAGES}] {mins:4.1f} min  {text}", flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def choose_tasks(scores: list[dict], extra: int | None = None, force_paper: bool = False) -> list[str]:
    """The learned tasks (accuracy >= 80%): the paper's two first, then the others best
    first, at most ``extra`` of those (None: all).  ``force_paper`` keeps the paper's two
    even where they are not learned."""
    learned = {s["task"] for s in scores if s["accuracy"] >= LEARNED_ACCURACY}
    paper = [t for t in ALWAYS if force_paper or t in learned]
    others = [s for s in scores if s["task"] not in ALWAYS and s["task"] in learned]
    others.sort(key=lambda s: (-s["accuracy"], s["loss"]))
    return paper + [s["task"] for s in others[:extra]]


def run_demo(s: DemoSettings) -> Path:
    """Every stage in order; returns the report's ``index.html``."""
    clock = _Clock()
    cfg = _prepare_data(s, clock)
    run = _train(s, cfg, clock)
    scores = _score_tasks(run, s, clock)
    chosen = choose_tasks(scores, s.extra_tasks, s.force_paper_tasks)
    for x in scores:
        if x["task"] in ALWAYS and x["task"] not in chosen:
            print(f"    {x['task']}: not learned ({x['accuracy']:.0%}), so not pruned "
                  "(--force-paper-tasks prunes it anyway, marked forced)")
    _prune(run, s, chosen, {x["task"]: x["accuracy"] for x in scores}, clock)
    _details(run, s, chosen, clock)
    clock.stage(6, "report")
    from .report.html import write_report

    index = write_report(s.out)
    print(f"demo finished in {clock.seconds():.0f}s; open the report: {index.resolve()}")
    return index


def _prepare_data(s: DemoSettings, clock: _Clock) -> RunConfig:
    """The training config with its data folder resolved (the default is built on first use)."""
    from .config import build_config
    from .data.build import resolve_data

    cfg = build_config(s.preset, sets=s.sets)
    if s.data is not None:
        cfg.data.data_dir = str(s.data)
    clock.stage(1, f"data: {s.data}" if s.data is not None else
                "data: the Python standard library as corpus (built once, then cached)")
    cfg.data.data_dir = str(resolve_data(cfg.data))
    return cfg


def _train(s: DemoSettings, cfg: RunConfig, clock: _Clock):
    """Reuse finished weights, resume from a checkpoint, or train; returns the loaded run."""
    from .run import load_run
    from .train.checkpoint import list_checkpoints
    from .train.trainer import train

    run_dir = RunDir(s.out)
    if run_dir.weights.is_file():
        clock.stage(2, f"train: {s.out}/model.safetensors exists, reusing it")
    elif list_checkpoints(run_dir.checkpoints):
        clock.stage(2, f"train: resuming {s.out} from its last checkpoint")
        train(run_dir.read_config(), s.out, resume=True)
    else:
        clock.stage(2, f"train: {s.preset} -> {s.out}")
        train(cfg, s.out)
    return load_run(s.out)


def _score_tasks(run, s: DemoSettings, clock: _Clock) -> list[dict]:
    """The full model on the 20 tasks (``tasks.json``) and its own measures (``eval.json``)."""
    from .tasks.evaluation import evaluate_suite
    from .train.evaluation import evaluate_run, save_evaluation

    clock.stage(3, "tasks: scoring the full model on the 20 tasks, and its own measures")
    run_dir = RunDir(s.out)
    if not run_dir.eval.is_file():
        save_evaluation(s.out, evaluate_run(run, n_batches=10))
    scores = evaluate_suite(run, n=s.n)
    run_dir.write_tasks(scores, split="test", n=s.n)
    for x in scores:
        mark = "learned" if x["accuracy"] >= LEARNED_ACCURACY else ""
        print(f"    {x['task']:<28} accuracy {x['accuracy']:.3f}  loss {x['loss']:.4f}  {mark}")
    return scores


def _prune(run, s: DemoSettings, chosen: list[str], accuracy: dict[str, float], clock: _Clock) -> None:
    """Prune each chosen task unless a circuit pruned the same way is there already; a task
    the model has not learned is pruned anyway and marked forced.

    Tasks are pruned ``s.jobs`` at a time in worker processes of one thread each: a
    pruning step is many small tensor ops that two threads speed up far less than two
    tasks side by side do.  Each worker also computes its circuit's node details (the
    next stage then has only reused circuits left to do).  The node means are computed
    (and cached) first, so workers only read them."""
    from .circuits.masking import node_means
    from .circuits.prune import make_settings

    clock.stage(4, f"prune: {', '.join(chosen)}")
    run_dir = RunDir(s.out)
    settings = asdict(make_settings(steps=s.prune_steps, **_prune_items(s)))
    todo = []
    for task in chosen:
        if run_dir.fresh_circuit(run_dir.circuit(task), circuit_key(task, SEED, settings)) is not None:
            print(f"    {task}: circuit.json exists, reusing it")
            continue
        if accuracy[task] < LEARNED_ACCURACY:
            print(f"    {task}: the model is only {accuracy[task]:.0%} accurate; pruning anyway, marked forced")
        todo.append(task)
    if not todo:
        return
    node_means(run)
    from .cluster import local_cpus

    jobs = min(len(todo), s.jobs or local_cpus())
    # forced circuits are the largest and slowest: started first, they do not finish last alone
    todo.sort(key=lambda t: accuracy[t] >= LEARNED_ACCURACY)
    calls = [(task, accuracy[task] < LEARNED_ACCURACY) for task in todo]
    if jobs <= 1:
        results = (_prune_one(run, s, task, force, progress=True) for task, force in calls)
    else:
        print(f"    pruning {len(todo)} tasks, {jobs} at a time in worker processes", flush=True)
        results = _prune_in_workers(s, calls, jobs)
    for task, m in results:
        met = "met" if m["circuit_loss"] <= m["target_loss"] else "NOT met on test items"
        print(f"    {task}: {m['n_nodes']} nodes, {m['n_edges']} edges, circuit loss {m['circuit_loss']:.3f} "
              f"on test items (target {m['target_loss']}: {met})", flush=True)


def _prune_items(s: DemoSettings) -> dict:
    return {} if s.prune_items is None else {"n_train": s.prune_items, "n_test": max(1, s.prune_items // 2)}


def _prune_one(run, s: DemoSettings, task: str, force: bool, threads: int = 0,
               progress: bool = False) -> tuple[str, dict]:
    """Prune one task, save its circuit and attach its node details; (task, its metrics)."""
    from .analysis.node_details import attach_details
    from .circuits import prune

    circuit = prune(run, task, force=force, steps=s.prune_steps, seed=SEED, progress=progress, threads=threads,
                    **_prune_items(s))
    circuit.save(RunDir(s.out).circuit(task))
    attach_details(run, task, n_test=DETAIL_PAIRS)
    return task, circuit.metrics


_WORKER_RUN = None


def _worker_prune(s: DemoSettings, task: str, force: bool) -> tuple[str, dict]:
    """In a worker process: load the run once, then prune ``task`` on one thread."""
    global _WORKER_RUN
    from .run import load_run

    if _WORKER_RUN is None:
        import torch

        torch.set_num_threads(1)
        _WORKER_RUN = load_run(s.out)
    return _prune_one(_WORKER_RUN, s, task, force, threads=1)


def _prune_in_workers(s: DemoSettings, calls: list[tuple[str, bool]], jobs: int):
    """Each (task, force) pruned in one of ``jobs`` spawned processes (forking a process that
    has run torch can deadlock its thread pools); yields results as they finish."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker_prune, s, task, force) for task, force in calls]
        for f in as_completed(futures):
            yield f.result()


def _details(run, s: DemoSettings, chosen: list[str], clock: _Clock) -> None:
    """Top-activating snippets, class activations and ablation effects of each circuit's
    nodes, for those that have none yet."""
    from .analysis.node_details import attach_details

    clock.stage(5, "details: top-activating snippets, class activations, ablation effects")
    run_dir = RunDir(s.out)
    for task in chosen:
        if run_dir.read_circuit(task).get("details"):
            continue
        attach_details(run, task, n_test=DETAIL_PAIRS)
