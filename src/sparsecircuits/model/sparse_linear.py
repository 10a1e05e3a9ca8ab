"""A frozen weight-sparse model run through whichever product measured fastest, matrix by matrix.

Everything after training treats the weights as constants: pruning runs many forward and
backward passes through fixed weights with gradients only to masks on the activations;
the checks, node details, task scoring and sampling run forward only.  ``freeze_sparse``
exploits that:

- every ``nn.Linear`` (attention ``c_attn`` and ``c_proj``, MLP ``c_fc`` and ``c_proj``,
  ``lm_head``) becomes a ``FrozenLinear``: its weight is converted to CSR once, and its
  forward product and its backward product (to the input) each take the path that was
  fastest on this model's own activations and gradients (a short timing at conversion,
  kept in the returned ``SparsePlan``), never a fixed density rule;
- every AbsTopK site becomes a ``FrozenAbsTopK`` that uses the C kernel where that was
  faster (``native.py``), with the model's own tie rule (below).

Paths of a product, y = x W^T + b (x (N, in), W (out, in)) and its input gradient g W:

- ``dense``: ``F.linear`` / ``g @ W`` (BLAS), the model's own path;
- ``torch_csr``: ``torch.sparse.mm`` on W (and W^T) in CSR (MKL on CPU, cuSPARSE on CUDA);
- ``tiled`` (CPU): the C kernel over tiles of tokens, one vectorised multiply-add per
  nonzero weight, for moderately sparse weights;
- ``scatter`` (CPU): the C kernel row by row, skipping zero inputs: AbsTopK leaves 3 in 4
  of the inputs of ``c_attn``, ``c_fc`` and MLP ``c_proj`` at zero, and their output
  gradients are as sparse, which pays for very sparse weights.

The frozen weights get no gradient: their ``requires_grad`` is off while frozen (restored
by ``thaw``), and changing one in place makes the next forward raise rather than use a
stale copy.  Autocast or another dtype or device than the weight's falls back to the
dense product.  ``state_dict`` keys and values are unchanged while frozen.

AbsTopK ties: where the k-th largest magnitude of a row is tied with an entry left out,
which of the tied entries torch.topk keeps is up to its algorithm (it matters for the
gradient: a kept zero passes gradient, a dropped one does not).  The kernel flags such
rows and they are redone with the model's own ``abstopk``, so the frozen model keeps
exactly the entries the plain model keeps.

    plan = freeze_sparse(run.model)            # or: with sparse_inference(run.model) as plan:
    logits = run.model(tokens)                 # same logits and input gradients as before
    print(plan.table())
    thaw(run.model)
"""
from __future__ import annotations

import copy
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import native
from .gpt import SiteSparsity, abstopk
from .kernels import native_abstopk, site_abstopk

PATHS = ("dense", "torch_csr", "tiled", "scatter")
NATIVE_PATHS = ("tiled", "scatter")
TILE_MAX = 64  # scratch rows for spmm_tiled: at least csrc's TILE
MARGIN = 1.1  # a path replaces the plain model's only if measured this much faster
HOPELESS = 4.0  # a path this many times slower than the fastest in its first two runs is not timed again
SITE_REPEATS = 7  # an AbsTopK site takes about a millisecond to time: enough runs to see past a busy moment
# the converted weights each path reads, forward and backward
FORWARD_NEEDS = {"tiled": "csr_w", "scatter": "csr_wt", "torch_csr": "torch_w"}
BACKWARD_NEEDS = {"tiled": "csr_wt", "scatter": "csr_w", "torch_csr": "torch_wt"}

__all__ = ["FrozenAbsTopK", "FrozenLinear", "PATHS", "SparsePlan", "freeze_sparse", "frozen_plan",
           "sparse_inference", "thaw"]


# -- products -----------------------------------------------------------------------------
def _to_csr(w: torch.Tensor) -> torch.Tensor:
    """torch's CSR form of w, without its warning that CSR support is in beta (used as documented)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return w.detach().to_sparse_csr()


def _csr(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (R, C) dense -> (row pointers (R + 1,), column indices (nnz,), values (nnz,)), int32 indices."""
    c = _to_csr(w)
    return (c.crow_indices().to(torch.int32).contiguous(), c.col_indices().to(torch.int32).contiguous(),
            c.values().contiguous())


