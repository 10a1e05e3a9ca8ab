"""Bridges between a frozen dense model and its weight-sparse twin (Gao et al. 2025, 2.3, A.3).

Before each attention and each MLP (every sublayer's residual input h_i, the hook points
``blocks.{l}.hook_resid_pre`` and ``blocks.{l}.hook_resid_mid``) a bridge translates
between the two models: an encoder f_i (linear, then AbsTopK) from dense to sparse and a
linear decoder g_i back. Both models are ordinary ``GPT`` instances; the hybrid forwards
("run the dense model up to i, switch through the bridge, run the sparse model from i on",
and the reverse) are full forwards with one hook that *replaces* the activation at i, so
no partial-forward code is written twice and the earlier layers' outputs, being discarded,
get no gradient.

The loss terms (A.3): NMSE(f_i(h^d_i), h^s_i) + NMSE(g_i(h^s_i), h^d_i) per location, and
KL(y^d || sparse tail from f_i(h^d_i)) + KL(y^d || dense tail from g_i(h^s_i)).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..io import atomic_path, atomic_write_json, file_sha256, read_json
from ..model.gpt import GPT, abstopk
from ..rundir import RunDir

SCHEMA_VERSION = 1
# the residual input of each sublayer, and the post-RMSNorm read (a circuit node) that follows it
LOCATION_HOOKS = {"hook_resid_pre": "hook_attn_in", "hook_resid_mid": "hook_mlp_in"}


def location_names(n_layer: int) -> list[str]:
    """The 2 x n_layer bridge locations in forward order: before each attention, before each MLP."""
    return [f"blocks.{layer}.{hook}" for layer in range(n_layer) for hook in LOCATION_HOOKS]


@dataclass
class BridgeSpec:
    """What ``bridge.json`` records besides the dense run: shapes and the loss weights."""

    n_layer: int
    d_dense: int
    d_sparse: int
    encoder_k: int  # AbsTopK of the encoder output; d_sparse = off
    nmse_coef: float = 1.0
    kl_coef: float = 1.0
    lr_scale: float = 1.0  # the bridges' learning rate over train.lr's plain schedule (no sharkfin factor)
    hybrid_locations: int = 0  # hybrid forwards per step at this many random locations (0: at every one)


class Bridge(nn.Module):
    """One location's encoder (dense -> sparse, linear + AbsTopK) and decoder (sparse -> dense)."""

    def __init__(self, d_dense: int, d_sparse: int, k: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(d_dense, d_sparse)
        self.decoder = nn.Linear(d_sparse, d_dense)
        self.k = k
        # norm-preserving init and no bias: nn.Linear's default bias (up to 1/sqrt(d) per entry)
        # dwarfs a freshly initialised residual stream (embeddings of std 0.02), so the
        # NMSE would start far above 1 and its large gradients crowd out the other terms
        for lin, d_in in ((self.encoder, d_dense), (self.decoder, d_sparse)):
            nn.init.normal_(lin.weight, 0.0, d_in ** -0.5)
            nn.init.zeros_(lin.bias)

    def encode(self, h_dense: torch.Tensor) -> torch.Tensor:
        return abstopk(self.encoder(h_dense), self.k)  # (..., d_sparse)

    def decode(self, h_sparse: torch.Tensor) -> torch.Tensor:
        return self.decoder(h_sparse)  # (..., d_dense)


class Bridges(nn.Module):
    """All locations' bridges, indexed like ``location_names``."""

    def __init__(self, spec: BridgeSpec) -> None:
        super().__init__()
        self.spec = spec
        self.locations = location_names(spec.n_layer)
        self.bridges = nn.ModuleList(Bridge(spec.d_dense, spec.d_sparse, spec.encoder_k) for _ in self.locations)

    @classmethod
    def identity(cls, n_layer: int, d_model: int) -> "Bridges":
        """Exact bridges between two copies of one model: identity maps, no AbsTopK."""
        b = cls(BridgeSpec(n_layer, d_model, d_model, d_model))
        with torch.no_grad():
            for br in b.bridges:
                for lin in (br.encoder, br.decoder):
                    lin.weight.copy_(torch.eye(d_model))
                    lin.bias.zero_()
        return b

    def index(self, location: str) -> int:
        return self.locations.index(location)


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||pred - target||^2 / ||target||^2 over all tokens: 0 iff equal, 1 for predicting zero.

    The denominator is a constant for the gradient: the target is the sparse model's own
    residual in the encoder's term, and with a live denominator the sparse model can lower
    the loss by growing its residual stream instead of matching the encoder (the scale of
    the twin's residual then drifts, and the decoders chase it)."""
    err = (pred.float() - target.float()).pow(2).sum()
    return err / target.detach().float().pow(2).sum().clamp_min(1e-12)


def kl_from(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref) || softmax(logits)), mean over tokens; exactly 0 for identical logits."""
    ref = F.log_softmax(ref_logits.float(), dim=-1)  # (B, T, V)
    other = F.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - other)).sum(-1).mean()


def _replace(value: torch.Tensor):
    return lambda x, hook: value


@dataclass
class BridgeTerms:
    """Every term of one batch. The NMSE lists follow ``Bridges.locations``; the KL lists
    follow ``kl_locations`` (every location, or the ones drawn this step), and ``kl_scale``
    (locations / drawn) makes their sums unbiased estimates of the sums over every location."""

    dense_logits: torch.Tensor  # (B, T, V), no grad
    sparse_logits: torch.Tensor  # (B, T, V)
    nmse_encoder: list[torch.Tensor]  # NMSE(f_i(h^d_i), h^s_i)
    nmse_decoder: list[torch.Tensor]  # NMSE(g_i(h^s_i), h^d_i)
    kl_dense_to_sparse: list[torch.Tensor]  # KL(y^d, sparse tail from f_i(h^d_i))
    kl_sparse_to_dense: list[torch.Tensor]  # KL(y^d, dense tail from g_i(h^s_i))
    kl_locations: list[int] | None = None  # indices into Bridges.locations; None: all of them
    kl_scale: float = 1.0

    def bridge_loss(self, spec: BridgeSpec) -> torch.Tensor:
        """Everything but the pretraining loss, weighted as the spec says."""
        return (spec.nmse_coef * (sum(self.nmse_encoder) + sum(self.nmse_decoder))
                + spec.kl_coef * self.kl_scale * (sum(self.kl_dense_to_sparse) + sum(self.kl_sparse_to_dense)))

    def summary(self) -> dict[str, float]:
        scale = {"kl_dense_to_sparse": self.kl_scale, "kl_sparse_to_dense": self.kl_scale}
        return {key: scale.get(key, 1.0) * float(sum(t.detach() for t in getattr(self, key)))
                for key in ("nmse_encoder", "nmse_decoder", "kl_dense_to_sparse", "kl_sparse_to_dense")}


def draw_locations(n: int, sample: int, generator: torch.Generator | None = None) -> list[int]:
    """The locations whose hybrid forwards run this step: all ``n`` when ``sample`` is 0 (or
    at least ``n``), else ``sample`` of them drawn without replacement, in forward order."""
    if sample < 0:
        raise UserError(f"hybrid locations must be >= 0, got {sample}")
    if sample == 0 or sample >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=generator)[:sample].tolist())


def bridge_terms(dense: GPT, sparse: GPT, bridges: Bridges, tokens: torch.Tensor,
                 hybrids: bool = True, sample: int = 0, generator: torch.Generator | None = None) -> BridgeTerms:
    """All loss terms for ``tokens`` (B, T): one dense and one sparse forward with caches, then
    (with ``hybrids``) one hybrid forward per location and direction, or at ``sample`` random
    locations only (``draw_locations``): each hybrid pair costs a forward and a backward of
    both models, so the hybrids are most of a bridged step. The dense model is used as
    given: freeze it (requires_grad False) so that gradients stop at the bridges."""
    names = bridges.locations
    with torch.no_grad():
        y_d, cache_d = dense.run_with_cache(tokens, names_filter=names)  # (B, T, V); h^d_i (B, T, Dd)
    y_s, cache_s = sparse.run_with_cache(tokens, names_filter=names, detach=False)  # h^s_i (B, T, Ds)
    drawn = draw_locations(len(names), sample, generator) if hybrids else []
    enc_err, dec_err, kl_ds, kl_sd = [], [], [], []
    for i, (name, br) in enumerate(zip(names, bridges.bridges)):
        enc = br.encode(cache_d[name])  # (B, T, Ds)
        dec = br.decode(cache_s[name])  # (B, T, Dd)
        enc_err.append(nmse(enc, cache_s[name]))
        dec_err.append(nmse(dec, cache_d[name]))
        if i in drawn:
            kl_ds.append(kl_from(y_d, sparse.run_with_hooks(tokens, [(name, _replace(enc))])))
            kl_sd.append(kl_from(y_d, dense.run_with_hooks(tokens, [(name, _replace(dec))])))
    scale = len(names) / len(drawn) if drawn else 1.0
    return BridgeTerms(y_d, y_s, enc_err, dec_err, kl_ds, kl_sd, drawn, scale)


weights_sha256 = file_sha256


def write_bridge_json(run_dir: Path, dense_dir: Path, spec: BridgeSpec) -> None:
    """The pointer to the dense run (absolute, with its weights' hash) and the bridge shapes."""
    dense_dir = Path(dense_dir).resolve()
    atomic_write_json(RunDir(run_dir).bridge, {
        "schema_version": SCHEMA_VERSION, "dense_run": str(dense_dir),
        "dense_weights_sha256": weights_sha256(RunDir(dense_dir).weights), **asdict(spec)})


def read_bridge_json(run_dir: Path) -> tuple[Path, str, BridgeSpec]:
    meta = read_json(RunDir(run_dir).bridge, what="bridge file (is this a bridged run?)")
    try:
        spec = BridgeSpec(**{k: meta[k] for k in BridgeSpec.__dataclass_fields__ if k in meta})
        return Path(meta["dense_run"]), str(meta["dense_weights_sha256"]), spec
    except (KeyError, TypeError) as exc:
        raise UserError(f"{RunDir(run_dir).bridge} is malformed (missing {exc})") from None


def save_bridges(bridges: Bridges, path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in bridges.state_dict().items()}, str(tmp),
                  metadata={"format": "sparsecircuits-bridges"})


@dataclass
class BridgedRun:
    """A bridged run: its sparse model (an ordinary run), the dense run and the bridges."""

    sparse: "object"  # sparsecircuits.run.Run
    dense: "object"
    bridges: Bridges

    @property
    def path(self) -> Path:
        return self.sparse.path


def load_bridged(path: str | Path, device: str = "cpu") -> BridgedRun:
    """Open a finished bridged run; a missing run, dense run or bridge file is a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..run import load_run

    sparse = load_run(path, device=device)
    dense_dir, sha, spec = read_bridge_json(sparse.path)
    if not dense_dir.is_dir():
        raise UserError(f"the dense run of {sparse.path} is gone: {dense_dir}")
    dense = load_run(dense_dir, device=device)
    if weights_sha256(RunDir(dense_dir).weights) != sha:
        raise UserError(f"the dense run {dense_dir} has changed since {sparse.path} was trained against it")
    for p in dense.model.parameters():
        p.requires_grad_(False)
    bridges = Bridges(spec)
    weights = RunDir(sparse.path).bridge_weights
    try:
        bridges.load_state_dict(load_file(str(weights)), strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise UserError(f"bridge weights {weights} are unreadable: {str(exc).splitlines()[0]}") from None
    return BridgedRun(sparse, dense, bridges.to(device).eval())
