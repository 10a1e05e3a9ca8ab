"""Pruning a model to the smallest circuit that still does a task.

The recipe, and the choices made where the paper leaves room:

1. One mask parameter ``tau`` per node, init normal(0.1, 0.01), shared over prompts and
   positions; forward ``Heaviside(tau)``, backward ``d/dtau sigmoid(tau / temperature)``.
   Loss = task loss (mean BCE over the two answer logits) + ``k_coef * n_open``.
   AdamW (weight decay 1e-3, beta2 0.95, the gradient's L2 norm clipped to 1, linear
   decay to 0 without warmup: the paper's optimiser), 64 task pairs (128 prompts) per
   step drawn from the train items, ``tau`` clamped to [-1, 1] after every step.  The
   paper's beta2 and clipping replaced our earlier 0.999 and no clipping because they
   cost nothing: on a small model (2 layers, d_model 64, 1.2M tokens; the quote task,
   78% learned, forced, target 1.0) ours, beta2 0.95, clipping, 5% warmup and all three
   gave the very same circuit (28 nodes, 132 edges); the mask gradient's norm there is
   ~0.1 at k_coef 1e-2, so the clip only guards against spikes
   (``benchmarks/prune_optimiser.py``).  The paper's lr 3e-3 gave 210 edges: our lr stays.
2. Steps and learning rate.  Adam moves every ``tau`` by about ``lr`` per step whatever
   its gradient's size, so what a run can do is set by ``lr * steps``: every node starts
   open at 0.1 and must travel past 0 before the task gradient can sort needed from
   unneeded nodes.  The paper's lr 3e-3 suits thousands of steps; ours is 30 steps per
   k_coef at lr 2e-2 (travel ~0.3 under linear decay).  Measured on the cpu-small demo
   model (single_double_quote): lr 1e-2 x 60-100 steps gave the same circuit size as lr
   3e-3 x 300 steps, and 200 steps no smaller; and over five tasks and two seeds
   (``benchmarks/prune_budget.py``) 30 steps at 2e-2 gave circuits within 60 steps at
   1e-2's seed-to-seed spread in 0.52x the CPU time.  Halving the batch as well (32 pairs)
   did not: on the quote task one seed met the target on no k_coef.
3. ``k_coef`` scale.  Since Adam divides out gradient size, the penalty's effect is the
   *sign* of ``k_coef + dL/dm``: a node stays open when closing it would cost more than
   about ``k_coef`` nats of per-example mean loss.  The paper's centre (1e-4) keeps nodes
   worth a ten-thousandth of a nat, which leaves hundreds open on our loss; a 0.15-nat
   circuit has nodes worth ~1e-3 to 1e-2 nats, so we sweep ``DEFAULT_K_COEFS`` = 1e-3,
   3e-3, 1e-2 and keep the circuit with the fewest edges that meets the target (on the
   demo model: 137, 85 and 72 edges respectively).
4. After each optimisation, nodes are ranked by ``tau`` and a bisection finds the
   smallest ``K`` whose top-``K`` circuit meets the target on the train items.  Loss is
   not monotone in ``K`` (ablating a node can beat the full model), so the bisection keeps
   the invariant "``hi`` passes", the answer is re-checked (stepping up if it fails), and
   the search range grows from the open nodes by doubling rather than jumping to all
   nodes.  Candidates whose open nodes pass are bisected first, and every search starts
   from the sizes its ranking already evaluated (``_Prober.bracket``), so the sweep's
   losing candidates and the size-vs-target table cost a few probes each.
5. The pass test uses the *calibrated* loss: a scale ``a >= 0`` and an answer-token bias
   ``b`` fitted with 16 LBFGS steps on the train items (see ``circuit.py``), because the
   discrete circuit is uncalibrated and the final circuit is reported calibrated.  Test
   items are never used for pruning, only for the reported ``circuit_loss``.
6. Budget.  Prompts are sorted by length and run in length buckets trimmed to their
   longest prompt, the unembedding runs at the last position only, and the weights get no
   gradients.  The cost is mostly the model's own AbsTopK and the mask hooks.  Defaults: 3
   k_coefs x 30 steps; a k_coef whose circuit cannot beat the best one found is dropped
   after one probe (``_candidates``); loss-vs-size curves at 8 sizes.  With more than one
   thread, the length buckets of a step and the chunks of an evaluation run side by side
   on copies of the model (``lanes.py``), with the results one lane gives.  Measured with
   ``benchmarks/prune_time.py`` and ``benchmarks/prune_budget.py``.
7. The paper retunes all of this per model and task with a hyperparameter search;
   ``circuits/search.py`` (``prune --search N``) does that, starting from these defaults.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Callable, Sequence

import torch

from ..config import TARGET_LOSS, PruneSettings
from ..errors import UserError
from ..tasks.base import answer_diff, binary_task_loss, diff_loss, flat_examples, score_diffs
from .circuit import (
    Circuit,
    calibrated_diff,
    circuit_diffs,
    encode_for_run,
    fit_calibration,
    orientation,
)
from .frozen import kernel_sites
from .graph import count_edges
from .lanes import default_lanes, map_masked, spread
from .masking import MaskedModel, ablation_baseline, heaviside_ste
from .nodes import NodeSet
from .tying import adjacent, close, qk_tie

class NotLearnedError(UserError):
    """The full model does not do the task well enough to be worth pruning; ``accuracy``
    and ``loss`` are its scores on the test items."""

    def __init__(self, message: str, accuracy: float | None = None, loss: float | None = None) -> None:
        super().__init__(message)
        self.accuracy, self.loss = accuracy, loss


# ---------------------------------------------------------------------------- bisection


def smallest_passing(passes: Callable[[int], bool], lo: int, hi: int, rel_tol: float = 0.0) -> int | None:
    """Smallest-looking ``K`` in ``[lo, hi]`` with ``passes(K)``; None if ``hi`` fails.

    Exact when ``passes`` is monotone (with ``rel_tol`` 0; a positive ``rel_tol`` stops
    once the bracket is within that fraction of ``hi``, for coarse size curves).  When it
    is not monotone, the invariant "``hi`` passes" still guarantees a passing answer:
    after the bisection the answer is checked again and, should it fail, the next passing
    size above it is taken.
    """
    if lo > hi or not passes(hi):
        return None
    if passes(lo):
        return lo
    while hi - lo > max(1, int(rel_tol * hi)):  # passes(hi) and not passes(lo)
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    k = hi
    while not passes(k):  # defensive: only reachable with a predicate that changes its mind
        k += 1
    return k


# ---------------------------------------------------------------------------- data


@dataclass
class _TaskData:
    name: str
    train: object  # TaskBatch, flat examples in groups of `group`
    test: object
    group: int  # 2 for TaskItem pairs (kept together in a batch), 1 for plain examples

    @property
    def n_train_groups(self) -> int:
        return len(self.train) // self.group

    def probe(self, n_groups: int):
        """Up to ``n_groups`` evenly spaced train groups (all lengths represented) for bisection."""
        total = self.n_train_groups
        if n_groups >= total:
            return self.train
        groups = torch.linspace(0, total - 1, n_groups).round().long().unique()
        return self.train.select((groups[:, None] * self.group + torch.arange(self.group)).flatten())


def _resolve_task(run, task, name: str | None, s: PruneSettings, seed: int) -> _TaskData:
    """A task name, a task object with ``generate(n, seed, split)`` (e.g. ``tasks.context.ContextTask``)
    or a list of examples/pairs (a user task, a quarter held out) -> encoded train and test batches."""
    if isinstance(task, str):
        from ..tasks.python_tasks import get_task

        t = get_task(task)
    elif hasattr(task, "generate"):
        t = task
    else:
        from ..tasks.user import ExamplesTask

        t = ExamplesTask(name or "custom", task)
    name = name or t.name
    train, group = flat_examples(t.generate(s.n_train, seed=seed, split="train"), name)
    test, _ = flat_examples(t.generate(s.n_test, seed=seed, split="test"), name)
    return _TaskData(name, _by_length(encode_for_run(run, train, name), group),
                     _by_length(encode_for_run(run, test, name), group), group)


def _by_length(batch, group: int):
    """Reorder a batch by prompt length, groups kept together, so chunks pad little."""
    n = len(batch) // group
    lengths = batch.last_pos.view(n, group).max(1).values  # (n,)
    order = torch.argsort(lengths, stable=True)
    idx = (order[:, None] * group + torch.arange(group)).flatten()
    return batch.select(idx)


@contextmanager
def _threads(n: int):
    """Use ``n`` torch threads inside the block (0: leave the setting alone).

    On a shared machine torch's default (one thread per core) can be several times slower
    than one thread for this many-small-ops workload, hence the knob; the default is
    untouched.
    """
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _frozen(model):
    """No weight gradients during pruning (halves the backward pass)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