def _native_scatter(x: torch.Tensor, m: tuple, out: int) -> torch.Tensor:
    """x (N, in) @ M with M (in, out) in CSR -> (N, out); zero entries of x are skipped."""
    lib, (ptr, idx, val) = native.library(), m
    N, n_in = x.shape
    y = torch.empty(N, out, dtype=x.dtype)

    def run(r0: int, r1: int) -> None:
        nz = torch.empty(n_in, dtype=torch.int32)
        lib.spmm_scatter(native.ptr(x), native.ptr(ptr), native.ptr(idx), native.ptr(val), native.ptr(y),
                         n_in, out, r0, r1, native.ptr(nz))
    native.split_rows(run, N)
    return y


def _native_tiled(x: torch.Tensor, w: tuple, out: int) -> torch.Tensor:
    """x (N, in) @ W^T with W (out, in) in CSR -> (N, out)."""
    lib, (ptr, idx, val) = native.library(), w
    N, n_in = x.shape
    y = torch.empty(N, out, dtype=x.dtype)

    def run(r0: int, r1: int) -> None:
        xt, yt = torch.empty(n_in * TILE_MAX, dtype=x.dtype), torch.empty(out * TILE_MAX, dtype=x.dtype)
        lib.spmm_tiled(native.ptr(x), native.ptr(ptr), native.ptr(idx), native.ptr(val), native.ptr(y),
                       n_in, out, r0, r1, native.ptr(xt), native.ptr(yt))
    native.split_rows(run, N)
    return y


class FrozenLinear(nn.Module):
    """An ``nn.Linear`` whose weight no longer changes, multiplied by the paths chosen for it.

    Holds the original ``weight`` and ``bias`` parameters (same objects, same state_dict
    keys) plus the CSR forms of W and W^T that its paths need.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight  # (out, in)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.forward_path = self.backward_path = "dense"
        self._version = linear.weight._version
        self._data: dict[str, object] = {}

    # the structures each path reads, built on first need
    def _get(self, key: str):
        if key not in self._data:
            w = self.weight.detach()
            self._data[key] = {
                "csr_w": lambda: _csr(w),  # W (out, in): tiled forward, scatter backward
                "csr_wt": lambda: _csr(w.t()),  # W^T (in, out): scatter forward, tiled backward
                "torch_w": lambda: _to_csr(w),
                "torch_wt": lambda: _to_csr(w.t().contiguous()),
            }[key]()
        return self._data[key]

    def _keep_only_chosen(self) -> None:
        """Drop the converted forms that neither chosen path reads."""
        keep = {FORWARD_NEEDS.get(self.forward_path), BACKWARD_NEEDS.get(self.backward_path)}
        self._data = {k: v for k, v in self._data.items() if k in keep}

    def product(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """x (N, in) contiguous -> x W^T + b (N, out) by ``path``."""
        if path == "dense":
            return F.linear(x, self.weight.detach(), None if self.bias is None else self.bias.detach())
        if path == "torch_csr":
            y = torch.sparse.mm(self._get("torch_w"), x.t()).t().contiguous()
        elif path == "tiled":
            y = _native_tiled(x, self._get("csr_w"), self.out_features)
        elif path == "scatter":
            y = _native_scatter(x, self._get("csr_wt"), self.out_features)
        else:
            raise ValueError(f"unknown path {path!r}; valid: {PATHS}")
        if self.bias is not None:
            y += self.bias.detach()
        return y

    def input_grad(self, g: torch.Tensor, path: str) -> torch.Tensor:
        """g (N, out) contiguous -> g W (N, in) by ``path``."""
        if path == "dense":
            return g @ self.weight.detach()
        if path == "torch_csr":
            return torch.sparse.mm(self._get("torch_wt"), g.t()).t().contiguous()
        if path == "tiled":
            return _native_tiled(g, self._get("csr_wt"), self.in_features)
        if path == "scatter":
            return _native_scatter(g, self._get("csr_w"), self.in_features)
        raise ValueError(f"unknown path {path!r}; valid: {PATHS}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight._version != self._version:
            raise RuntimeError("a frozen weight was changed in place after freeze_sparse; thaw(model) and freeze again")
        if (x.dtype != self.weight.dtype or x.device != self.weight.device
                or torch.is_autocast_enabled(x.device.type)):
            return F.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        y = _FrozenProduct.apply(x.reshape(-1, self.in_features), self)  # (N, out)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"forward={self.forward_path}, backward={self.backward_path}")


class _FrozenProduct(torch.autograd.Function):
    """x (N, in) -> x W^T + b (N, out); the gradient goes to x only."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return layer.product(x.contiguous(), layer.forward_path)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        return ctx.layer.input_grad(g.contiguous(), ctx.layer.backward_path), None


