"""Training a weight-sparse twin of a frozen dense model, with bridges (Gao et al. 2025, A.3).

``BridgeTrainer`` is the ordinary ``Trainer`` (schedules, weight-sparsity projection,
AbsTopK, clipping, checkpoints, ``--resume``) with three changes:
- the bridges are attached to the sparse model as a child module ``bridges`` before the
  run directory is created or a checkpoint restored, so the trainer's own checkpoint code
  saves and restores them (and their Adam moments) with the model, and its gradient
  clipping sees them; they are added to the optimizer but not to the sparsifier, so they
  stay dense;
- the loss of a micro-batch is the pretraining loss plus the bridge terms;
- the final ``model.safetensors`` holds the sparse model alone (an ordinary run that
  ``prune``, ``check`` and ``report`` open as any other), the bridges go to
  ``bridges.safetensors`` and ``bridge.json`` points at the dense run.

One process only: the hybrid forwards are not wrapped for DistributedDataParallel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..errors import UserError
from ..io import atomic_path
from ..model.sparsity import lr_at
from ..rundir import RunDir
from ..train.trainer import Trainer
from .model import Bridges, BridgeSpec, bridge_terms, save_bridges, write_bridge_json

BRIDGE_PREFIX = "bridges."


class BridgeTrainer(Trainer):
    def __init__(self, cfg: RunConfig, out_dir: str | Path, dense, spec: BridgeSpec, resume: bool = False,
                 progress: bool = True) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("bridge train runs in one process; launch it without torchrun")
        self.dense = dense  # sparsecircuits.run.Run, frozen
        self.spec = spec
        self._last_terms: dict[str, float] = {}
        super().__init__(cfg, out_dir, resume=resume, progress=progress, check_masks_every=0)
        self._attach_bridges()  # no-op: attached before the run dir was made or the checkpoint read
        self.dense.model.to(self.device).eval()
        for p in self.dense.model.parameters():
            p.requires_grad_(False)

    @property
    def bridges(self) -> Bridges:
        return self.model.bridges

    def _attach_bridges(self) -> None:
        """Add the bridges to the model and the optimizer (dense: the sparsifier never sees them)."""
        if "bridges" in self.model._modules:
            return
        bridges = Bridges(self.spec).to(self.device)
        self.model.bridges = bridges  # a child module: in state_dict, parameters() and checkpoints
        t = self.cfg.train
        mats = [p for p in bridges.parameters() if p.dim() >= 2]
        vecs = [p for p in bridges.parameters() if p.dim() < 2]
        self.optimizer.add_param_group({"params": mats, "weight_decay": t.weight_decay, "bridge": True})
        self.optimizer.add_param_group({"params": vecs, "weight_decay": 0.0, "bridge": True})

    def _restore(self) -> None:
        self._attach_bridges()
        super()._restore()

    def _init_run_dir(self, start_over: bool = False) -> None:
        self._attach_bridges()
        super()._init_run_dir(start_over=start_over)
        write_bridge_json(self.out, self.dense.path, self.spec)

    def bridge_lr(self, step: int) -> float:
        """The bridges' learning rate at ``step``: the ordinary warmup and decay times
        ``lr_scale``, without the sharkfin factor 1/sqrt(density). That factor is for the
        sparse weights (fewer nonzeros need larger steps); the bridges are dense, and with
        it they would take steps 1/sqrt(density) times those of the dense model they were
        fitted to (4x at density 1/16), which made the decoders' NMSE grow instead of fall."""
        t = self.cfg.train
        return lr_at(step, t.steps, t.lr, t.warmup_frac, 1.0) * self.spec.lr_scale

    def micro_loss(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Pretraining loss of the sparse model plus every bridge term, for (b, T) tokens.

        Also sets the bridges' learning rate: the trainer has just set every group to the
        step's (sharkfin) rate, and the optimizer steps after the last micro-batch."""
        lr = self.bridge_lr(self.step)
        for group in self.optimizer.param_groups:
            if group.get("bridge"):
                group["lr"] = lr
        # the step's draw of hybrid locations depends on the seed and step only: a resumed run
        # draws what an uninterrupted one would
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        terms = bridge_terms(self.dense.model, self.model, self.bridges, xs, sample=self.spec.hybrid_locations,
                             generator=gen)
        lm = F.cross_entropy(terms.sparse_logits.flatten(0, 1).float(), ys.flatten())
        self._last_terms = {"lm_loss": lm.item(), **terms.summary()}
        return lm + terms.bridge_loss(self.spec)

    def _record(self, loss: float) -> dict[str, Any]:
        return {**super()._record(loss), "bridge_lr": self.bridge_lr(self.step - 1), **self._last_terms}

    def save_final(self) -> None:
        """model.safetensors without the bridges (an ordinary run), then bridges.safetensors."""
        def write() -> None:
            from safetensors.torch import save_file

            try:
                sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
                      if not k.startswith(BRIDGE_PREFIX)}
                with atomic_path(self.run_dir.weights) as tmp:
                    save_file(sd, str(tmp), metadata={"format": "sparsecircuits", "step": str(self.step)})
                save_bridges(self.bridges, self.run_dir.bridge_weights)
                self.run_dir.write_config(self.cfg)
            except OSError as exc:
                raise UserError(f"could not write the final model ({exc.strerror or exc}); {self._kept()}") from None

        self._on_main("write the final model", write)