# ---------------------------------------------------------------------------- optimisation


def optimise_tau(masked: MaskedModel, data: _TaskData, k_coef: float, s: PruneSettings, seed: int,
                 bar=None) -> tuple[torch.Tensor, list[dict]]:
    """One pruning run at one ``k_coef``: the final ``tau`` (n,) and its loss curve."""
    return optimise_taus(masked, data, [k_coef], s, seed, bar)[0]


def optimise_taus(masked: MaskedModel, data: _TaskData, k_coefs: Sequence[float], s: PruneSettings, seed: int,
                  bar=None) -> list[tuple[torch.Tensor, list[dict]]]:
    """One pruning run per ``k_coef``, all in the same forward and backward passes.

    The runs are independent: each has its own ``tau``, loss, gradient clipping and
    (elementwise) AdamW state.  They share the seed, hence the initial ``tau`` and the
    batches, exactly as separate runs with that seed would, so running them together only
    makes each op R times larger instead of running R times as many ops.  While their
    masks are still the same (every node open for the first few steps) one pass serves
    them all: the task gradient is the same for each, the penalty is each run's own.
    Returns each run's final ``tau`` (n,) and loss curve, in ``k_coefs`` order.
    """
    n, R = masked.nodes.n, len(k_coefs)
    g = torch.Generator().manual_seed(seed)
    init = s.tau_init_mean + s.tau_init_std * torch.randn(n, generator=g)  # (n,)
    taus = [init.clone().requires_grad_(True) for _ in range(R)]  # R x (n,), one parameter per run
    coef = torch.tensor([float(k) for k in k_coefs])  # (R,)
    tie = qk_tie(masked.nodes) if s.tie_qk else torch.arange(n)  # (n,) each node's parameter
    opt = torch.optim.AdamW(taus, lr=s.lr, betas=(0.9, s.beta2), weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, s.lr_factor)
    device = next(masked.model.parameters()).device
    n_groups = data.n_train_groups
    per_batch = min(s.batch_pairs * 2 // data.group, n_groups)  # 64 pairs = 128 prompts
    curves: list[list[dict]] = [[] for _ in range(R)]
    for step in range(s.steps):
        # train items are sorted by length, so sorted group ids give length-sorted prompts;
        # two length buckets, each trimmed to its own longest prompt, waste little on padding
        groups = torch.randperm(n_groups, generator=g)[:per_batch].sort().values
        idx = (groups[:, None] * data.group + torch.arange(data.group)).flatten()
        m = heaviside_ste(torch.stack(taus)[:, tie], s.temperature)  # (R, n) exactly 0/1
        if R == 1:
            mask = m[0]
        elif bool((m == m[:1]).all()):  # no run has closed a node the others keep (the first steps)
            mask = m[0] + (m[1:] - m[1:].detach()).sum(0)  # (n,): the shared mask, every run's gradient
        else:
            mask = m
        parts = [part for part in idx.tensor_split(s.length_buckets) if part.numel()]
        shares = map_masked(masked, partial(bucket_loss, batch=data.train, mask=mask.detach(), n_rows=idx.numel(),
                                            device=device), parts)  # per bucket: (loss share, its mask gradient)
        task = torch.stack([share for share, _ in shares]).sum(0)  # (1,) or (R,): each run's task loss
        grad = torch.stack([g for _, g in shares]).sum(0)  # like mask: summed in bucket order, whatever the lanes
        loss = (mask * grad).sum() + (coef * m.sum(1)).sum()  # d/dmask = the task gradient; the runs do not mix
        task = task.expand(R)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            for tau in taus:
                torch.nn.utils.clip_grad_norm_([tau], s.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            for tau in taus:
                tau.clamp_(-1.0, 1.0)
        n_open = m.detach().sum(1).long().tolist()
        losses = task.detach().tolist()
        if step % s.curve_every == 0 or step == s.steps - 1:
            for r, k_coef in enumerate(k_coefs):
                curves[r].append({"step": step, "loss": losses[r], "n_open": n_open[r], "k_coef": k_coef})
        if bar is not None:
            bar.update(R)
            bar.set_postfix(loss="/".join(f"{x:.3f}" for x in losses), open="/".join(map(str, n_open)),
                            refresh=False)
    return [(tau.detach()[tie], curve) for tau, curve in zip(taus, curves)]


def bucket_loss(masked: MaskedModel, part: torch.Tensor, batch, mask: torch.Tensor, n_rows: int,
                device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``part`` of ``batch`` (one length bucket of an optimisation step, a chunk of
    attribution's items): their share of each run's task loss, (1,) or (R,), and that
    share's gradient with respect to ``mask`` (the mask's shape).

    ``binary_task_loss`` is a mean over prompts, so ``b`` of the ``n_rows`` prompts
    contribute their own mean times ``b / n_rows``, and the whole loss and gradient are
    the sums over parts.  Each part differentiates to a leaf of its own, so parts can run
    in separate lanes (``lanes.py``) and the sums are taken in one fixed order by the caller.
    """
    leaf = mask.detach().requires_grad_(True)
    batch = batch.select(part).to(device)
    with torch.enable_grad():
        last = masked(batch.tokens, leaf, last_pos=batch.last_pos)  # (b, V) or (R, b, V)
        diff = answer_diff(last, batch).view(-1, part.numel())  # (1, b) or (R, b)
        share = torch.stack([binary_task_loss(d) for d in diff]) * (part.numel() / n_rows)  # (1,) or (R,)
        (grad,) = torch.autograd.grad(share.sum(), leaf)  # the runs' rows only reach their own mask row
    return share.detach(), grad


class _Prober:
    """Calibrated train loss of the top-``K`` circuit of one ranking, cached per ``K``.

    With ``s.tie_qk`` a tied q/k pair is never split: the ranking is rearranged so pairs
    are adjacent (``tying.adjacent``) and a ``K`` that would split one counts as ``K + 1``
    (``size``), so every ``K`` it returns is the node count of its circuit.
    """

    def __init__(self, masked: MaskedModel, order: torch.Tensor, batch, s: PruneSettings,
                 shared: dict | None = None) -> None:
        self.tie = qk_tie(masked.nodes) if s.tie_qk else None
        if self.tie is not None:
            order = adjacent(order, self.tie)
        self.masked, self.order, self.batch, self.s = masked, order, batch, s
        self.sign = orientation(batch)
        self.cache: dict[int, tuple[float, tuple[float, float]]] = {}
        # K = 0 and K = n are the same circuits in every ranking: probers of one context
        # (the k_coef sweep's candidates, the attribution curve) evaluate them once
        self.shared = shared

    def keep(self, k: int) -> torch.Tensor:
        keep = torch.zeros(self.masked.nodes.n, dtype=torch.bool)
        keep[self.order[:k]] = True
        return keep if self.tie is None else close(keep, self.tie)

    def size(self, k: int) -> int:
        """The node count of the top-``k`` circuit: ``k``, or ``k + 1`` where ``k`` splits a tied pair."""
        return k if self.tie is None else int(self.keep(k).sum())

    def loss(self, k: int) -> float:
        k = self.size(k)
        key = (k, self.s.calibration_steps, self.s.eval_batch)
        order_free = self.shared is not None and k in (0, self.masked.nodes.n)
        if k not in self.cache and order_free and key in self.shared:
            self.cache[k] = self.shared[key]
        if k not in self.cache:
            diff = circuit_diffs(self.masked, self.keep(k), self.batch, self.s.eval_batch)
            a, b = fit_calibration(diff, self.sign, self.s.calibration_steps)
            self.cache[k] = (diff_loss(calibrated_diff(diff, self.sign, a, b)), (a, b))
            if order_free:
                self.shared[key] = self.cache[k]
        return self.cache[k][0]

    def calibration(self, k: int) -> tuple[float, float]:
        self.loss(k)
        return self.cache[self.size(k)][1]

    def first_top(self, hint: int) -> int:
        """The first size a search from ``hint`` open nodes probes: ``hint`` within [1, n]."""
        return min(max(hint, 1), self.masked.nodes.n)

    def bracket(self, target: float) -> tuple[int, int] | None:
        """``(lo, hi)`` from sizes already evaluated: ``hi`` the smallest that passes, ``lo``
        the largest below it that fails (0 when none has); None when none passes.

        A bisection may start there instead of at ``[0, hint]``: its invariant ("``hi``
        passes") holds, and the sizes it would probe below ``lo`` or above ``hi`` are the
        ones already known.  The size-vs-target table and a candidate whose edge bound was
        probed reuse the evaluations this way (each costs a masked pass over the probe items).
        """
        passing = [k for k, (loss, _) in self.cache.items() if loss <= target]
        if not passing:
            return None
        hi = min(passing)
        failing = [k for k, (loss, _) in self.cache.items() if k < hi and loss > target]
        return max(failing, default=0), hi

    def smallest(self, target: float, hint: int, rel_tol: float = 0.0) -> tuple[int, bool]:
        """Smallest passing K and whether the target was met.

        The search range starts at the nodes left open (``hint``) and doubles until its
        top passes (a circuit can beat the full model, so a moderate superset of the open
        nodes often passes when all nodes would not); the bisection then runs between the
        last failing top and the first passing one.  Sizes evaluated before narrow the
        start (``bracket``).  When nothing passes, the probed size with the lowest loss is
        returned, marked as not meeting the target.
        """
        passes = lambda k: self.loss(k) <= target  # noqa: E731
        n = self.masked.nodes.n
        known = self.bracket(target)
        if known is not None:
            k = smallest_passing(passes, *known, rel_tol)
            if k is not None:
                return self.size(k), True
        lo, hi = 0, self.first_top(hint)
        while True:
            k = smallest_passing(passes, lo, hi, rel_tol)
            if k is not None:
                return self.size(k), True
            if hi == n:
                break
            lo, hi = hi, min(2 * hi, n)
        best = min(self.cache, key=lambda kk: (self.cache[kk][0], kk))
        return best, False


# ---------------------------------------------------------------------------- main entry


def prune(run, task, target_loss: float = TARGET_LOSS, ablation: str = "mean", steps: int | None = None,
          seed: int = 0, force: bool = False, k_coefs: Sequence[float] | None = None,
          n_train: int = 256, n_test: int = 128, progress: bool = True, name: str | None = None,
          means: torch.Tensor | None = None, method: str = "learned", **overrides) -> Circuit:
    """Prune ``run``'s model to the smallest circuit doing ``task`` within ``target_loss``.

    ``task`` is a task name (``sparsecircuits.tasks.task_names()``) or a list of
    ``TaskExample`` (or ``TaskItem``) for a user task (a quarter is held out as test).
    Raises ``NotLearnedError`` (a ``UserError``) when the full model is below 80% accurate
    on the test items, unless ``force`` (the circuit is then marked ``forced``).
    ``means`` overrides the node means used by mean ablation; other ``PruneSettings``
    fields (``lr``, ``batch_pairs``, ``threads``, ...) may be passed as keywords.
    ``method="attribution"`` ranks nodes by attribution scores instead of learned masks
    (``circuits/attribution.py``); the bisection, calibration and circuit are the same.
    """
    if method == "attribution":
        from .attribution import prune_attribution

        return prune_attribution(run, task, target_loss=target_loss, ablation=ablation, seed=seed, force=force,
                                 n_train=n_train, n_test=n_test, name=name, means=means, **overrides)
    if method != "learned":
        raise UserError(f"unknown pruning method {method!r}; expected learned or attribution")
    t0 = time.perf_counter()
    s = make_settings(target_loss, ablation, steps, k_coefs, n_train, n_test, **overrides)
    with _threads(s.threads), kernel_sites(run.model), spread(run.model, lane_count(s), s.threads):
        ctx = _prepare(run, task, s, seed=int(seed), force=force, name=name, means=means, t0=t0)
        circuit = _prune(ctx, s, seed=int(seed), progress=progress, t0=t0)
    circuit.metrics["method"] = "learned"
    return circuit


def lane_count(s: PruneSettings) -> int:
    """How many lanes (``lanes.py``) a pruning runs: ``s.lanes``, or by default one per torch
    thread it may use (one lane, i.e. none, at ``threads=1``)."""
    return s.lanes if s.lanes > 0 else default_lanes(s.threads)


def make_settings(target_loss: float = TARGET_LOSS, ablation: str = "mean", steps: int | None = None,
                  k_coefs: Sequence[float] | None = None, n_train: int = 256, n_test: int = 128,
                  **overrides) -> PruneSettings:
    """Validated ``PruneSettings`` from ``prune()``'s keywords (shared with the search)."""
    s = PruneSettings(target_loss=float(target_loss), ablation=ablation, n_train=n_train, n_test=n_test)
    if steps is not None:
        s.steps = int(steps)
    if k_coefs is not None:
        s.k_coefs = [float(k) for k in k_coefs]
    unknown = [key for key in overrides if key not in {f.name for f in fields(PruneSettings)}]
    if unknown:
        raise TypeError(f"prune() got an unexpected keyword argument {unknown[0]!r}")
    s.with_overrides(overrides, source="prune()")
    if s.target_loss not in s.size_targets:
        s.size_targets = sorted(set(s.size_targets) | {s.target_loss})
    return s.validate()


@dataclass
class _Context:
    """Everything one pruning run needs besides its settings: built once, shared by runs."""

    run: object
    model: torch.nn.Module
    nodes: NodeSet
    data: _TaskData
    masked: MaskedModel  # with the ablation baseline
    probe: object  # the train items the bisection evaluates on
    full_loss: float
    full_acc: float
    full_train_loss: float
    timings: dict
    order_free: dict = field(default_factory=dict)  # _Prober's shared K = 0 and K = n evaluations


def _prepare(run, task, s: PruneSettings, seed: int, force: bool, name: str | None,
             means: torch.Tensor | None, t0: float) -> _Context:
    """Encode the task, score the full model (refusing an unlearned task) and build the masked model."""
    model = run.model
    model.eval()
    nodes = NodeSet.from_model(model)
    data = _resolve_task(run, task, name, s, seed)

    masked_full = MaskedModel(model, None, nodes)
    full = score_diffs(circuit_diffs(masked_full, None, data.test, s.eval_batch))
    full_loss, full_acc = full["loss"], full["accuracy"]
    if full_acc < s.min_accuracy and not force:
        raise NotLearnedError(
            f"the model is only {full_acc:.1%} accurate on task {data.name} (test items); pruning needs "
            f">= {s.min_accuracy:.0%} (use --force / force=True to prune anyway)", accuracy=full_acc, loss=full_loss)
    probe = data.probe(max(1, s.n_probe * 2 // data.group))
    full_train_loss = diff_loss(circuit_diffs(masked_full, None, probe, s.eval_batch))

    timings = {"full_model": time.perf_counter() - t0}
    tick = time.perf_counter()
    masked = MaskedModel(model, ablation_baseline(run, s.ablation, means), nodes)
    timings["means"] = time.perf_counter() - tick
    timings["optimise"] = timings["bisect"] = 0.0
    return _Context(run, model, nodes, data, masked, probe, full_loss, full_acc, full_train_loss, timings)


def _candidate(ctx: _Context, s: PruneSettings, k_coef: float, seed: int, bar=None) -> dict:
    """One optimisation at one ``k_coef``, then the smallest top-``K`` passing on the train items."""
    return _candidates(ctx, s, [k_coef], seed, bar)[0]


def _candidates(ctx: _Context, s: PruneSettings, k_coefs: Sequence[float], seed: int, bar=None) -> list[dict]:
    """One optimisation per ``k_coef`` (run together), then for each the smallest passing top-``K``.

    The sweep keeps the passing circuit with the fewest edges, so once one candidate has
    passed, another is bisected only if it can still win: its largest top-``K`` with no more
    edges than the best so far (``within_edges``) must pass first.  When it fails, the
    candidate is marked ``beaten`` with that probe as its size (about one probe instead of
    a whole bisection; loss is all but monotone in ``K``, so its smallest passing circuit
    would have more edges).  So the order matters: each candidate's open nodes are
    evaluated first (the first probe its bisection would make anyway), and those whose open
    nodes pass go first, fewest open nodes first, since those give the small circuits; one
    whose open nodes fail can need many more nodes (k_coef 1e-2 on the demo's var_if: 103
    open, 2,791 needed), and is then usually beaten by one probe instead of bisected."""
    tick = time.perf_counter()
    runs = optimise_taus(ctx.masked, ctx.data, k_coefs, s, seed, bar)
    ctx.timings["optimise"] += time.perf_counter() - tick
    tick = time.perf_counter()
    probers = [_Prober(ctx.masked, torch.argsort(-tau, stable=True), ctx.probe, s, ctx.order_free) for tau, _ in runs]
    opens = [int((tau > 0).sum()) for tau, _ in runs]
    open_fails = [p.loss(p.first_top(n_open)) > s.target_loss for p, n_open in zip(probers, opens)]
    ctx.timings["bisect"] += time.perf_counter() - tick
    out: list[dict | None] = [None] * len(runs)
    best_edges = None
    for i in sorted(range(len(runs)), key=lambda i: (open_fails[i], opens[i], i)):
        (tau, curve), k_coef = runs[i], k_coefs[i]
        tick = time.perf_counter()
        prober, n_open = probers[i], opens[i]
        bound = None if best_edges is None else within_edges(ctx, prober, best_edges)
        beaten = bound is not None and prober.loss(bound) > s.target_loss
        k, met = (bound, False) if beaten else prober.smallest(s.target_loss, n_open)
        edges = count_edges(ctx.model, ctx.nodes, prober.keep(k))
        if met and (best_edges is None or edges < best_edges):
            best_edges = edges
        ctx.timings["bisect"] += time.perf_counter() - tick
        out[i] = {"k_coef": k_coef, "tau": tau, "curve": curve, "prober": prober, "k": k, "met": met,
                  "beaten": beaten, "edges": edges, "train_loss": prober.loss(k), "n_open": n_open}
    return out


def within_edges(ctx: _Context, prober: "_Prober", max_edges: int) -> int:
    """The largest ``K`` whose top-``K`` circuit has at most ``max_edges`` edges (edges only
    grow with ``K``: the circuits are nested)."""
    lo, hi = 0, ctx.nodes.n  # edges(lo) <= max_edges
    if count_edges(ctx.model, ctx.nodes, prober.keep(hi)) <= max_edges:
        return hi
    while hi - lo > 1:  # edges(lo) <= max_edges < edges(hi)
        mid = (lo + hi) // 2
        if count_edges(ctx.model, ctx.nodes, prober.keep(mid)) <= max_edges:
            lo = mid
        else:
            hi = mid
    return prober.size(lo)


def _heldout_diff(ctx: _Context, prober: "_Prober", k: int, s: PruneSettings) -> torch.Tensor:
    """Calibrated differences (N,) of the top-``k`` circuit on the test items (never used to prune
    it), with the scale and shift fitted on the train items."""
    a, b = prober.calibration(k)
    k = prober.size(k)
    key = ("heldout", k, s.eval_batch)
    if k in (0, ctx.nodes.n) and key in ctx.order_free:  # the same circuit in every ranking
        diff = ctx.order_free[key]
    else:
        diff = circuit_diffs(ctx.masked, prober.keep(k), ctx.data.test, s.eval_batch)
        if k in (0, ctx.nodes.n):
            ctx.order_free[key] = diff
    return calibrated_diff(diff, orientation(ctx.data.test), a, b)


def heldout_loss(ctx: _Context, cand: dict, s: PruneSettings) -> tuple[float, float]:
    """Calibrated loss and accuracy of a candidate's circuit on the test items."""
    r = score_diffs(_heldout_diff(ctx, cand["prober"], cand["k"], s))
    return r["loss"], r["accuracy"]


def empty_candidate(ctx: _Context, s: PruneSettings) -> dict | None:
    """The empty circuit as the chosen candidate when it already meets the strictest of the
    target and every size target on the train items, else None.

    Some tasks are decided by the direct path from the token embeddings to the logits,
    which no node mask touches (the demo model's else_elif and while_return_true): every
    node can go.  No optimisation can find a smaller circuit, and with every size target
    met at zero nodes the size-vs-target table needs no ranking either, so one masked
    evaluation replaces the whole k_coef sweep (30-40 s of the demo's pruning each).
    """
    n = ctx.nodes.n
    prober = _Prober(ctx.masked, torch.arange(n), ctx.probe, s, ctx.order_free)  # order unused: K is 0
    strictest = min([s.target_loss, *s.size_targets])
    if prober.loss(0) > strictest:
        return None
    return {"k_coef": None, "tau": torch.zeros(n), "curve": [], "prober": prober, "k": 0,
            "met": True, "beaten": False, "edges": 0, "train_loss": prober.loss(0), "n_open": 0}


def empty_circuit(ctx: _Context, s: PruneSettings, seed: int, t0: float) -> Circuit | None:
    """The empty circuit, finished, when ``empty_candidate`` finds it meets every target
    (its ``settings.empty_meets_all_targets`` says so; no sweep, no k_coef); else None."""
    empty = empty_candidate(ctx, s)
    if empty is None:
        return None
    circuit = finish(ctx, s, [], empty, seed, t0)
    circuit.settings.pop("k_coef", None)
    circuit.settings["empty_meets_all_targets"] = True
    return circuit


def _prune(ctx: _Context, s: PruneSettings, seed: int, progress: bool, t0: float) -> Circuit:
    """The k_coef sweep: one candidate per k_coef, the fewest edges meeting the target kept."""
    from tqdm.auto import tqdm

    empty = empty_circuit(ctx, s, seed, t0)
    if empty is not None:
        return empty
    bar = tqdm(total=s.steps * len(s.k_coefs), desc=f"prune {ctx.data.name}",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    try:
        with _frozen(ctx.model):
            candidates = _candidates(ctx, s, s.k_coefs, seed, bar)
    finally:
        bar.close()

    # fewest edges among circuits meeting the target (then fewest nodes, then lowest loss)
    best = min(candidates, key=lambda c: (not c["met"], c["edges"] if c["met"] else 0, c["k"] if c["met"] else 0,
                                          c["train_loss"]))
    return finish(ctx, s, candidates, best, seed, t0)


def finish(ctx: _Context, s: PruneSettings, candidates: list[dict], best: dict, seed: int, t0: float) -> Circuit:
    """The chosen candidate as a ``Circuit``: held-out metrics, size-vs-target table and graph."""
    prober, k = best["prober"], best["k"]
    test = _heldout_diff(ctx, prober, k, s)  # (N,)
    tick = time.perf_counter()
    size_vs_target = _size_vs_target(ctx, s, best, test)
    ctx.timings["size_vs_target"] = time.perf_counter() - tick
    tick = time.perf_counter()
    from .loss_curve import loss_vs_size  # it ranks by attribution too, which builds on this module

    curves = loss_vs_size(ctx, s, best)
    if curves:
        ctx.timings["loss_vs_size"] = time.perf_counter() - tick
    tick = time.perf_counter()
    heldout = score_diffs(test)
    measured = {"full_loss": ctx.full_loss, "full_accuracy": ctx.full_acc, "circuit_loss": heldout["loss"],
                "circuit_accuracy": heldout["accuracy"], "circuit_train_loss": best["train_loss"],
                "target_met": best["met"]}
    circuit = Circuit.build(ctx.run, ctx.data.name, prober.keep(k), prober.calibration(k),
                            _settings_record(ctx, s, candidates, best), (ctx.data.train, ctx.data.test),
                            baseline=ctx.masked.baseline, tau=best["tau"], metrics=measured, seed=seed,
                            forced=ctx.full_acc < s.min_accuracy)
    ctx.timings["graph"] = time.perf_counter() - tick
    circuit.metrics.update({
        "curve": [{"step": c["step"], "loss": c["loss"], "n_open": c["n_open"]} for c in best["curve"]],
        "size_vs_target": size_vs_target,
        **({"loss_vs_size": curves} if curves else {}),
        "seconds": round(time.perf_counter() - t0, 3),
        "timings": {name: round(v, 3) for name, v in ctx.timings.items()},
    })
    return circuit


def _size_vs_target(ctx: _Context, s: PruneSettings, best: dict, test: torch.Tensor) -> list[dict]:
    """The smallest circuit of the chosen ranking at each of ``s.size_targets``: its size, its
    calibrated train loss and its held-out loss (``test``: the chosen circuit's differences)."""
    prober, k = best["prober"], best["k"]
    rows = []
    for t in s.size_targets:  # same ranking, same train items
        # a looser target than one the circuit meets is met within its k nodes: search below k only
        hint = k if best["met"] and t > s.target_loss else best["n_open"]
        kt, met_t = (k, best["met"]) if t == s.target_loss else prober.smallest(t, hint, rel_tol=0.02)
        test_loss = diff_loss(test if kt == k else _heldout_diff(ctx, prober, kt, s))
        rows.append({"target_loss": t, "n_nodes": kt, "n_edges": count_edges(ctx.model, ctx.nodes, prober.keep(kt)),
                     "loss": prober.loss(kt), "met": met_t, "test_loss": test_loss, "met_heldout": test_loss <= t})
    return rows


def _settings_record(ctx: _Context, s: PruneSettings, candidates: list[dict], best: dict) -> dict:
    """The circuit's ``metrics.settings``: every setting, the k_coef sweep and the item counts."""
    settings = asdict(s)
    settings["sweep"] = [{"k_coef": c["k_coef"], "n_nodes": c["k"], "n_edges": c["edges"], "n_open": c["n_open"],
                          "train_loss": c["train_loss"], "met": c["met"], "beaten": c.get("beaten", False)}
                         for c in candidates]
    settings["k_coef"] = best["k_coef"]
    settings["full_train_loss"] = ctx.full_train_loss
    settings["n_train_examples"] = len(ctx.data.train)
    settings["n_probe_examples"] = len(ctx.probe)
    settings["n_test_examples"] = len(ctx.data.test)
    return settings