# -- AbsTopK ------------------------------------------------------------------------------
class FrozenAbsTopK(nn.Module):
    """An AbsTopK site (``SiteSparsity``) run by the C kernel or by the model's own op, as measured.

    Two choices, each timed: ``path`` where a gradient flows back through the site (the
    kept set must then be the model's own, ties at zero included) and ``no_grad_path``
    where none does (only the values count, so rows tied at zero need no redoing).

    A third, untimed: ``"identity"`` for a site whose input is zero whatever the tokens,
    because its rows of the product feeding it are all zero with no bias
    (``_zero_input``): the q and k of a model whose attention learned no pattern.  Every
    row is then tied at zero, which the gradient path would redo by torch.topk on every
    call; but AbsTopK of zeros is those zeros, and whichever of them it keeps, the
    gradient they pass back meets only zero weights.  So the site is skipped, with the
    same values and input gradients (up to the sign of a zero).
    """

    def __init__(self, site: SiteSparsity) -> None:
        super().__init__()
        self.k, self.width = site.k, site.width
        self.path = self.no_grad_path = "torch"
        self._zero_weight: tuple[torch.Tensor, int] | None = None  # the zero rows' weight and its version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._zero_weight is not None:
            weight, version = self._zero_weight
            if weight._version != version:
                raise RuntimeError("a weight of a frozen model changed in place; thaw(model) and freeze again")
            return x
        grad = torch.is_grad_enabled() and x.requires_grad
        if (self.path if grad else self.no_grad_path) != "kernel" or self.k >= x.shape[-1]:
            return abstopk(x, self.k)
        fast = site_abstopk(x, self.k)  # None where the kernel does not apply (dtype, device, autocast)
        return abstopk(x, self.k) if fast is None else fast


# -- the plan -----------------------------------------------------------------------------
@dataclass
class SparsePlan:
    """What ``freeze_sparse`` chose and measured: one entry per matrix and per AbsTopK site.

    Times are the fastest of the interleaved runs (``_fastest``) in milliseconds, on the
    calibration batch of ``tokens`` tokens.
    """

    tokens: int
    threads: int
    native: str  # "available", or why the C kernels are not
    products: list[dict] = field(default_factory=list)
    sites: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """One line per matrix: shape, density, chosen paths, and the dense over chosen time."""
        lines = [f"{'matrix':<26} {'shape':>11} {'density':>8} {'forward':>10} {'x':>6} {'backward':>10} {'x':>6}"]
        for p in self.products:
            fw, bw = p["forward_ms"], p["backward_ms"]
            lines.append(f"{p['name']:<26} {'x'.join(map(str, p['shape'])):>11} {p['density']:>8.4f} "
                         f"{p['forward']:>10} {fw['dense'] / fw[p['forward']]:>6.2f} "
                         f"{p['backward']:>10} {bw['dense'] / bw[p['backward']]:>6.2f}")
        for s in self.sites:
            ms = s["ms"]  # empty where nothing was timed (no kernel, or an "identity" site)
            line = (f"{s['name']:<26} {s['width']:>11} {'k=' + str(s['k']):>8} {s['path']:>10} "
                    + (f"{ms['torch'] / ms[s['path']]:>6.2f}" if s["path"] in ms and "torch" in ms else f"{'':>6}"))
            if s.get("no_grad_ms"):  # the choice where no gradient flows, in the backward columns
                ng = s["no_grad_path"]
                line += f" {ng + ' (no grad)':>10} {s['no_grad_ms']['torch'] / s['no_grad_ms'][ng]:>6.2f}"
            lines.append(line)
        return "\n".join(lines)


