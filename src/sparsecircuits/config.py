"""Typed configs, presets, TOML files and ``--set key=value`` overrides.

A run is described by one ``RunConfig`` (model, train, data, seed), a pruning run by one
``PruneSettings``. Presets are plain dicts of overrides applied to the defaults, so a
preset, a TOML file and ``--set`` all go through the same validation, and an unknown key
or a wrong type is an error naming it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .sites import ACTIVATION_SITES

RESIDUAL_ACTIVATIONS = ("identity", "relu", "relu_sublayer")
MLP_ACTIVATIONS = ("gelu", "relu")

# The task loss a circuit must reach by default, in nats per pair (the two prompts'
# binary cross-entropies summed; chance is 2 ln 2 = 1.386): the paper's target.
TARGET_LOSS = 0.15
# Test accuracy from which the full model counts as having learned a task: below it,
# pruning refuses (unless forced) and the demo prunes only the tasks it must.
LEARNED_ACCURACY = 0.80


@dataclass
class ModelConfig:
    """The transformer's shape and options (docs/method.md §1)."""

    vocab_size: int = 2048
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 8
    d_head: int = 16
    d_mlp: int = 512
    block_size: int = 128
    pos_emb: bool = False  # learned positional embedding (the paper mostly ran without)
    attn_sink: bool = True  # per-head learnable sink logit, zero key and value
    bigram_table: bool = False  # dense (vocab x vocab) table added to the final logits
    afrac: float = 0.25  # AbsTopK keeps this fraction of each site's width; 1.0 = off
    afrac_sites: list[str] = field(default_factory=lambda: list(ACTIVATION_SITES))
    bias: bool = False  # biases on the linear layers
    final_logits_bias: bool = False
    tied_unembed: bool = False
    # "identity"; "relu" (applied to each block's output); or "relu_sublayer" (applied after
    # the attention and after the MLP residual add, as in OpenAI's released checkpoints)
    residual_activation: str = "identity"
    norm_eps: float = 1e-5
    mlp_activation: str = "gelu"  # "gelu" (exact, erf form) or "relu"

    def validate(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_mlp", "block_size"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.afrac <= 1.0:
            raise UserError(f"model.afrac must be in (0, 1], got {self.afrac}")
        bad = [s for s in self.afrac_sites if s not in ACTIVATION_SITES]
        if bad:
            raise UserError(f"model.afrac_sites: unknown site(s) {bad}; valid: {list(ACTIVATION_SITES)}")
        if self.residual_activation not in RESIDUAL_ACTIVATIONS:
            raise UserError(f"model.residual_activation must be one of {list(RESIDUAL_ACTIVATIONS)}, "
                            f"got {self.residual_activation!r}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise UserError(f"model.mlp_activation must be one of {list(MLP_ACTIVATIONS)}, "
                            f"got {self.mlp_activation!r}")


@dataclass
class TrainConfig:
    """Optimisation and weight-sparsity schedule (docs/method.md §2)."""

    steps: int = 2000
    batch_size: int = 32  # global batch (sequences per optimizer step)
    # tokens per training window; 0 = model.block_size. Shorter windows than the model's
    # context give more, cheaper sequences per step; without a positional embedding the
    # model still reads prompts up to block_size (the task prompts reach ~70 tokens).
    seq_len: int = 0
    grad_accum: int = 1  # micro-batches per step; batch_size must divide by it
    lr: float = 3e-3
    warmup_frac: float = 0.01
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 0.1
    grad_clip_rms: float = 1.0  # clip the RMS of the whole gradient to this; 0 = off
    density: float = 1.0 / 16  # target fraction of nonzero weights; 1.0 = dense baseline
    anneal_frac: float = 0.5  # fraction of training over which L0 goes from dense to target
    anneal_kind: str = "geometric"  # "linear" (paper) or "geometric"
    # j (the paper's 4): no MLP neuron or q/k/v channel is left with fewer than j nonzero
    # weights of its own in any matrix (a c_fc row, a c_proj column, ...; not embedding rows);
    # a j that does not fit a matrix's budget stops training before it starts. 0 = off
    min_per_row: int = 0
    sparsify_embeddings: bool = True
    sparsify_biases: bool = True
    sharkfin: bool = True  # multiply lr by 1/sqrt(current density)
    eval_every: int = 200
    eval_batches: int = 20
    log_every: int = 20
    checkpoint_every: int = 500
    # weights kept at this many evenly spaced steps (the last one is the final step), beside
    # the newest resumable checkpoints, for `timeline` and `prune --checkpoint`; 0 = none
    keep_checkpoints: int = 0
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" uses autocast on CUDA
    threads: int = 0  # torch.set_num_threads; 0 = leave torch's default

    def validate(self) -> None:
        if self.steps < 1:
            raise UserError(f"train.steps must be >= 1, got {self.steps}")
        if self.seq_len < 0:
            raise UserError(f"train.seq_len must be >= 0, got {self.seq_len}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise UserError("train.batch_size must be a positive multiple of train.grad_accum")
        if not 0.0 < self.density <= 1.0:
            raise UserError(f"train.density must be in (0, 1], got {self.density}")
        if not 0.0 <= self.anneal_frac <= 1.0:
            raise UserError(f"train.anneal_frac must be in [0, 1], got {self.anneal_frac}")
        if self.anneal_kind not in ("linear", "geometric"):
            raise UserError("train.anneal_kind must be 'linear' or 'geometric'")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError("train.dtype must be 'float32' or 'bfloat16'")
        if not 0 <= self.keep_checkpoints <= self.steps:
            raise UserError(f"train.keep_checkpoints must be between 0 and train.steps ({self.steps}), "
                            f"got {self.keep_checkpoints}")

    def kept_steps(self) -> list[int]:
        """The steps whose weights ``keep_checkpoints`` keeps: evenly spaced, ending at ``steps``."""
        n = self.keep_checkpoints
        return [i * self.steps // n for i in range(1, n + 1)] if n else []


@dataclass
class DataConfig:
    """Where the token shards come from; empty ``data_dir`` means the stdlib default."""

    data_dir: str = ""
    vocab_size: int = 2048
    # bytes of generated simple Python (data/simple_python.py) added to the default data's
    # train split; 0 = the standard library alone. Ignored when data_dir is set.
    simple_bytes: int = 0

    def validate(self) -> None:
        if self.vocab_size < 300:
            raise UserError(f"data.vocab_size must be >= 300, got {self.vocab_size}")
        if self.simple_bytes < 0:
            raise UserError(f"data.simple_bytes must be >= 0, got {self.simple_bytes}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    preset: str = ""

    def validate(self) -> "RunConfig":
        self.model.validate()
        self.train.validate()
        self.data.validate()
        if self.train.seq_len > self.model.block_size:
            raise UserError(f"train.seq_len ({self.train.seq_len}) must be at most model.block_size "
                            f"({self.model.block_size})")
        return self

    @property
    def seq_len(self) -> int:
        """Tokens per training (and val-loss) window."""
        return self.train.seq_len or self.model.block_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        cfg = cls()
        apply_overrides(cfg, d, source="config")
        return cfg.validate()

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        from .io import read_json

        return cls.from_dict(read_json(path, what="config"))


# Pruning (``circuits/prune.py``; the method: docs/method.md §3).
ABLATIONS = ("mean", "zero", "resample")
LR_DECAYS = ("linear", "constant")
DEFAULT_STEPS = 30  # mask optimisation steps per k_coef (circuits/prune.py: measured against 60 at lr 1e-2)
DEFAULT_LR = 2e-2
DEFAULT_K_COEFS = (1e-3, 3e-3, 1e-2)
DEFAULT_BETA2 = 0.95  # the paper's (ours was 0.999: same circuits, see circuits/prune.py)
DEFAULT_GRAD_CLIP = 1.0  # the paper clips; our mask gradients rarely reach 1
SIZE_TARGETS = (0.05, 0.1, 0.15, 0.2, 0.3)  # targets whose circuit sizes are read off the ranking


@dataclass
class PruneSettings:
    """Every knob of a pruning run; stored in the circuit's ``metrics.settings``.

    Why each default is what it is: ``circuits/prune.py``'s docstring. ``prune(**kw)`` and
    ``prune --set KEY=VALUE`` set fields through ``with_overrides``, converted to each
    field's type like the run config's ``--set``."""

    target_loss: float = TARGET_LOSS
    ablation: str = "mean"
    steps: int = DEFAULT_STEPS
    k_coefs: list[float] = field(default_factory=lambda: list(DEFAULT_K_COEFS))
    lr: float = DEFAULT_LR
    weight_decay: float = 1e-3
    beta2: float = DEFAULT_BETA2  # AdamW's second-moment decay (beta1 stays 0.9)
    grad_clip: float = DEFAULT_GRAD_CLIP  # max L2 norm of the tau gradient; 0 = no clipping
    lr_decay: str = "linear"  # "linear" (to 0 at the last step) or "constant"
    warmup_frac: float = 0.0  # fraction of steps with a linear lr warmup before the decay
    tau_init_mean: float = 0.1
    tau_init_std: float = 0.01
    temperature: float = 1.0
    batch_pairs: int = 64
    n_train: int = 256
    n_test: int = 128
    calibration_steps: int = 16
    min_accuracy: float = LEARNED_ACCURACY
    curve_every: int = 10
    length_buckets: int = 4  # sub-batches per step, by prompt length (speed only)
    eval_batch: int = 64  # prompts per forward when evaluating (sorted by length)
    n_probe: int = 256  # train pairs (or examples x2) the bisection evaluates on (256: all of them)
    threads: int = 0  # torch threads while pruning; 0 = leave torch's default
    lanes: int = 0  # chunks run side by side on model copies (circuits/lanes.py); 0 = one per thread
    size_targets: list[float] = field(default_factory=lambda: list(SIZE_TARGETS))
    tie_qk: bool = False  # q_j and k_j of a head share one mask (circuits/tying.py)
    curve_points: int = 8  # sizes on the circuit's loss-vs-size curves (circuits/loss_curve.py); 0 = none

    def with_overrides(self, overrides: dict[str, Any], source: str) -> "PruneSettings":
        """Set fields from ``overrides`` (values may be text, as ``--set`` gives them),
        each converted to its field's type; an unknown key or a wrong type is a UserError
        naming ``source``."""
        apply_overrides(self, dict(overrides), source)
        return self

    def validate(self) -> "PruneSettings":
        if not self.target_loss > 0:
            raise UserError(f"target loss must be > 0, got {self.target_loss}")
        if self.ablation not in ABLATIONS:
            raise UserError(f"unknown ablation {self.ablation!r}; expected one of: {', '.join(ABLATIONS)}")
        if self.steps < 1:
            raise UserError(f"steps must be >= 1, got {self.steps}")
        if not self.k_coefs or any(not (k >= 0 and math.isfinite(k)) for k in self.k_coefs):
            raise UserError(f"k_coefs must be a non-empty list of numbers >= 0, got {self.k_coefs}")
        if self.n_train < 1 or self.n_test < 1 or self.batch_pairs < 1:
            raise UserError("n_train, n_test and batch_pairs must be >= 1")
        if self.temperature <= 0:
            raise UserError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.beta2 < 1:
            raise UserError(f"beta2 must be in [0, 1), got {self.beta2}")
        if not (self.grad_clip >= 0 and self.lr > 0 and self.weight_decay >= 0):
            raise UserError("grad_clip and weight_decay must be >= 0 and lr > 0")
        if self.lr_decay not in LR_DECAYS:
            raise UserError(f"unknown lr_decay {self.lr_decay!r}; expected one of: {', '.join(LR_DECAYS)}")
        if not 0 <= self.warmup_frac < 1:
            raise UserError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not self.tau_init_std >= 0:
            raise UserError(f"tau_init_std must be >= 0, got {self.tau_init_std}")
        if self.lanes < 0:
            raise UserError(f"lanes must be >= 0 (0: one per thread), got {self.lanes}")
        if self.curve_points < 0 or self.curve_points == 1:
            raise UserError(f"curve_points must be 0 (no curve) or >= 2, got {self.curve_points}")
        return self

    def lr_factor(self, step: int) -> float:
        """The lr multiplier at ``step``: linear warmup, then linear decay (or constant)."""
        warm = int(round(self.warmup_frac * self.steps))
        if step < warm:
            return (step + 1) / warm
        if self.lr_decay == "constant":
            return 1.0
        return max(0.0, 1.0 - (step - warm) / max(1, self.steps - warm))


# Presets: overrides of the defaults above. Shapes and budgets chosen by measurement on a
# 2-core CPU; see the README's "Presets" section.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu-tiny": {
        # block_size 96: the longest task prompt under the 512-token test tokenizer is 72 tokens
        "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_head": 16, "d_mlp": 128, "block_size": 96},
        # lr 0.2: at this width Adam's eps (0.1) dwarfs sqrt(v), so steps are far below lr;
        # with 1e-2 the loss barely moves in 40 steps, with 0.2 it falls from ~6.2 to ~4.4
        "train": {"steps": 40, "batch_size": 8, "lr": 0.2, "density": 0.25, "eval_every": 20,
                  "eval_batches": 2, "log_every": 10, "checkpoint_every": 20},
        "data": {"vocab_size": 512},
    },
    "cpu-small": {
        "model": {"n_layer": 4, "d_model": 128, "n_head": 8, "d_head": 16, "d_mlp": 512, "block_size": 128},
        # lr 0.1: with AdamW eps = 0.1 the update is close to SGD on small gradients, so the
        # step size must be large; at step 80, lr 0.1 was 1 nat below lr 0.01 (and 0.4 below 0.04).
        # 2000 steps of 32 windows of 64 tokens (4.1M): the demo's budget.  Against 16 x 128 at
        # the same tokens, the shorter windows learned 2-3 more tasks in both data mixes tried
        # (the model keeps its 128-token context: task prompts reach ~70 tokens).
        "train": {"steps": 2000, "batch_size": 32, "seq_len": 64, "lr": 0.1, "density": 1.0 / 16,
                  "eval_every": 400, "checkpoint_every": 400},
        # 50 MB of generated simple Python beside the standard library (~60% of train tokens):
        # 6 tasks learned, against 5 with 20 MB and 2 with the standard library alone.
        "data": {"simple_bytes": 50_000_000},
    },
    "cpu-base": {
        # The hour preset: the demo's shape and data, six times its tokens (12000 steps of 32 x 64,
        # 24.6M tokens, about one pass over the training shards): 90 CPU-minutes at one thread,
        # about 56 minutes on two idle cores (10 of the 20 tasks learned, seed 0).  The demo's model is not capacity-bound at its budget
        # (dense at the same tokens learns one task more), so the hour goes to tokens.  Six evenly
        # spaced steps are kept, so one run also gives tasks learned against training time.
        "model": {"n_layer": 4, "d_model": 128, "n_head": 8, "d_head": 16, "d_mlp": 512, "block_size": 128},
        "train": {"steps": 12000, "batch_size": 32, "seq_len": 64, "lr": 0.1, "density": 1.0 / 16,
                  "eval_every": 1000, "checkpoint_every": 1000, "keep_checkpoints": 6},
        "data": {"simple_bytes": 50_000_000},
    },
    # The paper's architecture and schedule (appendix A.1, A.2): biases on and sparsified like
    # every weight, a dense bigram table, attention sinks, no positional embedding, d_head 16,
    # AbsTopK 1/4 at every site; L0 annealed linearly from dense over the first half; at
    # least j = 4 nonzero weights per neuron and per attention channel.
    "paper-tiny": {
        # CPU-sized: 2 layers of width 128 at 1 in 16 weights (the floor takes half of each
        # node-owning matrix's budget); 300 steps of 16 x 128 tokens took 2 CPU-minutes at one
        # thread (val loss 5.05).  Same lr as cpu-small, for the same reason (Adam eps 0.1).
        "model": {"n_layer": 2, "d_model": 128, "n_head": 8, "d_head": 16, "d_mlp": 512, "block_size": 128,
                  "bias": True, "bigram_table": True},
        "train": {"steps": 300, "batch_size": 16, "lr": 0.1, "density": 1.0 / 16, "anneal_frac": 0.5,
                  "anneal_kind": "linear", "min_per_row": 4, "sparsify_biases": True, "eval_every": 100,
                  "checkpoint_every": 100},
    },
    "paper-8L": {
        # density 1/256 (about 1.6M nonzeros): at d_model 2048 a floor of 4 per neuron needs at
        # least 1/512 of every matrix, so the paper's sparsest (~1/1000) cannot hold it.  The
        # paper anneals over 80% for its largest, sparsest models; set train.anneal_frac=0.8.
        "model": {"n_layer": 8, "d_model": 2048, "n_head": 128, "d_head": 16, "d_mlp": 8192, "block_size": 256,
                  "bias": True, "bigram_table": True},
        "train": {"steps": 100_000, "batch_size": 256, "lr": 1.28e-2, "density": 1.0 / 256,
                  "anneal_frac": 0.5, "anneal_kind": "linear", "min_per_row": 4, "sparsify_biases": True,
                  "device": "cuda", "dtype": "bfloat16", "eval_every": 1000, "checkpoint_every": 2000},
    },
}


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert ``value`` to the type of ``current``, or raise a UserError naming ``key``."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{key}: expected true/false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, bool):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                if "/" in value:
                    num, den = value.split("/", 1)
                    return float(num) / float(den)
                return float(value)
            except (ValueError, ZeroDivisionError):
                pass
        raise UserError(f"{key}: expected a number, got {value!r}")
    if isinstance(current, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, tuple):
            value = list(value)
        if current and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in current):
            if not isinstance(value, list):  # a list of numbers (pruning's k_coefs), comma-separated in text
                raise UserError(f"{key}: expected a list of numbers, got {value!r}")
            return [_coerce(v, 0.0, key) for v in value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{key}: expected a list of strings, got {value!r}")
        return list(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    raise UserError(f"{key}: cannot set a value of type {type(current).__name__}")


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str, prefix: str = "") -> None:
    """Recursively set dataclass fields from a nested dict; unknown keys are errors."""
    known = {f.name: f for f in fields(cfg)}
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in known:
            raise UserError(f"{source}: unknown key '{full}' (valid: {', '.join(sorted(known))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{full}' must be a table of settings")
            apply_overrides(current, value, source, prefix=f"{full}.")
        else:
            setattr(cfg, key, _coerce(value, current, f"{source}: '{full}'"))


def parse_set(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.steps=10", "model.d_model=64"]`` into a nested dict of strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise UserError(f"--set: malformed key {key!r}")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set: conflicting keys at {key!r}")
        node[parts[-1]] = value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None


def build_config(preset: str | None = None, config_file: str | Path | None = None,
                 sets: list[str] | None = None) -> RunConfig:
    """Defaults, then the preset, then a TOML file, then ``--set`` overrides."""
    cfg = RunConfig()
    if preset:
        if preset not in PRESETS:
            raise UserError(f"unknown preset '{preset}' (valid: {', '.join(PRESETS)})")
        apply_overrides(cfg, json.loads(json.dumps(PRESETS[preset])), source=f"preset {preset}")
        cfg.preset = preset
    if config_file:
        apply_overrides(cfg, load_toml(config_file), source=str(config_file))
    if sets:
        apply_overrides(cfg, parse_set(sets), source="--set")
    return cfg.validate()
