"""OpenAI's released checkpoint format (the paper's models), read and written.

The paper's models ship as a folder holding ``beeg_config.json`` (the fields of the
``GPTConfig`` dataclass in ``circuit_sparsity/inference/gpt.py`` of the public
``openai/circuit_sparsity`` repository, plus a few training-only keys) and
``final_model.pt`` (a ``torch.save``-d state dict with nanoGPT names). The tokenizer,
``tinypython_2k``, is a tiktoken byte-level BPE published separately as GPT-2-style
``vocab.bpe`` + ``encoder.json`` (converted by ``data/gpt2_bpe.py``).

Facts of that format's forward pass, all honoured here so logits match:

- ``transformer.wpe`` always exists and is always added to the token embedding; a model
  "without positional embedding" has it at zero (we import it as ``pos_emb=False``).
- Norms are ``torch.nn.RMSNorm(d_model)`` with no eps given, i.e. eps = the float32
  machine epsilon, added inside the square root (``rms_norm=false``, LayerNorm, is refused).
- Attention scale is ``1/sqrt(d_head)``; ``c_attn`` packs q, k, v in that order; AbsTopK on
  q, k and v acts on all heads' channels together, per token, before the head split.
- The sink (``sink=true``) is an extra always-visible key slot with zero key and zero value
  whose logit is ``attn.attn_imp.sink_logit`` (one per head). Their code applies it only on
  its ``flash`` path (the slow path, which ``load_model`` picks by default, silently drops
  it); the models were trained with it, so we always apply it.
- AbsTopK keeps ``int(afrac * width)`` entries at the sites named in ``afrac_loctypes``
  (a comma-separated string); ``afrac=null`` switches all sites off.
- ``residual_activation_type="relu"`` applies a ReLU after the attention residual add and
  again after the MLP residual add (our ``residual_activation="relu_sublayer"``).
- The MLP activation is exact (erf) GELU or ReLU (``activation_type``).
- logits = ``lm_head(ln_f(x)) + final_logits_bias + bigram_table[current token]``;
  ``final_logits_bias`` is a buffer that may be missing from a file (zeros).
- Defaults of keys a file leaves out are the public ``GPTConfig``'s: ``bias=true``,
  ``tied_unembed=true``, ``rms_norm=false``, ``d_head=d_model//n_head``, ``d_mlp=4*d_model``.

Weights are read with ``torch.load(weights_only=True)`` only, so a file that would run
code when unpickled is refused without running it. On export we also write
``sparsecircuits.json`` beside the two files, holding our full run config; their loader
ignores it and ours uses it to restore what the format cannot say (our norm eps, a
disabled-but-present positional embedding or logit bias), so a round trip is exact.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, RunConfig
from ..data.gpt2_bpe import tokenizer_from_gpt2_files
from ..data.tokenizer import load_tokenizer
from ..errors import UserError
from ..io import umask, atomic_path, atomic_write_json, atomic_write_text, read_json
from ..model.gpt import GPT
from ..run import load_run
from ..rundir import TOKENIZER, RunDir
from ..sites import ACTIVATION_SITES, SITES, site_widths

CONFIG_FILE = "beeg_config.json"
WEIGHTS_FILE = "final_model.pt"
SIDECAR_FILE = "sparsecircuits.json"

# torch.nn.RMSNorm(d) with eps=None uses the machine epsilon of the input's dtype.
OPENAI_NORM_EPS = float(torch.finfo(torch.float32).eps)

# The public GPTConfig's defaults, used for keys a beeg_config.json leaves out.
GPTCONFIG_DEFAULTS: dict[str, Any] = {
    "block_size": 1024,
    "vocab_size": 50304,
    "n_layer": 12,
    "n_head": 12,
    "d_head": None,
    "d_model": 768,
    "dropout": 0.0,
    "bias": True,
    "ln_bias": True,
    "rms_norm": False,
    "residual_activation_type": "identity",
    "activation_type": "gelu",
    "afrac": None,
    "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
    "debug_nans": False,
    "tied_unembed": True,
    "tokenizer_name": "tinypython_2k",
    "grad_checkpointing": True,
    "d_mlp": None,
    "enable_bigram_table": False,
    "learnable_bigram_table": False,
    "d_pos_emb": None,
    "dropout_cat_pos_emb": False,
    "sinusoidal_cat_pos_emb": False,
    "enable_sparse_kernels": False,
    "flash": True,
    "sink": False,
}

# Keys the released files carry that only concern training or speed: accepted, ignored.
# (``ln_bias`` only matters for LayerNorm; ``*_cat_pos_emb`` only with ``d_pos_emb``.)
TRAINING_ONLY_KEYS = {
    "dropout", "debug_nans", "tokenizer_name", "grad_checkpointing", "enable_sparse_kernels",
    "flash", "learnable_bigram_table", "ln_bias", "dropout_cat_pos_emb", "sinusoidal_cat_pos_emb",
    "pfrac", "bigram_table_rank", "expansion_factor", "expansion_factor_mlp", "debug_exact_topk",
    "sparse_matmul_impl", "afrac_ste", "afrac_ste_only_non_neurons", "enable_fp8_linear",
    "mup_width_multiplier", "n_mlp", "n_embd",
}

# Keys that would change the forward pass in a way neither the public inference code nor
# ours implements: accepted only when off (false or null).
NEUTRAL_ONLY = {"use_tied_aux_matrix", "unembed_rank", "rtopk", "mup", "scale_invariance", "afrac_approx"}

_INT, _BOOL, _STR, _NUM = "an integer", "true/false", "a string", "a number"
_TYPES: dict[str, tuple[str, bool]] = {  # key -> (kind, may be null)
    "block_size": (_INT, False), "vocab_size": (_INT, False), "n_layer": (_INT, False),
    "n_head": (_INT, False), "d_model": (_INT, False), "d_head": (_INT, True), "d_mlp": (_INT, True),
    "n_mlp": (_INT, True), "n_embd": (_INT, True), "d_pos_emb": (_INT, True),
    "bias": (_BOOL, False), "ln_bias": (_BOOL, False), "rms_norm": (_BOOL, False),
    "tied_unembed": (_BOOL, False), "enable_bigram_table": (_BOOL, False),
    "learnable_bigram_table": (_BOOL, False), "sink": (_BOOL, False),
    "residual_activation_type": (_STR, False), "activation_type": (_STR, False),
    "afrac_loctypes": (_STR, False), "afrac": (_NUM, True), "dropout": (_NUM, False),
}

_KNOWN_KEYS = set(GPTCONFIG_DEFAULTS) | TRAINING_ONLY_KEYS | NEUTRAL_ONLY
# AbsTopK on the residual stream itself; our model has no such site.
_UNSUPPORTED_LOCTYPES = ("resid_post_attn", "resid_post_mlp")


# -- config ----------------------------------------------------------------------------
def _check_type(key: str, value: Any) -> None:
    kind, nullable = _TYPES.get(key, (None, True))
    if kind is None or (value is None and nullable):
        return
    ok = {
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _STR: isinstance(value, str),
        _NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise UserError(f"{CONFIG_FILE}: '{key}' must be {kind}, got {value!r}")


def parse_loctypes(text: str) -> list[str]:
    """``"attn_in,mlp_out"`` -> our site names; unknown or unsupported names are refused."""
    names = [n for n in text.split(",") if n != ""]
    unsupported = [n for n in names if n in _UNSUPPORTED_LOCTYPES]
    if unsupported:
        raise UserError(f"{CONFIG_FILE}: afrac_loctypes site(s) {unsupported} (AbsTopK on the residual "
                        "stream) are not supported")
    unknown = [n for n in names if n not in ACTIVATION_SITES]
    if unknown:
        raise UserError(f"{CONFIG_FILE}: unknown afrac_loctypes site(s) {unknown}; "
                        f"valid: {list(ACTIVATION_SITES)}")
    return [s for s in ACTIVATION_SITES if s in names]  # canonical order, no duplicates


def _check_k_positive(cfg: ModelConfig, where: str) -> None:
    """The format keeps ``int(afrac * width)`` entries, which may be 0; ours keeps at least 1."""
    if cfg.afrac >= 1.0:
        return
    widths = site_widths(cfg)
    empty = [s.switch for s in SITES if s.switch in cfg.afrac_sites and int(cfg.afrac * widths[s.kind]) == 0]
    if empty:
        raise UserError(f"{where}: afrac={cfg.afrac} keeps no entries at site(s) {empty}; not supported")


def config_from_openai(raw: Any) -> ModelConfig:
    """A beeg_config.json dict -> our ModelConfig (pos_emb and final_logits_bias off: they
    are decided from the weights). Everything that changes the forward pass is honoured or
    refused by name."""
    if not isinstance(raw, dict):
        raise UserError(f"{CONFIG_FILE} must hold a JSON object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in _KNOWN_KEYS)
    if unknown:
        raise UserError(f"{CONFIG_FILE}: unknown key(s) {unknown}; not fields of the released GPTConfig")
    for key, value in raw.items():
        _check_type(key, value)
    c = dict(GPTCONFIG_DEFAULTS)
    c.update(raw)
    if raw.get("n_mlp") is not None:  # older files spell d_mlp this way
        if raw.get("d_mlp") is not None and raw["d_mlp"] != raw["n_mlp"]:
            raise UserError(f"{CONFIG_FILE}: n_mlp={raw['n_mlp']} and d_mlp={raw['d_mlp']} disagree")
        c["d_mlp"] = raw["n_mlp"]
    for key in sorted(NEUTRAL_ONLY & set(raw)):
        if raw[key] is not None and raw[key] is not False:
            raise UserError(f"{CONFIG_FILE}: {key}={raw[key]!r} is not supported (only false or null)")
    if not c["rms_norm"]:
        raise UserError(f"{CONFIG_FILE}: rms_norm=false (LayerNorm) is not supported; only RMSNorm models import")
    if c["d_pos_emb"] is not None:
        raise UserError(f"{CONFIG_FILE}: d_pos_emb={c['d_pos_emb']} (a positional embedding concatenated to "
                        "each block's input) is not supported")
    if c["residual_activation_type"] not in ("identity", "relu"):
        raise UserError(f"{CONFIG_FILE}: residual_activation_type={c['residual_activation_type']!r} is not "
                        "supported (identity or relu)")
    if c["activation_type"] not in ("gelu", "relu"):
        raise UserError(f"{CONFIG_FILE}: activation_type={c['activation_type']!r} is not supported (gelu or relu)")
    for key in ("block_size", "vocab_size", "n_layer", "n_head", "d_model"):
        if c[key] < 1:
            raise UserError(f"{CONFIG_FILE}: '{key}' must be >= 1, got {c[key]}")
    if c["d_model"] % c["n_head"]:
        raise UserError(f"{CONFIG_FILE}: d_model={c['d_model']} is not divisible by n_head={c['n_head']}")
    if c.get("n_embd") is not None and c["n_embd"] != c["d_model"]:
        raise UserError(f"{CONFIG_FILE}: n_embd={c['n_embd']} differs from d_model={c['d_model']}")
    afrac = 1.0 if c["afrac"] is None else float(c["afrac"])
    if not 0.0 < afrac <= 1.0:
        raise UserError(f"{CONFIG_FILE}: afrac must be in (0, 1] or null, got {c['afrac']}")
    cfg = ModelConfig(
        vocab_size=c["vocab_size"],
        n_layer=c["n_layer"],
        d_model=c["d_model"],
        n_head=c["n_head"],
        d_head=c["d_head"] if c["d_head"] is not None else c["d_model"] // c["n_head"],
        d_mlp=c["d_mlp"] if c["d_mlp"] is not None else 4 * c["d_model"],
        block_size=c["block_size"],
        pos_emb=False,
        attn_sink=c["sink"],
        bigram_table=c["enable_bigram_table"],
        afrac=afrac,
        afrac_sites=parse_loctypes(c["afrac_loctypes"]),
        bias=c["bias"],
        final_logits_bias=False,
        tied_unembed=c["tied_unembed"],
        residual_activation="relu_sublayer" if c["residual_activation_type"] == "relu" else "identity",
        norm_eps=OPENAI_NORM_EPS,
        mlp_activation=c["activation_type"],
    )
    cfg.validate()
    _check_k_positive(cfg, CONFIG_FILE)
    return cfg


def config_to_openai(cfg: ModelConfig, pfrac: float | None = None) -> dict[str, Any]:
    """Our ModelConfig -> a beeg_config.json dict: every GPTConfig field, plus the two
    training keys the released files carry and the public loader pops (``pfrac``, the
    fraction of weights kept, here as measured; ``bigram_table_rank``, null)."""
    if cfg.residual_activation == "relu":
        raise UserError("model.residual_activation='relu' (after the whole block) has no equivalent in the "
                        "OpenAI format; its relu is 'relu_sublayer'")
    if cfg.d_model % cfg.n_head:
        raise UserError(f"the OpenAI format needs d_model divisible by n_head ({cfg.d_model} % {cfg.n_head})")
    _check_k_positive(cfg, "export")
    out = dict(GPTCONFIG_DEFAULTS)
    out.update(
        block_size=cfg.block_size,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        d_head=cfg.d_head,
        d_model=cfg.d_model,
        bias=cfg.bias,
        ln_bias=False,
        rms_norm=True,
        residual_activation_type="relu" if cfg.residual_activation == "relu_sublayer" else "identity",
        activation_type=cfg.mlp_activation,
        afrac=None if cfg.afrac >= 1.0 else cfg.afrac,
        afrac_loctypes=",".join(cfg.afrac_sites),
        tied_unembed=cfg.tied_unembed,
        tokenizer_name="tokenizer.json",
        grad_checkpointing=False,
        d_mlp=cfg.d_mlp,
        enable_bigram_table=cfg.bigram_table,
        learnable_bigram_table=cfg.bigram_table,
        flash=True,  # the public code only applies the sink on its flash path
        sink=cfg.attn_sink,
    )
    out["bigram_table_rank"] = None
    out["pfrac"] = pfrac
    return out


# -- weights ---------------------------------------------------------------------------
def to_openai_name(name: str) -> str:
    """Our parameter name -> the format's state-dict key."""
    if name.startswith("blocks."):
        name = "transformer.h." + name[len("blocks."):]
        return re.sub(r"\.attn\.sink_logit$", ".attn.attn_imp.sink_logit", name)
    if name in ("wte.weight", "wpe.weight"):
        return "transformer." + name
    if name == "ln_final.norm.weight":
        return "transformer.ln_f.weight"
    return name