def _fastest(candidates: dict[str, Callable[[], torch.Tensor]], reference: torch.Tensor, repeats: int,
             rejected: dict[str, str], baseline: str) -> dict[str, float]:
    """Milliseconds per candidate, the best of its runs.

    A first run checks each against ``reference`` (a candidate that fails or disagrees is
    left out, with the reason in ``rejected``); a second, interleaved, times each again;
    ``baseline`` and those within ``HOPELESS`` times the fastest of those two runs then get
    ``repeats - 1`` more, interleaved, so a busy moment slows all alike.  Two runs before
    any path is dropped, because on a shared machine one run is often preempted: a path
    dropped on a single run 30 times its real time was kept off half the AbsTopK sites of
    the demo model.  The baseline always gets every run, so one slow run of it (a cold
    cache, another process) cannot make a path look faster than it is.
    """
    tol = 1e-4 * float(reference.abs().max()) + 1e-6 if reference.numel() else 0.0
    sync = torch.cuda.synchronize if reference.is_cuda else (lambda: None)

    def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, (time.perf_counter() - t0) * 1e3

    best: dict[str, float] = {}
    for name, fn in candidates.items():
        try:
            out, ms = timed(fn)
        except (RuntimeError, NotImplementedError, TypeError) as exc:  # e.g. an op missing for a dtype
            rejected[name] = str(exc).splitlines()[0][:120]
            continue
        if out.shape != reference.shape or (out.numel() and float((out - reference).abs().max()) > tol):
            rejected[name] = "disagrees with the dense product"
            continue
        best[name] = ms
    for name in list(best):
        best[name] = min(best[name], timed(candidates[name])[1])
    fastest = min(best.values(), default=0.0)
    live = [name for name, ms in best.items() if ms <= HOPELESS * fastest or name == baseline]
    for _ in range(repeats - 1):
        for name in live:
            best[name] = min(best[name], timed(candidates[name])[1])
    return {k: round(v, 4) for k, v in best.items()}


def _choose(ms: dict[str, float], default: str) -> str:
    """The fastest path, unless ``default`` (the plain model's own) is within ``MARGIN`` of it:
    near break-even the timing noise would decide, and the default needs no converted copy."""
    fastest = min(ms, key=ms.get)
    return default if default in ms and ms[default] <= MARGIN * ms[fastest] else fastest


def _paths_for(x: torch.Tensor, force: str | None) -> list[str]:
    if force is not None:
        return ["dense", force] if force != "dense" else ["dense"]
    paths = ["dense", "torch_csr"]
    if x.device.type == "cpu" and x.dtype == torch.float32 and native.library() is not None:
        paths += list(NATIVE_PATHS)
    return paths


def _calibrate(model: nn.Module, tokens: torch.Tensor) -> tuple[dict, dict]:
    """One forward and backward of the plain model: each Linear's input and output gradient,
    each AbsTopK site's input (the activations the choices are timed on)."""
    linear_io: dict[str, list[torch.Tensor]] = {}
    site_in: dict[str, torch.Tensor] = {}
    handles = []

    def on_linear(name):
        def hook(mod, inp, out):
            linear_io[name] = [inp[0].detach().reshape(-1, mod.in_features).contiguous(), None]
            if out.requires_grad:
                out.register_hook(lambda g: linear_io[name].__setitem__(1, g.reshape(-1, mod.out_features)
                                                                        .contiguous()))
        return hook

    def on_site(name):
        def hook(mod, inp, out):
            site_in[name] = inp[0].detach().reshape(-1, inp[0].shape[-1]).contiguous()
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(on_linear(name)))
        elif isinstance(mod, SiteSparsity) and mod.k < mod.width:
            handles.append(mod.register_forward_hook(on_site(name)))
    leaf: list[torch.Tensor] = []

    def grad_leaf(x, hook):
        leaf.append(x.detach().requires_grad_(True))
        return leaf[0]

    try:
        with torch.enable_grad(), model.hooks([("hook_embed", grad_leaf)]):
            logits = model(tokens)
            probe = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)).to(logits)
            torch.autograd.grad((logits * probe).sum(), leaf[0])
    finally:
        for h in handles:
            h.remove()
    return linear_io, site_in