def check_pair(cfg: RunConfig, dense) -> None:
    """The sparse config against the dense run: same depth, a context the dense model takes,
    and the same tokenizer (KL between the two models' logits needs one vocabulary)."""
    from ..data.tokenizer import load_tokenizer
    from ..data.build import resolve_data

    dcfg = dense.model.cfg
    if cfg.model.n_layer != dcfg.n_layer:
        raise UserError(f"the sparse model has {cfg.model.n_layer} layers but the dense run {dense.path} has "
                        f"{dcfg.n_layer}; bridges need the same depth")
    if cfg.seq_len > dcfg.block_size:
        raise UserError(f"training windows of {cfg.seq_len} tokens exceed the dense model's context "
                        f"{dcfg.block_size}; set train.seq_len")
    data_dir = resolve_data(cfg.data)
    if load_tokenizer(data_dir / "tokenizer.json").to_str() != dense.tokenizer.to_str():
        raise UserError(f"the data in {data_dir} has another tokenizer than the dense run {dense.path}")


def train_bridged(cfg: RunConfig, out: str | Path, dense_dir: str | Path | None, resume: bool = False,
                  bridge_afrac: float | None = None, nmse_coef: float = 0.02, kl_coef: float = 0.02,
                  lr_scale: float = 1.0, hybrid_locations: int = 0,
                  progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) a bridged run against the dense run ``dense_dir``; returns the summary.
    The bridge terms' default weight 0.02 is the command's (commands/bridge.py says why)."""
    from ..model.gpt import topk_width
    from ..run import load_run
    from .model import read_bridge_json, weights_sha256

    out = Path(out)
    if resume:
        dense_dir, sha, spec = read_bridge_json(out)
        dense = load_run(dense_dir)
        if weights_sha256(RunDir(dense_dir).weights) != sha:
            raise UserError(f"the dense run {dense_dir} has changed since {out} was started against it")
    else:
        dense = load_run(dense_dir)
        afrac = cfg.model.afrac if bridge_afrac is None else bridge_afrac
        if not 0.0 < afrac <= 1.0:
            raise UserError(f"--bridge-afrac must be in (0, 1], got {afrac}")
        spec = BridgeSpec(cfg.model.n_layer, dense.model.cfg.d_model, cfg.model.d_model,
                          topk_width(afrac, cfg.model.d_model), nmse_coef, kl_coef, lr_scale, hybrid_locations)
        if min(nmse_coef, kl_coef) < 0 or lr_scale <= 0:
            raise UserError("--nmse-coef and --kl-coef must be >= 0 and --bridge-lr-scale > 0")
        if not 0 <= hybrid_locations <= spec.n_layer * 2:
            raise UserError(f"--hybrid-locations must be between 0 (all) and {spec.n_layer * 2} (the locations), "
                            f"got {hybrid_locations}")
    check_pair(cfg, dense)
    trainer = BridgeTrainer(cfg, out, dense, spec, resume=resume, progress=progress)
    try:
        return trainer.train(stop_after=stop_after)
    finally:
        trainer.close()