def _meta_state_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict names and shapes for ``cfg``, without allocating any weights."""
    with torch.device("meta"):
        model = GPT(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: anything but tensors and containers is refused
    before it can run, and the refusal is one line."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols; we report instead
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = re.search(r"GLOBAL ([\w.]+)", text)
        if m:
            raise UserError(f"refused to load {path}: it asks to import {m.group(1)}, which a plain tensor "
                            "state dict never does; nothing in it was run") from None
        boiler = ("Weights only load failed", "Check the documentation", "Please file an issue", "In PyTorch")
        detail = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(boiler)),
                      "unreadable pickle")
        raise UserError(f"{path} is not a readable torch state dict (refused by the weights-only loader: "
                        f"{detail[:200]})") from None
    except Exception as exc:  # a damaged or foreign file: zip, EOF, storage errors, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} is not a readable torch state dict: {first[:200]}") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise UserError(f"{path} must hold a state dict (a dict of named tensors), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: entries that are not tensors: {bad[:5]}")
    return sd


def state_dict_from_openai(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The format's state dict -> ours, float32. Sets ``cfg.pos_emb`` when ``wpe`` is not all
    zero and ``cfg.final_logits_bias`` when the bias is not all zero (a zero tensor adds
    nothing, so leaving the parameter out keeps the model identical and smaller)."""
    causal = re.compile(r"^transformer\.h\.\d+\.attn\.bias$")  # the slow path's causal-mask buffer
    sd = {k: v for k, v in sd.items() if not (causal.match(k) and v.dim() == 4)}
    wpe, flb = sd.get("transformer.wpe.weight"), sd.get("final_logits_bias")
    cfg.pos_emb = cfg.pos_emb or (wpe is not None and bool(wpe.ne(0).any()))
    cfg.final_logits_bias = cfg.final_logits_bias or (flb is not None and bool(flb.ne(0).any()))
    shapes = _meta_state_shapes(cfg)
    theirs_to_ours = {to_openai_name(n): n for n in shapes}
    optional = {"final_logits_bias"} if not cfg.final_logits_bias else set()
    if cfg.tied_unembed:  # either key names the one shared matrix
        head, wte = sd.get("lm_head.weight"), sd.get("transformer.wte.weight")
        if head is not None and wte is not None and not torch.equal(head, wte):
            raise UserError(f"{WEIGHTS_FILE}: tied_unembed is true but lm_head and transformer.wte differ")
        shared = head if head is not None else wte
        if shared is not None:
            sd["lm_head.weight"] = sd["transformer.wte.weight"] = shared
    known = set(theirs_to_ours) | {"transformer.wpe.weight", "final_logits_bias"}
    unexpected = sorted(k for k in sd if k not in known)
    if unexpected:
        raise UserError(f"{WEIGHTS_FILE}: unexpected tensor(s) {unexpected[:5]}"
                        f"{' ...' if len(unexpected) > 5 else ''} for the config in {CONFIG_FILE}")
    required = set(theirs_to_ours) | {"transformer.wpe.weight"}  # their model always has wpe
    missing = sorted(k for k in required if sd.get(k) is None and k not in optional)
    if missing:
        raise UserError(f"{WEIGHTS_FILE}: missing tensor(s) {missing[:5]}"
                        f"{' ...' if len(missing) > 5 else ''} for the config in {CONFIG_FILE}")
    out: dict[str, torch.Tensor] = {}
    expect_wpe = (cfg.block_size, cfg.d_model)
    if wpe is not None and tuple(wpe.shape) != expect_wpe:
        raise UserError(f"{WEIGHTS_FILE}: transformer.wpe.weight has shape {tuple(wpe.shape)}, "
                        f"config says {expect_wpe}")
    for theirs, ours in theirs_to_ours.items():
        t = sd.get(theirs)
        if t is None:
            continue
        if tuple(t.shape) != shapes[ours]:
            raise UserError(f"{WEIGHTS_FILE}: {theirs} has shape {tuple(t.shape)}, config says {shapes[ours]}")
        if not t.is_floating_point():
            raise UserError(f"{WEIGHTS_FILE}: {theirs} has dtype {t.dtype}, expected floating point")
        out[ours] = t.detach().to(torch.float32).contiguous()
    if cfg.tied_unembed:
        out["lm_head.weight"] = out["wte.weight"]
    return out