def _zero_input(model: nn.Module, name: str) -> torch.Tensor | None:
    """The weight feeding AbsTopK site ``name`` when its rows there are all zero and it has
    no bias (nor a nonzero bias there): the site's input is then zero for any tokens.  Only
    q, k, v (``c_attn``) and MLP neurons (``c_fc``, through an activation with act(0) = 0)
    have such a product; None for every other site."""
    from .gpt import MLP, Attention

    parent, attr = _parent(model, name)
    if isinstance(parent, Attention) and attr in ("sparse_q", "sparse_k", "sparse_v"):
        linear = parent.c_attn
        inner = parent.n_head * parent.d_head
        j = ("sparse_q", "sparse_k", "sparse_v").index(attr)
        rows = slice(j * inner, (j + 1) * inner)
    elif isinstance(parent, MLP) and attr == "sparse_neuron":
        linear, rows = parent.c_fc, slice(None)
        if float(parent.act(torch.zeros(1, dtype=linear.weight.dtype, device=linear.weight.device))) != 0.0:
            return None
    else:
        return None
    if not isinstance(linear, nn.Linear) or bool(linear.weight[rows].any()):
        return None
    if linear.bias is not None and bool(linear.bias[rows].any()):
        return None
    return linear.weight


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


@dataclass
class _Frozen:
    plan: SparsePlan
    swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]]  # (parent, attribute, original, frozen)
    grad_flags: list[tuple[nn.Parameter, bool]]


