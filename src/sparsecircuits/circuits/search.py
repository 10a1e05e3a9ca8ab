"""Searching the pruning hyperparameters: N pruning runs, the smallest passing circuit kept.

The paper retunes pruning for every model and task (CARBS, 32 rounds of 8 runs from the
centres of its Table 2) and finds the results "improve dramatically towards the end".
``search`` does the same with Optuna: each trial is one pruning run (one optimisation of
the node masks, then the bisection for the smallest top-``K`` circuit on the train items)
with hyperparameters drawn from ``SPACE``, and the circuit kept is the one with the fewest
edges (``metrics["n_edges"]``) among the trials whose circuit meets the target loss on
the held-out items.  A search never returns a circuit that misses the target unless
``force`` (then the trial with the lowest held-out loss is returned and marked).

Choices:

* The held-out items are the circuit's test items, the same ones its ``circuit_loss`` is
  measured on; they are never used to optimise or bisect.  Choosing among trials by them
  makes the reported loss of the winner slightly optimistic (the more trials, the more),
  which is the price of the guarantee that the reported circuit meets the target.
* The first trials are our defaults, one per default ``k_coef`` (largest first), so a
  budget of N >= 3 contains what plain ``prune`` does; the rest are Optuna's seeded TPE
  sampler over ``SPACE``, ranges that hold both the paper's centres and ours.
* Trials are proposed in rounds of ``batch`` (8, as in the paper) whatever the number of
  workers: ``--jobs`` and Ray only decide how many of a round run at once, so the same
  seed proposes the same trials on one core or on a cluster.  Trial ``i`` prunes with
  seed ``seed + i``; the task items are those of ``seed`` in every trial.
* Optuna minimises ``log(1 + edges)`` for a passing trial and, for a failing one,
  ``log(1 + all edges) + 1 + held-out excess``: every failure ranks below every success,
  and nearer misses rank higher.
* Workers get the loaded run and the node means by value (pickled between our own
  processes, or through Ray's object store), so Ray workers need the package installed but
  not the run directory or the validation tokens.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch

from ..config import TARGET_LOSS
from ..errors import UserError
from .circuit import Circuit
from .frozen import kernel_sites
from .lanes import spread
from .graph import count_edges
from .prune import (
    _Context,
    _Prober,
    _candidate,
    _frozen,
    _prepare,
    _threads,
    empty_circuit,
    finish,
    heldout_loss,
    lane_count,
    make_settings,
)

DEFAULT_BATCH = 8  # trials proposed per round (the paper's 8 parallel pruning jobs)
STARTUP_TRIALS = 8  # random trials before TPE models the results


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a ``PruneSettings`` field (or ``inv_beta2``) and its range."""

    name: str
    low: float
    high: float
    log: bool = True
    paper: float | None = None  # the paper's CARBS centre (Table 2)


SPACE = (
    Param("k_coef", 1e-5, 1e-1, paper=1e-4),
    Param("lr", 1e-3, 1e-1, paper=3e-3),
    Param("weight_decay", 1e-5, 1e-1, paper=1e-3),
    Param("tau_init_mean", 1e-2, 1.0, paper=1e-1),
    Param("tau_init_std", 1e-3, 1e-1, paper=1e-2),
    Param("inv_beta2", 5e-4, 0.3, paper=5e-2),  # 1 - beta2
    Param("temperature", 0.1, 10.0, paper=1.0),
    Param("warmup_frac", 0.0, 0.2, log=False, paper=5e-2),
)


class SearchFailedError(UserError):
    """No trial met the target on held-out items; ``record`` holds every trial."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dependency; a partial install lacks it
        raise UserError("the pruning search needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distributions(optuna) -> dict:
    return {p.name: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log) for p in SPACE}


def settings_params(params: dict) -> dict:
    """Trial parameters -> ``PruneSettings`` fields (``inv_beta2`` becomes ``beta2``)."""
    out = {k: float(v) for k, v in params.items() if k not in ("inv_beta2", "k_coef")}
    if "inv_beta2" in params:
        out["beta2"] = 1.0 - float(params["inv_beta2"])
    return out


def start_params(s, k_coef: float) -> dict:
    """The search's first trials: the settings as given, at one ``k_coef``, clipped into ``SPACE``."""
    values = {"k_coef": k_coef, "lr": s.lr, "weight_decay": s.weight_decay, "tau_init_mean": s.tau_init_mean,
              "tau_init_std": s.tau_init_std, "inv_beta2": 1.0 - s.beta2, "temperature": s.temperature,
              "warmup_frac": s.warmup_frac}
    return {p.name: min(max(float(values[p.name]), p.low), p.high) for p in SPACE}


def trial_seed(seed: int, number: int) -> int:
    return int(seed) + int(number)


