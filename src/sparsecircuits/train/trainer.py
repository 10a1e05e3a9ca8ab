"""The training loop: AdamW, the sharkfin learning rate, weight-sparsity projection.

One step: (micro-batches of) forward and backward, clip the RMS of the whole gradient,
AdamW with the step's learning rate, then project every sparse tensor to exactly the
scheduled number of nonzeros (docs/method.md §2). Gradients and Adam moments stay dense, so a
zeroed weight can come back.

Everything a step does is a function of (seed, step) and the saved state, so a run
resumed from a checkpoint ends bitwise identical to one that never stopped: batches are
drawn by step number, the schedules are pure functions of the step, and the checkpoint
holds the weights, the optimizer moments and the RNG state. Metric lines written after
the checkpoint are dropped on resume and written again, identically (all but the
wall-clock ``tokens_per_s``).

Distributed: under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel; each rank draws its own rows of the same global batch, so the
averaged gradient equals the single-process one up to summation order, the weights stay
identical on every rank, and so do the top-k masks computed from them (checked every
``check_masks_every`` steps with one small all-gather). The logged train loss is the
mean over ranks. Only rank 0 writes files; a failure on rank 0 (a full disk) is shared
with every rank so that none waits forever in a collective. A group that torchrun
restarted after losing a worker resumes its own run by itself (``elastic``), and every
rank leaves the process group, its threads joined, before Python shuts down
(``leave_process_group``).

Failures stop the run with one line and leave the last good checkpoint in place: a
non-finite loss or gradient (before the weights are touched), a failed checkpoint write.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import RunConfig
from ..errors import UserError
from ..io import atomic_path
from ..model.gpt import GPT
from ..model.sparsity import WeightSparsifier, is_dense_name, lr_at
from ..rundir import RunDir
from . import checkpoint as ckpt
from . import elastic
from .kept import write_weights

VAL_SEED_OFFSET = 1_000_003  # val batches use their own stream, fixed across the run


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist
    # DistributedDataParallel imports torch.distributed.nn, whose functions take
    # ``group=group.WORLD`` as a default argument: imported after the group exists, they
    # hold it for ever, so it is never freed and its worker threads outlive the run (see
    # leave_process_group). Imported first, the defaults are None.
    import torch.distributed.nn  # noqa: F401

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        store = elastic.restarted_store(world)
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns_group=owns)


def leave_process_group() -> None:
    """Destroy the process group and join its worker threads, while Python is still whole.

    Why: a gloo worker thread drops its last reference to a finished collective's tensors
    a moment after the caller has been told the collective is done, and dropping a tensor
    that Python created takes the GIL. If the interpreter is already shutting down by
    then, taking the GIL ends the thread inside a C++ destructor, which aborts the process
    ("terminate called without an active exception", SIGABRT) after a run that succeeded.
    Joining the threads here, with no collective in flight, closes that window.

    Call it after the last collective and after dropping every other holder of the group
    (the DistributedDataParallel wrapper): the reference dropped here must be the last,
    because freeing the group through its Python object releases the GIL while the
    threads are joined (they may need the GIL to finish dropping tensors).
    """
    import gc

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    group = dist.group.WORLD
    dist.destroy_process_group()
    gc.collect()  # a wrapper still held in a reference cycle lets go of the group now
    del group  # the last reference: ~ProcessGroupGloo joins its threads, without the GIL


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings, not on gains, biases or sink logits."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    t = cfg.train
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
        fused=True,  # one kernel over all tensors: about 4x faster than the loop on CPU
    )


def build_sparsifier(model: GPT, cfg: RunConfig) -> WeightSparsifier:
    t = cfg.train
    extra_dense = []
    if not t.sparsify_embeddings:
        extra_dense += ["wte.", "wpe.", "lm_head."]
    if not t.sparsify_biases:
        extra_dense += ["bias"]
    params = [(n, p) for n, p in model.named_parameters() if not is_dense_name(n, extra_dense)]
    return WeightSparsifier(params, t.density, t.steps, t.anneal_frac, t.anneal_kind, t.min_per_row)


@torch.no_grad()
def clip_grad_rms_(params: list[torch.Tensor], max_rms: float) -> float:
    """Scale all gradients so the RMS over every gradient entry is at most ``max_rms``.

    Returns the RMS before clipping (NaN or inf if any gradient entry is non-finite, in
    which case nothing is scaled).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sq = torch.stack([g.float().pow(2).sum() for g in grads]).sum().item()
    n = sum(g.numel() for g in grads)
    rms = math.sqrt(sq / n) if math.isfinite(sq) else float("nan")
    if max_rms > 0 and rms > max_rms:
        for g in grads:
            g.mul_(max_rms / rms)
    return rms