def freeze_sparse(model: nn.Module, sample: torch.Tensor | None = None, *, repeats: int = 3,
                  force: str | None = None, products: bool = True, sites: bool = True) -> SparsePlan:
    """Swap ``model``'s products and AbsTopK sites for frozen ones; return what was chosen.

    ``sample``: tokens (B, T) shaped like the workload, on the model's device, on which
    each path is timed (default: 8 rows of 64 random tokens, fewer if the context is
    shorter).  ``force``: one path for every product, both ways, and the kernel at every
    site (for tests; a path that cannot run there raises).  ``products`` / ``sites``:
    freeze only one kind.  Undo with ``thaw(model)``; freezing twice is an error.
    """
    if getattr(model, "_sparse_frozen", None) is not None:
        raise RuntimeError("model is already frozen; thaw(model) first")
    if force is not None and force not in PATHS:
        raise ValueError(f"unknown path {force!r}; valid: {PATHS}")
    param = next(model.parameters())
    if sample is None:
        T = min(64, model.cfg.block_size)
        gen = torch.Generator().manual_seed(0)
        sample = torch.randint(0, model.cfg.vocab_size, (8, T), generator=gen).to(param.device)
    if force in NATIVE_PATHS and native.library() is None:
        raise RuntimeError(f"path {force!r} needs the C kernels: {native.unavailable_reason()}")
    linear_io, site_in = _calibrate(model, sample)
    plan = SparsePlan(tokens=sample.numel(), threads=torch.get_num_threads(),
                      native="available" if native.library() is not None else native.unavailable_reason())
    swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []
    have_native = native.library() is not None
    with torch.no_grad():
        for name, mod in list(model.named_modules()):
            if products and isinstance(mod, nn.Linear):
                fl = FrozenLinear(mod)
                x, g = linear_io[name]
                rej: dict[str, str] = {}
                paths = _paths_for(x, force)
                for p in paths:  # convert before timing, so no path's first run pays for it
                    for need in (FORWARD_NEEDS.get(p), BACKWARD_NEEDS.get(p)):
                        if need is not None:
                            fl._get(need)
                fwd = _fastest({p: (lambda p=p: fl.product(x, p)) for p in paths}, fl.product(x, "dense"),
                               repeats, rej, "dense")
                bwd = _fastest({p: (lambda p=p: fl.input_grad(g, p)) for p in paths}, fl.input_grad(g, "dense"),
                               repeats, rej, "dense")
                if force is not None and (force not in fwd or force not in bwd):
                    raise RuntimeError(f"path {force!r} failed on {name}: {rej.get(force)}")
                fl.forward_path = force or _choose(fwd, "dense")
                fl.backward_path = force or _choose(bwd, "dense")
                fl._keep_only_chosen()
                nnz = int(torch.count_nonzero(mod.weight))
                plan.products.append({
                    "name": name, "shape": list(mod.weight.shape), "nnz": nnz,
                    "density": round(nnz / mod.weight.numel(), 6),
                    "forward": fl.forward_path, "backward": fl.backward_path,
                    "forward_ms": fwd, "backward_ms": bwd, "rejected": rej,
                })
                swaps.append((*_parent(model, name), mod, fl))
            elif sites and isinstance(mod, SiteSparsity) and mod.k < mod.width:
                fa = FrozenAbsTopK(mod)
                x = site_in[name]
                ms: dict[str, float] = {}
                no_grad_ms: dict[str, float] = {}
                zero_weight = _zero_input(model, name) if force is None else None
                if zero_weight is not None:
                    fa._zero_weight = (zero_weight, zero_weight._version)
                    fa.path = fa.no_grad_path = "identity"
                elif x.device.type == "cpu" and x.dtype == torch.float32 and have_native:
                    ref, reps = abstopk(x, fa.k), max(repeats, SITE_REPEATS)
                    ms = _fastest({"torch": lambda: abstopk(x, fa.k), "kernel": lambda: native_abstopk(x, fa.k)[0]},
                                  ref, reps, {}, "torch")
                    no_grad_ms = _fastest({"torch": lambda: abstopk(x, fa.k),
                                           "kernel": lambda: native_abstopk(x, fa.k, exact_keep=False)[0]},
                                          ref, reps, {}, "torch")
                if ms:
                    fa.path = "kernel" if force is not None and "kernel" in ms else _choose(ms, "torch")
                if no_grad_ms:
                    fa.no_grad_path = ("kernel" if force is not None and "kernel" in no_grad_ms
                                       else _choose(no_grad_ms, "torch"))
                plan.sites.append({"name": name, "width": mod.width, "k": mod.k, "path": fa.path, "ms": ms,
                                   "no_grad_path": fa.no_grad_path, "no_grad_ms": no_grad_ms})
                swaps.append((*_parent(model, name), mod, fa))
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    for parent, attr, _, new in swaps:
        setattr(parent, attr, new)
    for p, _ in grad_flags:
        p.requires_grad_(False)
    model._sparse_frozen = _Frozen(plan, swaps, grad_flags)
    return plan


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``, frozen or not, whose frozen modules stay valid.

    The frozen modules raise once a weight's version moves past the one seen at freezing,
    but a copied tensor starts again at version 0 (``circuits/lanes.py`` copies frozen
    models), so the copy's frozen modules take its own weights' versions; a model whose
    weights changed in place since freezing is refused, as its forward would refuse."""
    frozen = [m for m in model.modules() if isinstance(m, (FrozenLinear, FrozenAbsTopK))]
    for m in frozen:
        weight, version = (m.weight, m._version) if isinstance(m, FrozenLinear) else (m._zero_weight or (None, None))
        if weight is not None and weight._version != version:
            raise RuntimeError("a weight of a frozen model changed in place; thaw(model) and freeze again")
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, FrozenLinear):
            m._version = m.weight._version
        elif isinstance(m, FrozenAbsTopK) and m._zero_weight is not None:
            m._zero_weight = (m._zero_weight[0], m._zero_weight[0]._version)
    return clone


def frozen_plan(model: nn.Module) -> SparsePlan | None:
    """The plan ``model`` was frozen with, or None if it is not frozen."""
    frozen = getattr(model, "_sparse_frozen", None)
    return None if frozen is None else frozen.plan


def thaw(model: nn.Module) -> None:
    """Put back the modules ``freeze_sparse`` swapped out and the weights' ``requires_grad``."""
    frozen = getattr(model, "_sparse_frozen", None)
    if frozen is None:
        return
    for parent, attr, original, _ in frozen.swaps:
        setattr(parent, attr, original)
    for p, flag in frozen.grad_flags:
        p.requires_grad_(flag)
    model._sparse_frozen = None


@contextmanager
def sparse_inference(model: nn.Module, sample: torch.Tensor | None = None, **kwargs) -> Iterator[SparsePlan]:
    """``freeze_sparse`` for the body of a ``with``, then ``thaw`` (also on an exception)."""
    plan = freeze_sparse(model, sample, **kwargs)
    try:
        yield plan
    finally:
        thaw(model)