# ---------------------------------------------------------------------------- one trial


@dataclass
class _Job:
    """What a worker needs to run trials: sent once to each worker process or Ray node."""

    run: object
    task: object  # a task name or a list of examples / pairs
    name: str | None
    settings: object  # PruneSettings
    seed: int
    means: torch.Tensor | None  # the ablation baseline the driver computed (None: zero ablation)
    threads: int  # torch threads per worker
    key: str


_CONTEXTS: dict[str, _Context] = {}  # per worker process: the job's context, built once
_KERNELS = ExitStack()  # per worker process: the job model's AbsTopK sites on the C kernel


def _context(job: _Job) -> _Context:
    ctx = _CONTEXTS.get(job.key)
    if ctx is None:
        _CONTEXTS.clear()  # one search at a time per worker
        _KERNELS.close()
        with _threads(job.threads):
            # the worker's own copy of the model stays on the kernel for the job's trials
            _KERNELS.enter_context(kernel_sites(job.run.model))
            ctx = _prepare(job.run, job.task, job.settings, seed=job.seed, force=True, name=job.name,
                           means=job.means, t0=time.perf_counter())
        _CONTEXTS[job.key] = ctx
    return ctx


def run_trial(ctx: _Context, base, params: dict, seed: int, threads: int = 0) -> dict:
    """One pruning run with ``params``: its circuit's size and held-out loss, and its ``tau``.

    ``cpu_seconds`` is the process's CPU time over the trial (a worker runs one trial at a
    time, so on a loaded machine it is the trial's own cost where wall time is not).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    s = replace(base, k_coefs=[float(params["k_coef"])], **settings_params(params))
    s.validate()
    with _threads(threads), _frozen(ctx.model):
        cand = _candidate(ctx, s, float(params["k_coef"]), seed)
        loss, acc = heldout_loss(ctx, cand, s)
    return {"seed": seed, "n_nodes": cand["k"], "n_edges": cand["edges"], "n_open": cand["n_open"],
            "train_loss": cand["train_loss"], "train_met": cand["met"], "heldout_loss": loss,
            "heldout_accuracy": acc, "met": bool(cand["met"] and loss <= s.target_loss),
            "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3),
            "tau": cand["tau"], "curve": cand["curve"]}


def _job_trial(job: _Job, params: dict, seed: int) -> dict:
    return run_trial(_context(job), job.settings, params, seed, job.threads)


# ---------------------------------------------------------------------------- executors


class _Inline:
    """Trials one after another in this process (``jobs=1``)."""

    def __init__(self, ctx: _Context, base, threads: int) -> None:
        self.ctx, self.base, self.threads = ctx, base, threads

    def run(self, calls: list[tuple[dict, int]], done: Callable[[dict], None]) -> list[dict]:
        out = []
        for params, seed in calls:
            out.append(run_trial(self.ctx, self.base, params, seed, self.threads))
            done(out[-1])
        return out

    def close(self) -> None:
        pass


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    torch.set_num_threads(max(1, job.threads))
    _WORKER_JOB = job


def _worker_trial(params: dict, seed: int) -> dict:
    assert _WORKER_JOB is not None
    return _job_trial(_WORKER_JOB, params, seed)


class _Processes:
    """Trials in ``jobs`` local worker processes (spawned: forking a process that has run
    torch can deadlock its thread pools)."""

    def __init__(self, job: _Job, jobs: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker, initargs=(job,))

    def run(self, calls: list[tuple[dict, int]], done: Callable[[dict], None]) -> list[dict]:
        from concurrent.futures import as_completed

        futures = [self.pool.submit(_worker_trial, params, seed) for params, seed in calls]
        for f in as_completed(futures):
            done(f.result())
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_trial(job: _Job, params: dict, seed: int) -> dict:
    return _job_trial(job, params, seed)


class _Ray:
    """Trials as Ray tasks (one CPU each) on the cluster at ``address``.

    Connects unless this process is already connected (``ray.init`` was called).  Each
    round's trials are submitted at once; the cluster runs as many as it has CPUs for.
    """

    def __init__(self, job: _Job, address: str) -> None:
        from ..cluster import connect

        self.ray, _ = connect(address)
        self.job_ref = self.ray.put(job)
        self.remote = self.ray.remote(num_cpus=1)(_ray_trial)

    def run(self, calls: list[tuple[dict, int]], done: Callable[[dict], None]) -> list[dict]:
        from ..cluster import raise_task_error

        ray = self.ray
        refs = [self.remote.remote(self.job_ref, params, seed) for params, seed in calls]
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done(ray.get(ready[0]))
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise_task_error(exc)
            raise

    def close(self) -> None:
        pass


def default_jobs() -> int:
    """One worker per core this process may use."""
    from ..cluster import local_cpus

    return local_cpus()


# ---------------------------------------------------------------------------- the search


def _objective(r: dict, target: float, all_edges: int) -> float:
    if r["met"]:
        return math.log1p(r["n_edges"])
    excess = r["heldout_loss"] - target if math.isfinite(r["heldout_loss"]) else 10.0
    return math.log1p(all_edges) + 1.0 + max(0.0, excess)


def best_trial(trials: Sequence[dict]) -> dict | None:
    """Fewest edges among trials meeting the target (then fewest nodes, lowest held-out loss)."""
    passing = [t for t in trials if t["met"]]
    if not passing:
        return None
    return min(passing, key=lambda t: (t["n_edges"], t["n_nodes"], t["heldout_loss"], t["number"]))


def search(run, task, n_trials: int, *, jobs: int = 1, ray_address: str | None = None,
           batch: int = DEFAULT_BATCH, target_loss: float = TARGET_LOSS, ablation: str = "mean",
           steps: int | None = None, seed: int = 0, force: bool = False, k_coefs: Sequence[float] | None = None,
           n_train: int = 256, n_test: int = 128, progress: bool = True, name: str | None = None,
           means: torch.Tensor | None = None, on_trial: Callable[[dict], None] | None = None,
           **overrides) -> Circuit:
    """``n_trials`` pruning runs over ``SPACE``; the smallest circuit meeting the target on held-out items.

    ``jobs`` local processes run each round's trials (``0``: one per core), or Ray tasks on
    the cluster at ``ray_address``.  Raises ``SearchFailedError`` (a ``UserError``) when no
    trial meets the target, unless ``force``; ``force`` also prunes a task the model has
    not learned, as in ``prune``.  ``k_coefs`` are the first trials' penalties (default:
    ``DEFAULT_K_COEFS``); other keywords set ``PruneSettings`` fields, the starting point
    of the search.  The record of every trial is ``circuit.metrics["search"]``; ``on_trial``
    is also given each trial's record as soon as it ends (to log a long search as it goes;
    with several workers not necessarily in trial order).
    """
    t0 = time.perf_counter()
    if n_trials < 1:
        raise UserError(f"the search needs at least 1 trial, got {n_trials}")
    if batch < 1:
        raise UserError(f"the search batch must be >= 1, got {batch}")
    if jobs < 0:
        raise UserError(f"jobs must be >= 0, got {jobs}")
    optuna = _optuna()
    s = make_settings(target_loss, ablation, steps, k_coefs, n_train, n_test, **overrides)
    jobs = default_jobs() if jobs == 0 else jobs
    with _threads(s.threads), ExitStack() as kernels:
        if ray_address is None and jobs == 1:  # trials in this process: AbsTopK by the C kernel (same values)
            kernels.enter_context(kernel_sites(run.model))  # (workers get the plain model and do this themselves)
            kernels.enter_context(spread(run.model, lane_count(s), s.threads))  # chunks side by side, one lane per thread
        ctx = _prepare(run, task, s, seed=int(seed), force=force, name=name, means=means, t0=t0)
        empty = empty_circuit(ctx, s, int(seed), t0)
        if empty is not None:  # nothing smaller to search for
            empty.metrics["search"] = {"n_trials": 0, "requested_trials": n_trials, "seed": int(seed),
                                       "target_loss": s.target_loss, "trials": [], "target_met": True, "n_met": 0,
                                       "skipped": "the empty circuit meets the target and every size target",
                                       "seconds": empty.metrics["seconds"]}
            return empty
        all_edges = count_edges(ctx.model, ctx.nodes, torch.ones(ctx.nodes.n, dtype=torch.bool))
        worker_threads = s.threads if s.threads > 0 else (0 if jobs == 1 and ray_address is None else 1)
        job = _Job(run=run, task=task, name=ctx.data.name, settings=s, seed=int(seed), means=ctx.masked.baseline,
                   threads=worker_threads, key=f"{os.getpid()}-{id(ctx)}-{time.time_ns()}")
        if ray_address is not None:
            executor = _Ray(job, ray_address)
            where = f"ray:{ray_address}"
        elif jobs > 1:
            executor = _Processes(job, min(jobs, batch, n_trials))
            where = f"{min(jobs, batch, n_trials)} processes"
        else:
            executor = _Inline(ctx, s, worker_threads)
            where = "inline"
        trials = _run_study(optuna, executor, s, n_trials, batch, int(seed), all_edges, ctx.data.name, progress,
                            on_trial)
        record = {"n_trials": n_trials, "batch": batch, "seed": int(seed), "sampler": "optuna TPE",
                  "executor": where, "target_loss": s.target_loss, "heldout": "test items",
                  "space": [asdict(p) for p in SPACE], "all_edges": all_edges,
                  "trials": [{k: v for k, v in t.items() if k not in ("tau", "curve")} for t in trials]}
        best = best_trial(trials)
        if best is None and not force:
            lowest = min(trials, key=lambda t: (t["heldout_loss"], t["number"]))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            raise SearchFailedError(
                f"search: none of {n_trials} trials met target {s.target_loss} on held-out items of task "
                f"{ctx.data.name} (lowest held-out loss {lowest['heldout_loss']:.3f}, trial {lowest['number']}); "
                f"try a larger --search or --force to keep the closest", record)
        chosen, circuit = _first_circuit(ctx, s, trials, best, int(seed), t0)
    record["best_trial"] = chosen["number"]
    record["target_met"] = best is not None
    record["n_met"] = sum(t["met"] for t in trials)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    circuit.metrics["search"] = record
    circuit.metrics["seconds"] = record["seconds"]
    return circuit


def _run_study(optuna, executor, s, n_trials: int, batch: int, seed: int, all_edges: int, task_name: str,
               progress: bool, on_trial: Callable[[dict], None] | None = None) -> list[dict]:
    """Ask a round of trials, run them, tell the results in trial order; until ``n_trials``."""
    from tqdm.auto import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True,
                                             constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for k in sorted(set(s.k_coefs), reverse=True)[:n_trials]:
        study.enqueue_trial(start_params(s, k))
    dists = _distributions(optuna)
    trials: list[dict] = []
    best_edges: list[int] = []
    bar = tqdm(total=n_trials, desc=f"search {task_name}", unit="trial", disable=None if progress else True,
               dynamic_ncols=True)

    by_seed: dict[int, object] = {}  # the running round's trials by their seed

    def record(t, r: dict) -> dict:
        params = dict(t.params)
        return {"number": t.number, "params": {"k_coef": params["k_coef"], **settings_params(params)}, **r}

    def done(r: dict) -> None:
        if r["met"]:
            best_edges.append(r["n_edges"])
        bar.update(1)
        bar.set_postfix(best=min(best_edges) if best_edges else "-", refresh=False)
        if on_trial is not None:
            on_trial({k: v for k, v in record(by_seed[r["seed"]], r).items() if k not in ("tau", "curve")})

    try:
        while len(trials) < n_trials:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                asked = [study.ask(dists) for _ in range(min(batch, n_trials - len(trials)))]
            calls = [(dict(t.params), trial_seed(seed, t.number)) for t in asked]
            by_seed = {trial_seed(seed, t.number): t for t in asked}
            results = executor.run(calls, done)
            for t, r in zip(asked, results):
                study.tell(t, _objective(r, s.target_loss, all_edges))
                trials.append(record(t, r))
    finally:
        bar.close()
        executor.close()
    return trials


def _first_circuit(ctx: _Context, s, trials: list[dict], best: dict | None, seed: int, t0: float):
    """The chosen trial's circuit, re-measured here; should the re-measured held-out loss
    miss the target (float noise between workers at the very edge), the next best passing
    trial is taken instead.  Without a passing trial (``force``): the lowest held-out loss."""
    if best is None:
        chosen = min(trials, key=lambda t: (t["heldout_loss"], t["number"]))
        return chosen, _circuit_for(ctx, s, chosen, seed, t0)
    ranked = sorted((t for t in trials if t["met"]),
                    key=lambda t: (t["n_edges"], t["n_nodes"], t["heldout_loss"], t["number"]))
    for trial in ranked:
        circuit = _circuit_for(ctx, s, trial, seed, t0)
        if circuit.metrics["circuit_loss"] <= s.target_loss:
            return trial, circuit
    raise SearchFailedError("search: the passing trials missed the target when re-measured", {})  # pragma: no cover


def _circuit_for(ctx: _Context, base, trial: dict, seed: int, t0: float) -> Circuit:
    """Rebuild the chosen trial's candidate from its ``tau`` and finish it into a ``Circuit``."""
    s = replace(base, k_coefs=[trial["params"]["k_coef"]],
                **{k: v for k, v in trial["params"].items() if k != "k_coef"})
    tau = trial["tau"]
    prober = _Prober(ctx.masked, torch.argsort(-tau, stable=True), ctx.probe, s, ctx.order_free)
    cand = {"k_coef": trial["params"]["k_coef"], "tau": tau, "curve": trial["curve"], "prober": prober,
            "k": trial["n_nodes"], "met": trial["train_met"], "edges": trial["n_edges"],
            "train_loss": prober.loss(trial["n_nodes"]), "n_open": trial["n_open"]}
    circuit = finish(ctx, s, [cand], cand, trial["seed"], t0)
    circuit.seed = seed
    return circuit