def state_dict_to_openai(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> the format's, in its module order, with ``wpe`` and
    ``final_logits_bias`` always present (zeros when we have none)."""
    theirs = {to_openai_name(k): v.detach().to(torch.float32).contiguous() for k, v in sd.items()}
    if cfg.tied_unembed:
        theirs["lm_head.weight"] = theirs["transformer.wte.weight"]  # one shared tensor, as saved by them
    theirs.setdefault("transformer.wpe.weight", torch.zeros(cfg.block_size, cfg.d_model))
    theirs.setdefault("final_logits_bias", torch.zeros(cfg.vocab_size))

    def order(key: str) -> tuple:
        m = re.match(r"transformer\.h\.(\d+)\.(.*)$", key)
        if m:
            parts = ["ln_1.", "attn.c_attn.", "attn.c_proj.", "attn.attn_imp.", "ln_2.", "mlp.c_fc.", "mlp.c_proj."]
            rank = next((j for j, p in enumerate(parts) if m.group(2).startswith(p)), len(parts))
            return (1, int(m.group(1)), rank, m.group(2))
        top = ["transformer.wte.weight", "transformer.wpe.weight"]
        tail = ["transformer.ln_f.weight", "lm_head.weight", "final_logits_bias", "bigram_table"]
        return (0, top.index(key), 0, "") if key in top else (2, tail.index(key) if key in tail else 9, 0, key)

    return {k: theirs[k] for k in sorted(theirs, key=order)}


# -- tokenizer -------------------------------------------------------------------------
def find_tokenizer(src_dir: Path, override: Path | None) -> tuple[Any, str] | tuple[None, None]:
    """The tokenizer for an import and where it came from: ``override`` (a tokenizer.json,
    or a folder holding one or vocab.bpe + encoder.json), else the same inside ``src_dir``."""
    def from_dir(d: Path):
        if (d / "tokenizer.json").is_file():
            return load_tokenizer(d / "tokenizer.json"), str(d / "tokenizer.json")
        if (d / "vocab.bpe").is_file() and (d / "encoder.json").is_file():
            tok = tokenizer_from_gpt2_files(d / "vocab.bpe", d / "encoder.json")
            return tok, f"converted from {d / 'vocab.bpe'} + encoder.json"
        return None, None

    if override is not None:
        if override.is_file():
            return load_tokenizer(override), str(override)
        if override.is_dir():
            tok, where = from_dir(override)
            if tok is None:
                raise UserError(f"--tokenizer {override}: no tokenizer.json, nor vocab.bpe + encoder.json, in it")
            return tok, where
        raise UserError(f"--tokenizer {override}: no such file or folder")
    return from_dir(src_dir)


# -- whole folders ---------------------------------------------------------------------
@dataclass
class ImportResult:
    out: Path
    config: RunConfig
    tokenizer_source: str | None
    notes: list[str] = field(default_factory=list)
    nonzero: int = 0
    numel: int = 0


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    notes: list[str] = field(default_factory=list)


def _check_new_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists; choose a new folder (nothing is overwritten)")


class _StagedDir:
    """A hidden folder beside ``out``, renamed onto it only when everything is written."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        os.chmod(self.tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide the result from other users
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            _check_new_dir(self.out)  # someone may have made it meanwhile
            if self.out.exists():
                self.out.rmdir()
            os.replace(self.tmp, self.out)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


def _read_sidecar(src: Path) -> RunConfig | None:
    path = src / SIDECAR_FILE
    if not path.is_file():
        return None
    data = read_json(path, what=SIDECAR_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise UserError(f"{path}: expected an object with a 'config' table")
    return RunConfig.from_dict(data["config"])


def import_openai(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  tokenizer: str | os.PathLike | None = None, provenance: dict | None = None) -> ImportResult:
    """Read a released model folder and write one of our run directories from it.

    ``provenance`` (e.g. the Hub repository, revision and commit) is recorded in
    ``imported_from.json`` beside the source folder's path."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"not a folder: {src}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise UserError(f"{src} has no {name} (an OpenAI circuit_sparsity model folder holds "
                            f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    _check_new_dir(out)
    raw = read_json(src / CONFIG_FILE, what=CONFIG_FILE)
    cfg = config_from_openai(raw)
    sidecar = _read_sidecar(src)
    if sidecar is not None:  # our own export: restore what the format cannot say
        cfg.norm_eps = sidecar.model.norm_eps
        cfg.pos_emb = sidecar.model.pos_emb
        cfg.final_logits_bias = sidecar.model.final_logits_bias
    tok, tok_source = find_tokenizer(src, Path(tokenizer) if tokenizer is not None else None)
    if tok is not None and tok.get_vocab_size(with_added_tokens=True) > cfg.vocab_size:
        raise UserError(f"the tokenizer ({tok_source}) has {tok.get_vocab_size(with_added_tokens=True)} tokens, "
                        f"more than the model's vocab_size {cfg.vocab_size}")
    ours = state_dict_from_openai(load_openai_state_dict(src / WEIGHTS_FILE), cfg)
    run_cfg = sidecar or RunConfig()
    run_cfg.model = cfg
    if sidecar is None and cfg.vocab_size >= 300:
        run_cfg.data.vocab_size = cfg.vocab_size
    run_cfg.validate()
    _verify_loadable(ours, cfg)

    notes: list[str] = []
    if tok is None:
        notes.append(f"no tokenizer in {src}: the run's model works on token ids, but text needs "
                     f"{RunDir(out).tokenizer}; copy one there, or import again with --tokenizer PATH (a "
                     "tokenizer.json, or a folder with the model's vocab.bpe + encoder.json; tinypython_2k's "
                     "are published beside the models)")
    with _StagedDir(out) as tmp:
        staged = RunDir(tmp)
        staged.write_config(run_cfg)
        _save_safetensors(ours, cfg, staged.weights)
        if tok is not None:
            atomic_write_text(staged.tokenizer, tok.to_str())
        atomic_write_json(staged.imported, {
            "format": "openai/circuit_sparsity", "source": str(src.resolve()),
            "tokenizer": tok_source, "beeg_config": raw, **(provenance or {})})
    nonzero, numel = _matrix_density(ours, cfg)
    return ImportResult(out=out, config=run_cfg, tokenizer_source=tok_source, notes=notes,
                        nonzero=nonzero, numel=numel)


def _matrix_density(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[int, int]:
    """Nonzeros and entries of the weight-sparse matrices (not the dense bigram table; a
    tied unembedding counted once)."""
    mats = [v for k, v in sd.items()
            if v.dim() == 2 and k != "bigram_table" and not (cfg.tied_unembed and k == "lm_head.weight")]
    return sum(int(v.count_nonzero()) for v in mats), sum(v.numel() for v in mats)


def _verify_loadable(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Load into a weightless model, strictly, so a mismatch is caught before writing."""
    with torch.device("meta"):
        model = GPT(cfg)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise UserError(f"weights do not fit the config: {str(exc).splitlines()[0]}") from None


def _save_safetensors(sd: dict[str, torch.Tensor], cfg: ModelConfig, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in sd.items() if not (cfg.tied_unembed and k == "lm_head.weight")}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "sparsecircuits", "source": "openai/circuit_sparsity"})