_MIX1, _MIX2, _LOW32 = 0x9E3779B1, 0x2C1B3C6D, 0xFFFFFFFF


@torch.no_grad()
def mask_fingerprint(params: list[torch.Tensor]) -> torch.Tensor:
    """(n_params, 2) int64: per tensor, the nonzero count and a hash of the nonzero positions.

    Two ranks with the same top-k masks get the same rows; a single moved entry changes
    the hash. Products stay below 2**63 (32-bit multipliers on 32-bit values): no overflow.
    """
    rows = []
    for p in params:
        idx = torch.nonzero(p.detach().reshape(-1)).reshape(-1)  # (nnz,) int64
        x = ((idx + 1) * _MIX1) & _LOW32
        x = ((x ^ (x >> 15)) * _MIX2) & _LOW32
        x = x ^ (x >> 13)
        rows.append(torch.stack([torch.tensor(idx.numel(), device=idx.device), x.sum()]))
    return torch.stack(rows)  # (n_params, 2)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, shards, cfg: RunConfig, device: str, n_batches: int | None = None,
                  split: str = "val") -> float:
    """Mean next-token loss on fixed windows (the same windows at every evaluation)."""
    was_training = model.training
    model.eval()
    n = n_batches or cfg.train.eval_batches
    total = 0.0
    for i in range(n):
        x, y = shards.get_batch(split, cfg.train.batch_size, cfg.seq_len, step=i,
                                seed=cfg.seed + VAL_SEED_OFFSET)
        logits = model(x.to(device))
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten()).item()
    model.train(was_training)
    return total / n