def export_openai(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> ExportResult:
    """Write a run in the released format: beeg_config.json, final_model.pt (a plain dict of
    tensors), our sidecar config, and the run's tokenizer.json."""
    run, out = Path(run_dir), Path(out_dir)
    loaded = load_run(run)
    _check_new_dir(out)
    run_cfg = loaded.config
    cfg = run_cfg.model
    ours = loaded.model.state_dict()  # a tied unembedding appears under both names
    nonzero, numel = _matrix_density(ours, cfg)
    beeg = config_to_openai(cfg, pfrac=nonzero / max(numel, 1))
    theirs = state_dict_to_openai(ours, cfg)
    notes: list[str] = []
    if cfg.norm_eps != OPENAI_NORM_EPS:
        notes.append(f"norm eps {cfg.norm_eps:g} differs from the format's fixed eps (float32 epsilon, "
                     f"{OPENAI_NORM_EPS:.3g}): their code's logits differ from ours by a tiny amount; "
                     f"importing with {SIDECAR_FILE} present restores ours exactly")
    files = [CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE]
    with _StagedDir(out) as tmp:
        atomic_write_json(tmp / CONFIG_FILE, beeg)
        with atomic_path(tmp / WEIGHTS_FILE) as wtmp:
            torch.save(theirs, wtmp)
        atomic_write_json(tmp / SIDECAR_FILE, {"format": "sparsecircuits", "format_version": 1,
                                               "config": run_cfg.to_dict()})
        if RunDir(run).tokenizer.is_file():
            shutil.copyfile(RunDir(run).tokenizer, tmp / TOKENIZER)  # the same name in their folder
            files.append(TOKENIZER)
        else:
            notes.append(f"{run} has no tokenizer.json; none exported")
    return ExportResult(out=out, files=files, notes=notes)