class Trainer:
    """Owns one run directory: builds or restores the state, steps, logs, checkpoints.

    ``check_masks_every``: under DDP, compare the top-k masks of all ranks every that many
    steps (0 = never; None = every ``log_every`` steps). A mismatch is a RuntimeError.
    """

    def __init__(self, cfg: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 check_masks_every: int | None = None) -> None:
        from ..data.build import resolve_data
        from ..data.shards import TokenShards
        from ..data.tokenizer import load_tokenizer

        self.out = Path(out_dir)
        self.run_dir = RunDir(self.out)
        self.cfg = cfg
        t = cfg.train
        if t.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but no CUDA GPU is available")
        if check_masks_every is not None and check_masks_every < 0:
            raise UserError(f"--check-masks-every must be >= 0, got {check_masks_every}")
        self.device = t.device
        self.dist = init_distributed(t.device)
        self.check_masks_every = t.log_every if check_masks_every is None else check_masks_every
        if t.threads:
            torch.set_num_threads(t.threads)
        self.progress = progress and self.dist.is_main
        data_dir = resolve_data(cfg.data)
        cfg.data.data_dir = str(data_dir)
        self.shards = TokenShards(data_dir)
        self.tokenizer = load_tokenizer(data_dir / "tokenizer.json")
        cfg.model.vocab_size = self.tokenizer.get_vocab_size()
        cfg.validate()
        per_rank = t.batch_size // self.dist.world_size
        if per_rank * self.dist.world_size != t.batch_size or per_rank % t.grad_accum:
            raise UserError(f"train.batch_size {t.batch_size} must divide evenly over "
                            f"{self.dist.world_size} process(es) x {t.grad_accum} micro-batches")
        self.micro_batch = per_rank // t.grad_accum

        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg.model).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.sparsifier = build_sparsifier(self.model, cfg)
        self.sparse_params = [p for _, p in self.sparsifier.params]
        self.step = 0
        self.tokens_seen = 0
        self.last_lr = 0.0
        self.last_checkpoint: Path | None = None
        self.kept_steps = set(t.kept_steps())  # weights kept for circuits during training (kept.py)
        plan = elastic.RESUME if resume else self._plan_after_restart()
        if plan == elastic.RESUME:
            self._restore()  # every rank reads the checkpoint; a damaged one fails on all alike
        else:
            self._on_main("create the run directory",
                          lambda: self._init_run_dir(start_over=plan == elastic.START_OVER))
        self.ddp_model = self.model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.model, device_ids=[self.dist.local_rank] if self.device.startswith("cuda") else None)

    def close(self) -> None:
        """Drop the DDP wrapper and leave the process group this trainer joined (see
        leave_process_group); the model stays usable. Idempotent."""
        self.ddp_model = self.model
        if self.dist.owns_group:
            leave_process_group()
            self.dist.owns_group = False

    # -- collectives ---------------------------------------------------------------
    def _all_ok(self, ok: bool) -> bool:
        """True on every rank iff ``ok`` on every rank (one tiny all-reduce under DDP)."""
        if self.dist.world_size == 1:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([0 if ok else 1], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() == 0

    def _on_main(self, what: str, fn) -> None:
        """Run ``fn`` on rank 0; if it raises, every rank stops (the others quietly)."""
        err: BaseException | None = None
        if self.dist.is_main:
            try:
                fn()
            except (UserError, OSError) as exc:
                err = exc
        if not self._all_ok(err is None):
            if err is not None:
                raise err
            raise _PeerFailed(f"rank 0 could not {what}")

    def _max_over_ranks(self, value: int) -> int:
        if self.dist.world_size == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _mean_over_ranks(self, value: float) -> float:
        if self.dist.world_size == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.dist.world_size

    def check_masks(self) -> None:
        """Raise if any rank's top-k masks differ from rank 0's (a no-op on one process)."""
        if self.dist.world_size == 1:
            return
        import torch.distributed as dist

        mine = mask_fingerprint(self.sparse_params)  # (n_params, 2)
        every = [torch.empty_like(mine) for _ in range(self.dist.world_size)]
        dist.all_gather(every, mine)
        names = self.sparsifier.names
        for r, theirs in enumerate(every[1:], start=1):
            bad = [names[i] for i in (theirs != every[0]).any(dim=1).nonzero().flatten().tolist()]
            if bad:
                raise RuntimeError(f"top-k masks differ between rank 0 and rank {r} after step "
                                   f"{self.step} in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")

    # -- run directory -------------------------------------------------------------
    def _plan_after_restart(self) -> int:
        """FRESH unless torchrun restarted the group; then rank 0's plan (see elastic)."""
        if self._max_over_ranks(elastic.restart_count()) == 0:  # some node may not have counted it
            return elastic.FRESH
        plan = [elastic.FRESH]

        def inspect() -> None:
            plan[0] = elastic.plan_after_restart(self.out, self.cfg.to_dict())

        self._on_main("inspect the run directory after a restart", inspect)
        plan[0] = self._max_over_ranks(plan[0])
        if plan[0] == elastic.RESUME and self.dist.is_main:
            sys.stderr.write(f"torchrun restarted the processes: resuming {self.out} "
                             "from its newest checkpoint\n")
        return plan[0]

    def _init_run_dir(self, start_over: bool = False) -> None:
        if not start_over and (self.run_dir.config.exists() or ckpt.list_checkpoints(self.run_dir.checkpoints)):
            raise UserError(f"{self.out} already holds a run; use --resume to continue it "
                            "or choose another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            elastic.write_launch(self.out)  # first: a restart trusts nothing written before it
            self.run_dir.write_config(self.cfg)
            with atomic_path(self.run_dir.tokenizer) as tmp:
                self.tokenizer.save(str(tmp))
            self.run_dir.start_metrics()
        except OSError as exc:
            raise UserError(f"could not create the run directory {self.out} ({exc.strerror or exc})") from None

    def _restore(self) -> None:
        path, tensors, meta = ckpt.load_latest(self.run_dir.checkpoints)
        try:
            ckpt.unpack_state(tensors, self.model, self.optimizer)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint {path} does not match this config: {str(exc).splitlines()[0]}") from None
        self.step = int(meta["step"])
        self.tokens_seen = int(meta.get("tokens", 0))
        self.last_checkpoint = path
        if self.step > self.cfg.train.steps:
            raise UserError(f"checkpoint {path} is at step {self.step}, past train.steps="
                            f"{self.cfg.train.steps}")
        self._on_main("rewind metrics.jsonl", lambda: self.run_dir.rewind_metrics(self.step))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.run_dir.append_metrics(record)

    def save_checkpoint(self) -> None:
        """Rank 0 writes; every rank learns whether it worked, and all stop if not."""
        def write() -> None:
            meta = {"tokens": self.tokens_seen, "config": self.cfg.to_dict(), "time": time.time()}
            try:
                self.last_checkpoint = ckpt.save_checkpoint(
                    self.run_dir.checkpoints, self.step, ckpt.pack_state(self.model, self.optimizer), meta)
            except OSError as exc:
                raise UserError(f"could not write the checkpoint at step {self.step} ({exc.strerror or exc}); "
                                f"{self._kept()}") from None

        self._on_main(f"write the checkpoint at step {self.step}", write)

    def _kept(self) -> str:
        last = ckpt.latest_checkpoint(self.run_dir.checkpoints)
        return f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"

    def save_kept(self) -> None:
        """The weights of this step in ``kept/`` (``train.keep_checkpoints``), on rank 0."""
        def write() -> None:
            path = self.run_dir.kept(self.step).weights
            try:
                write_weights(path, self.model.state_dict(), self.step)
            except OSError as exc:
                raise UserError(f"could not write the weights kept at step {self.step} to {path} "
                                f"({exc.strerror or exc}); {self._kept()}") from None

        self._on_main(f"keep the weights of step {self.step}", write)

    def save_final(self) -> None:
        def write() -> None:
            try:
                write_weights(self.run_dir.weights, self.model.state_dict(), self.step)
                self.run_dir.write_config(self.cfg)
            except OSError as exc:
                raise UserError(f"could not write the final model ({exc.strerror or exc}); "
                                f"{self._kept()}") from None

        self._on_main("write the final model", write)

    # -- the loop ------------------------------------------------------------------
    def micro_loss(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of one micro-batch ``xs``, ``ys`` (b, T)."""
        logits = self.ddp_model(xs)  # (b, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), ys.flatten())

    def train_step(self) -> float:
        """One optimizer step; returns its train loss (the mean over ranks)."""
        t = self.cfg.train
        step = self.step
        density_now = self.sparsifier.density(step)
        lr = lr_at(step, t.steps, t.lr, t.warmup_frac, density_now if t.sharkfin else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self.shards.get_batch("train", self.micro_batch * t.grad_accum, self.cfg.seq_len,
                                     step=step, seed=self.cfg.seed, rank=self.dist.rank,
                                     world_size=self.dist.world_size)  # (B / world, T) each
        x, y = x.to(self.device), y.to(self.device)
        loss_sum = 0.0
        use_bf16 = t.dtype == "bfloat16" and self.device.startswith("cuda")
        for i in range(t.grad_accum):
            xs = x[i * self.micro_batch:(i + 1) * self.micro_batch]  # (b, T)
            ys = y[i * self.micro_batch:(i + 1) * self.micro_batch]
            last = i == t.grad_accum - 1
            sync = nullcontext() if last or self.dist.world_size == 1 else self.ddp_model.no_sync()
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
            with sync, amp:
                loss = self.micro_loss(xs, ys) / t.grad_accum
            loss.backward()
            loss_sum += loss.item()
        loss_mean = self._mean_over_ranks(loss_sum)
        rms = clip_grad_rms_(list(self.model.parameters()), t.grad_clip_rms)  # same on every rank
        if not (math.isfinite(loss_mean) and math.isfinite(rms)):
            what = "loss" if not math.isfinite(loss_mean) else "gradient"
            if not self.dist.is_main:  # every rank sees the same mean loss and gradient: rank 0 says it
                raise _PeerFailed(f"training diverged at step {step + 1}")
            raise UserError(f"training diverged: non-finite {what} at step {step + 1} "
                            f"(lr {lr:.3g}); the weights of step {step} were not updated; {self._kept()}")
        self.optimizer.step()
        self.sparsifier.apply(step + 1)
        self.step += 1
        self.tokens_seen += t.batch_size * self.cfg.seq_len
        self.last_lr = lr
        return loss_mean

    def _record(self, loss: float) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens_seen, "lr": self.last_lr, "train_loss": loss,
                "nonzero_frac": self.sparsifier.nonzero_fraction(),
                "density": self.sparsifier.density(self.step)}

    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Run to ``train.steps``; or stop, with a checkpoint, once step ``stop_after`` is done.

        A stopped run is continued with ``--resume`` and ends exactly as if never stopped
        (``stop_after`` does not change the schedules, which follow ``train.steps``).
        """
        t = self.cfg.train
        end = t.steps if stop_after is None else min(max(stop_after, self.step), t.steps)
        bar = _ProgressBar(total=t.steps, initial=self.step, disable=not self.progress, desc="train",
                           unit="step", dynamic_ncols=True)
        window_t0, window_tokens = time.perf_counter(), 0
        loss = float("nan")
        val = None
        try:
            while self.step < end:
                loss = self.train_step()
                window_tokens += t.batch_size * self.cfg.seq_len
                bar.update(1)
                done = self.step == t.steps
                if self.check_masks_every and self.step % self.check_masks_every == 0:
                    self.check_masks()
                record: dict[str, Any] | None = None
                if self.step % t.log_every == 0 or done:
                    dt = time.perf_counter() - window_t0
                    record = self._record(loss)
                    record["tokens_per_s"] = window_tokens / max(dt, 1e-9)
                    window_t0, window_tokens = time.perf_counter(), 0
                if self.step % t.eval_every == 0 or done:
                    if self.dist.is_main:  # the others would compute the same number
                        val = evaluate_loss(self.model, self.shards, self.cfg, self.device)
                    record = record or self._record(loss)
                    record["val_loss"] = val
                if record is not None:
                    self._log(record)
                    bar.set_postfix(loss=f"{loss:.3f}", **({"val": f"{val:.3f}"} if val is not None else {}))
                if self.step in self.kept_steps:
                    self.save_kept()
                if self.step % t.checkpoint_every == 0 or done or self.step == end:
                    self.save_checkpoint()
        finally:
            bar.close()
        stopped = self.step < t.steps
        if not stopped:
            self.save_final()
        return {"step": self.step, "train_loss": loss, "val_loss": val, "stopped": stopped,
                "nonzero_frac": self.sparsifier.nonzero_fraction(), "out": str(self.out)}


class _ProgressBar(tqdm):
    """tqdm without its monitor thread (which every tqdm, even a disabled one, starts):
    nothing of a run should still be running when the interpreter shuts down."""

    monitor_interval = 0


class _PeerFailed(UserError):
    """Raised on ranks other than 0 when rank 0 failed (rank 0 reports the reason)."""


class RankFailed(RuntimeError):
    """An unexpected error on one rank of several, summed up in one line naming the rank and
    step (the original error is the ``__cause__``, with its traceback)."""


def _where(trainer: Trainer | None) -> str:
    if trainer is None:
        return "before the first step"
    steps = trainer.cfg.train.steps
    if trainer.step < steps:
        return f"at step {trainer.step + 1} of {steps}"
    return f"after step {steps} of {steps}"


def train(cfg: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, check_masks_every: int | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary of the last step.

    With several processes, an error names the rank and the step it failed at: a
    UserError keeps its type (one line), anything else becomes a RankFailed. The process
    group is left in order whatever happens (see leave_process_group).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, out_dir, resume=resume, progress=progress, check_masks_every=check_masks_every)
        return trainer.train(stop_after=stop_after)
    except _PeerFailed:
        raise
    except UserError as exc:
        if world > 1:
            raise UserError(f"rank {_rank()} of {world} failed {_where(trainer)}: {exc}") from None
        raise
    except Exception as exc:
        if world > 1:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RankFailed(f"rank {_rank()} of {world} failed {_where(trainer)}: "
                             f"{type(exc).__name__}: {first}") from exc
        raise
    finally:
        if trainer is not None:
            trainer.close()
        elif world > 1:
            leave_process_group()


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))
