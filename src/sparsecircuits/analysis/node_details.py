"""Per-node evidence for the circuit page's side panel: what each kept node responds to.

A circuit's graph says *which* nodes matter; a reader still has to guess *what* each one
does.  This module gathers, for every kept internal node, four cheap pieces of evidence
and stores them under the circuit JSON's ``"details"`` key (the shape
``report/graph.py``'s ``_clean_details`` reads)::

    {node_id: {"snippets": [{"tokens": [str], "acts": [float], "max": float}],
               "class_acts": {"a": [float], "b": [float]},
               "ablation_delta": float,
               "pattern": {"tokens": [str], "matrix": [[float]], "title": str}}}

* ``snippets``: the node's strongest activations on pretraining text.  Windows are
  ``n_windows`` evenly spaced validation windows of the model's context (the same
  sample node means use); the full model is run once per batch and every kept node's
  column is gathered in that one pass.  Positions are ranked by ``|activation|`` (q/k/v
  channels and residual reads/writes are signed, and the viewer highlights the peak by
  magnitude); at most one snippet per window, so the list shows different contexts
  rather than neighbouring positions of one.  Each snippet is the ``context`` tokens up
  to and including the peak, with the node's activation at each; ``max`` is the signed
  activation at the peak.  Snippets are sorted by ``|max|``, so the first one holds the
  node's largest ``|activation|`` over the sample.  Windows where the node is exactly
  zero everywhere are left out (AbsTopK zeroes most channels most of the time).
* ``class_acts``: the full model's activation at the last position of the task's test
  prompts, ``"a"`` for the first prompt of each pair and ``"b"`` for the second (for
  plain examples without pairs: keyed by the correct answer).  Logit nodes get the full
  model's logit of their token here.
* ``ablation_delta``: calibrated task loss of the circuit minus this node, less that of
  the circuit, on the test items (the circuit's own ablation and calibration).  Positive
  means the circuit needs the node.  This is most of the cost (one masked forward per
  node), so prompts run in length buckets, each node's forward starts at its own block
  from the circuit's cached residual stream, and many nodes share one batched forward.
* ``pattern`` (q and k nodes): the node's head on one test prompt, with scores summed
  only over the head's channels that the circuit keeps in q or k, taken from the
  circuit's forward pass (upstream nodes ablated; a channel kept in q but not in k uses
  the ablated k, exactly what the circuit computes).  Causal, softmax with the sink
  logit when the model has one, the sink's share left out (rows sum to <= 1).  v nodes
  get their head's whole attention pattern in the circuit.

Embed nodes get no details (an embedding row has no activation of its own to show).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from ..circuits.circuit import Circuit, calibrated_diff, encode_for_run, orientation
from ..circuits.frozen import kernel_sites
from ..circuits.lanes import default_lanes, map_model, spread
from ..circuits.masking import MaskedModel, val_windows
from ..circuits.nodes import NodeSet
from ..circuits.skip import skippable, skipping
from ..errors import UserError
from ..rundir import RunDir
from ..tasks.base import answer_diff, diff_loss, flat_examples

CLASS_CAP = 64  # test prompts per class for class_acts
DEFAULT_N_TEST = 128  # test pairs for ablation_delta when the circuit does not record its own


# ---------------------------------------------------------------------------- helpers


def _r(x: float, digits: int = 6) -> float | None:
    """A JSON-friendly float: ``digits`` significant digits, None for inf/nan."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


class _Decoder:
    """``tokenizer.decode([id])`` with a cache (a snippet repeats many tokens)."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        out = []
        for t in ids:
            t = int(t)
            if t not in self.cache:
                try:
                    self.cache[t] = self.tok.decode([t])
                except Exception:  # noqa: BLE001 - a label only
                    self.cache[t] = str(self.tok.id_to_token(t) or f"<{t}>")
            out.append(self.cache[t])
        return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _gather_columns(cache: dict, hooks: list[str], cols: dict[str, torch.Tensor]) -> torch.Tensor:
    """Kept columns of every hook, concatenated in ``hooks`` order: (B, T, J)."""
    parts = []
    for h in hooks:
        act = cache[h]
        act = act.reshape(act.shape[0], act.shape[1], -1)  # (B, T, width); q/k/v flatten (H, Dh)
        parts.append(act[..., cols[h].to(act.device)])
    return torch.cat(parts, dim=-1).float().cpu()


def _hook_columns(nodes: NodeSet, flats: list[int]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Hooks in first-seen order and each hook's local column indices, in ``flats`` order."""
    hooks: list[str] = []
    cols: dict[str, list[int]] = {}
    for f in flats:
        s = nodes.site_at(f)
        if s.hook not in cols:
            hooks.append(s.hook)
            cols[s.hook] = []
        cols[s.hook].append(f - s.start)
    return hooks, {h: torch.tensor(c, dtype=torch.long) for h, c in cols.items()}


# ---------------------------------------------------------------------------- snippets


@torch.no_grad()
def node_activations(model, windows: torch.Tensor, nodes: NodeSet, flats: list[int],
                     batch_size: int = 32) -> torch.Tensor:
    """Activations of the given nodes at every position of ``windows`` (N, T) -> (N, T, J).

    One pass per batch caching just the hooks the nodes live on, gathered into column
    ``j`` = node ``flats[j]``.  The pass stops after the last block holding one of those
    hooks (``stop_at_layer``): later blocks and the unembedding (a quarter of a small
    model's cost) are never run.
    """
    hooks, cols = _hook_columns(nodes, flats)
    order = [f for h in hooks for f in _flats_of(nodes, h, cols[h])]
    pos = {f: j for j, f in enumerate(order)}
    perm = torch.tensor([pos[f] for f in flats], dtype=torch.long)
    stop = 1 + max(nodes.site(h).layer for h in hooks)
    device = _device(model)
    out = []
    for start in range(0, windows.shape[0], batch_size):
        chunk = windows[start:start + batch_size].to(device)  # (b, T)
        _, cache = model.run_with_cache(chunk, names_filter=hooks, stop_at_layer=stop)
        out.append(_gather_columns(cache, hooks, cols)[..., perm])  # (b, T, J)
    return torch.cat(out) if out else torch.zeros(0, windows.shape[1], len(flats))


def _flats_of(nodes: NodeSet, hook: str, local: torch.Tensor) -> list[int]:
    s = nodes.site(hook)
    return [s.start + int(i) for i in local]


def top_snippets(acts: torch.Tensor, windows: torch.Tensor, decode, n_snippets: int,
                 context: int) -> list[dict]:
    """Snippets of one node from its activations (N, T) over ``windows`` (N, T).

    Each window contributes at most its peak ``|activation|`` position; the ``n_snippets``
    strongest windows are kept, strongest first (ties: earlier window first).
    """
    if acts.numel() == 0 or n_snippets < 1:
        return []
    peak_abs, peak_pos = acts.abs().max(dim=1)  # (N,), (N,)
    order = torch.sort(peak_abs, descending=True, stable=True).indices
    out = []
    for w in order.tolist():
        if len(out) >= n_snippets or float(peak_abs[w]) == 0.0:
            break
        p = int(peak_pos[w])
        lo = max(0, p - context + 1)
        ids = windows[w, lo:p + 1].tolist()
        vals = acts[w, lo:p + 1].tolist()
        out.append({"tokens": decode(ids), "acts": [_r(v) or 0.0 for v in vals], "max": _r(acts[w, p])})
    return out


# ---------------------------------------------------------------------------- task data


def _task_examples(circuit: Circuit, examples, n_test: int, seed: int):
    """The circuit's test examples, flat, and whether they come in (a, b) pairs.

    A registered task regenerates the very test items pruning reported on (same seed and
    count); a user task needs ``examples``.  None when neither is available.
    """
    from ..tasks.base import flatten

    if examples is None:
        from ..tasks.python_tasks import get_task

        try:
            task = get_task(circuit.task)
        except UserError:
            return None, False
        return flatten(task.generate(n_test, seed=seed, split="test")), True
    items = list(examples)
    if not items:
        return None, False
    flat, group = flat_examples(items, circuit.task)
    return flat, group == 2


@torch.no_grad()
def _class_acts(run, batch, paired: bool, examples, nodes: NodeSet, flats: list[int],
                logit_ids: dict[str, int]) -> dict[str, dict[str, list[float]]]:
    """Per node id: activation at each prompt's last position, split by class."""
    model = run.model
    n = len(batch)
    if paired:
        keep_rows = list(range(min(n, 2 * CLASS_CAP)))
        labels = ["a" if i % 2 == 0 else "b" for i in keep_rows]
    else:
        labels_all = [ex.correct for ex in examples]
        seen: dict[str, int] = {}
        keep_rows, labels = [], []
        for i, lab in enumerate(labels_all):
            if seen.get(lab, 0) < CLASS_CAP:
                seen[lab] = seen.get(lab, 0) + 1
                keep_rows.append(i)
                labels.append(lab)
    sub = batch.select(keep_rows).to(_device(model))
    hooks, cols = _hook_columns(nodes, flats) if flats else ([], {})
    logits, cache = model.run_with_cache(sub.tokens, names_filter=hooks)
    rows = torch.arange(len(sub), device=sub.tokens.device)
    out: dict[str, dict[str, list[float]]] = {}
    classes = list(dict.fromkeys(labels))
    if flats:
        acts = _gather_columns(cache, hooks, cols)[rows.cpu(), sub.last_pos.cpu()]  # (R, J)
        order = [f for h in hooks for f in _flats_of(nodes, h, cols[h])]
        for j, f in enumerate(order):
            out[nodes.name(f)] = {c: [_r(v) for v, lab in zip(acts[:, j].tolist(), labels) if lab == c]
                                  for c in classes}
    last = logits[rows, sub.last_pos].float().cpu()  # (R, V)
    for nid, t in logit_ids.items():
        out[nid] = {c: [_r(v) for v, lab in zip(last[:, t].tolist(), labels) if lab == c] for c in classes}
    return out


class _RowMasked(MaskedModel):
    """A masked model with one keep vector per group of rows: mask (R, n) over a batch of
    R x P rows laid out group-major (row ``r * P + p`` uses ``mask[r]``).

    Ablating R nodes one at a time then costs one forward of R x P rows instead of R
    forwards of P rows: the same arithmetic, a fraction of the per-op overhead.
    """

    def hooks(self, mask: torch.Tensor, sources: dict | None = None) -> list[tuple]:
        if sources is not None:
            raise UserError("node ablation effects are not available for circuits pruned with "
                            "resample ablation yet; prune with --ablation mean or zero")
        if mask.dim() != 2 or mask.shape[1] != self.nodes.n or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool (R, {self.nodes.n}) tensor, got {tuple(mask.shape)}")
        R = mask.shape[0]
        hooks = []
        for site in self.nodes.sites:
            part = mask[:, site.start:site.stop]  # (R, width)
            if bool(part.all()):
                continue  # every row keeps the whole site: nothing to replace
            base = None if self.baseline is None else self.baseline[site.start:site.stop]

            def fn(x: torch.Tensor, hook, part=part, base=base) -> torch.Tensor:
                shape = x.shape  # (R*P, T, width) or (R*P, T, H, Dh)
                xr = x.reshape(R, shape[0] // R, shape[1], -1)  # (R, P, T, width)
                m = part.to(x.device)[:, None, None, :]  # (R, 1, 1, width)
                b = (torch.zeros((), dtype=x.dtype, device=x.device) if base is None
                     else base.to(x.device, x.dtype))
                return torch.where(m, xr, b).reshape(shape)
            hooks.append((site.hook, fn))
        return hooks


@torch.no_grad()
def _ablation_deltas(model, baseline, circuit: Circuit, batch, flats: list[int], nodes: NodeSet,
                     bar=None, max_tokens: int = 1 << 15, chunk_prompts: int = 64) -> dict[str, float]:
    """Calibrated circuit loss with each node also ablated, minus the circuit's loss.

    The cost is one masked forward per node over the test prompts, so three savings:
    prompts are sorted by length and run in chunks trimmed to their longest (prompts of
    one task vary about twofold); a node in block ``L`` leaves blocks before ``L``
    unchanged, so its forward starts from the circuit's cached input of block ``L``
    (``start_at_layer``); and several nodes share one forward (``_RowMasked``, up to
    ``max_tokens`` tokens).  Each forward also carries the unablated circuit as its first
    row group, so a node is compared with exactly the same arithmetic: a node with no
    effect gets exactly 0.
    """
    if not flats:
        return {}
    masked = _RowMasked(model, baseline, nodes)
    keep = circuit.keep.to(torch.bool)
    P = len(batch)
    by_layer: dict[int, list[int]] = {}
    for f in flats:
        by_layer.setdefault(nodes.layer(f), []).append(f)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in sorted(by_layer)]
    abl = {f: torch.zeros(P) for f in flats}  # correct-minus-incorrect per prompt, node ablated
    base = {f: torch.zeros(P) for f in flats}  # the same, circuit only, from the same forwards
    order = torch.argsort(batch.last_pos, stable=True)
    units = []  # (chunk's prompts, the chunk, block L's cached input, L, the nodes ablated in one forward)
    for start in range(0, P, chunk_prompts):
        idx = order[start:start + chunk_prompts]
        sub = batch.select(idx).to(_device(model))  # trimmed to this chunk's longest prompt
        C, T = sub.tokens.shape
        # sites the circuit ablates whole stay ablated with any node removed: their work is skipped
        with skipping(skippable(model, nodes, keep)):
            _, cache = model.run_with_cache(sub.tokens, names_filter=names, fwd_hooks=masked.hooks(keep[None]),
                                            stop_at_layer=max(by_layer) + 1)
        per = max(1, max_tokens // (C * T) - 1)  # ablated row groups per forward
        units += [(idx, sub, cache[f"blocks.{layer}.hook_resid_pre"], layer, group_all[g:g + per])
                  for layer, group_all in sorted(by_layer.items()) for g in range(0, len(group_all), per)]

    def unit_diffs(lane_model, unit) -> torch.Tensor:
        _, sub, resid, layer, group = unit
        with skipping(skippable(lane_model, nodes, keep)):
            return _group_diffs(lane_model, masked, keep, resid, layer, group, sub)  # (R, C)

    for (idx, _, _, _, group), diff in zip(units, map_model(model, unit_diffs, units)):  # side by side in lanes
        for r, f in enumerate(group, start=1):
            abl[f][idx] = diff[r]
            base[f][idx] = diff[0]
    sign = orientation(batch)
    cal = circuit.calibration

    def loss(d: torch.Tensor) -> float:
        return diff_loss(calibrated_diff(d, sign, cal["scale"], cal["shift"]))

    out = {}
    for f in flats:
        out[nodes.name(f)] = loss(abl[f]) - loss(base[f])
        if bar is not None:
            bar.update(1)
    return out


def _group_diffs(model, masked: _RowMasked, keep: torch.Tensor, resid: torch.Tensor, layer: int,
                 group: list[int], sub) -> torch.Tensor:
    """Answer differences (R, C) of the circuit (row 0) and of the circuit less each node of
    ``group`` (rows 1..), run from block ``layer``'s input ``resid`` (C, T, D) in one forward
    of ``model`` (the masked model's or a lane's copy of it)."""
    R, C = len(group) + 1, len(sub)
    masks = keep[None].repeat(R, 1)  # (R, n); row group 0 is the circuit itself
    masks[torch.arange(1, R), torch.tensor(group)] = False
    with model.hooks(masked.hooks(masks)):  # node masks: the same at every position
        last = model(resid.repeat(R, 1, 1), start_at_layer=layer, tokens=sub.tokens.repeat(R, 1),
                     last_pos=sub.last_pos.repeat(R), last_only=True)  # (R*C, V)
    return answer_diff(last.view(R, C, -1), sub).float().cpu()  # (R, C)


# ---------------------------------------------------------------------------- patterns


@torch.no_grad()
def head_patterns(masked: MaskedModel, keep: torch.Tensor, tokens: torch.Tensor,
                  heads: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """For each (layer, head): the pattern from the kept q/k channels only, and the head's
    whole pattern, both in the circuit's forward pass on ``tokens`` (1, T); each (T, T)."""
    model = masked.model
    nodes = masked.nodes
    layers = sorted({layer for layer, _ in heads})
    names = [f"blocks.{i}.attn.{h}" for i in layers for h in ("hook_q", "hook_k", "hook_pattern")]
    _, cache = model.run_with_cache(tokens.to(_device(model)), names_filter=names, fwd_hooks=masked.hooks(keep),
                                    stop_at_layer=layers[-1] + 1)
    Dh = nodes.d_head
    out = {}
    for layer, h in heads:
        q = cache[f"blocks.{layer}.attn.hook_q"][:, :, [h]]  # (1, T, 1, Dh), after masking
        k = cache[f"blocks.{layer}.attn.hook_k"][:, :, [h]]
        qs, ks = nodes.site(f"blocks.{layer}.attn.hook_q"), nodes.site(f"blocks.{layer}.attn.hook_k")
        kept = keep[qs.start + h * Dh: qs.start + (h + 1) * Dh] | keep[ks.start + h * Dh: ks.start + (h + 1) * Dh]
        ch = kept.nonzero().flatten()
        sel = ch.to(q.device)
        pat = model.blocks[layer].attn.pattern(q[..., sel], k[..., sel], heads=[h])[0, 0]  # (T, T)
        full = cache[f"blocks.{layer}.attn.hook_pattern"][0, h]  # (T, T)
        out[(layer, h)] = {"kept": pat.float().cpu(), "full": full.float().cpu(), "channels": ch}
    return out


def _matrix(m: torch.Tensor) -> list[list[float]]:
    return [[_r(v) or 0.0 for v in row] for row in m.tolist()]


# ---------------------------------------------------------------------------- main entry


def compute_details(run, circuit: Circuit | dict, n_snippets: int = 8, n_windows: int = 256,
                    context: int = 12, seed: int | None = None, progress: bool = True,
                    examples: Sequence | None = None, n_test: int | None = None,
                    windows: torch.Tensor | None = None) -> dict:
    """The ``"details"`` object of a circuit (see the module docstring).

    ``run`` is a loaded ``Run``; ``circuit`` a ``Circuit`` or its JSON.  Task evidence
    (class activations, ablation deltas, patterns) uses the task's test items: those of a
    registered task are regenerated with ``seed`` (default: the circuit's pruning seed)
    and ``n_test`` pairs (default: the circuit's own count), so ``ablation_delta`` is
    measured on the items behind the circuit's reported loss.  A user task passes
    ``examples`` (``TaskItem`` pairs or ``TaskExample``); without them only snippets are
    computed.  ``windows`` (N, T) overrides the validation sample for snippets.
    """
    from tqdm.auto import tqdm

    if isinstance(circuit, dict):
        circuit = Circuit.from_json(circuit)
    circuit.attach(run)  # checks the model shape matches
    run.model.eval()
    nodes = circuit.node_set
    flats = circuit.keep.nonzero().flatten().tolist()
    decode = _Decoder(run.tokenizer)
    seed = int(circuit.seed if seed is None else seed)
    n_test = int(n_test or circuit.settings.get("n_test") or DEFAULT_N_TEST)
    logit_ids = _logit_ids(circuit, run.model.cfg.vocab_size)
    ex, paired = _task_examples(circuit, examples, n_test, seed)
    batch = encode_for_run(run, ex, circuit.task) if ex else None
    details: dict[str, dict[str, Any]] = {nodes.name(f): {} for f in flats}
    details.update({nid: {} for nid in logit_ids})

    bar = tqdm(total=2 + (len(flats) if batch is not None else 0), desc=f"details {circuit.task}",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    try:
        # AbsTopK by the C kernel (the same activations, faster), the ablations side by side in lanes
        with kernel_sites(run.model), spread(run.model, default_lanes(0)):
            if flats:  # 1. one pass over the validation sample
                if windows is None:
                    from ..circuits.masking import val_tokens

                    windows = val_windows(val_tokens(run), n_windows, run.model.cfg.block_size)
                _add_snippets(details, run.model, nodes, flats, windows, decode, n_snippets, context)
            bar.update(1)
            if batch is not None:
                # 2. one pass over (up to) 2 x CLASS_CAP test prompts
                for nid, classes in _class_acts(run, batch, paired, ex, nodes, flats, logit_ids).items():
                    details[nid]["class_acts"] = classes
                bar.update(1)
                _add_patterns(details, circuit, run.model, flats, batch, decode)  # 3. one forward
                # 4. one masked forward over the test items per node
                deltas = _ablation_deltas(run.model, circuit.baseline(), circuit, batch, flats, nodes, bar)
                for nid, d in deltas.items():
                    if math.isfinite(d):
                        details[nid]["ablation_delta"] = _r(d)
    finally:
        bar.close()
    return _prune_empty(details)


def _logit_ids(circuit: Circuit, vocab_size: int) -> dict[str, int]:
    """The circuit's logit nodes: id -> token id."""
    return {str(n["id"]): int(n["index"]) for n in circuit.nodes
            if isinstance(n, dict) and n.get("site") == "logit" and isinstance(n.get("index"), int)
            and 0 <= n["index"] < vocab_size}


def _add_snippets(details: dict, model, nodes: NodeSet, flats: list[int], windows: torch.Tensor, decode,
                  n_snippets: int, context: int) -> None:
    """Each kept node's strongest snippets over ``windows`` (N, T), from one pass."""
    acts = node_activations(model, windows, nodes, flats)  # (N, T, J)
    for j, f in enumerate(flats):
        snips = top_snippets(acts[..., j], windows, decode, n_snippets, context)
        if snips:
            details[nodes.name(f)]["snippets"] = snips


def _add_patterns(details: dict, circuit: Circuit, model, flats: list[int], batch, decode) -> None:
    """The attention pattern of every head with a kept q/k/v channel, on the first test prompt."""
    nodes = circuit.node_set
    qkv = [(f, nodes.site_at(f)) for f in flats if nodes.kind(f) in ("q", "k", "v")]
    heads = sorted({(s.layer, s.head(f - s.start)) for f, s in qkv})
    if not heads:
        return
    first = batch.select([0])
    tokens = first.tokens[:, :int(first.last_pos[0]) + 1]  # (1, T)
    toks = decode(tokens[0].tolist())
    masked = MaskedModel(model, circuit.baseline(), nodes)
    pats = head_patterns(masked, circuit.keep.to(torch.bool), tokens, heads)
    for f, s in qkv:
        h = s.head(f - s.start)
        p = pats[(s.layer, h)]
        if s.kind == "v":
            title = f"Layer {s.layer} head {h}'s attention in the circuit, on a test prompt"
            matrix = p["full"]
        else:
            chans = ", ".join(str(int(c)) for c in p["channels"])
            title = f"Layer {s.layer} head {h}, scores from the circuit's q/k channels ({chans}) only, on a test prompt"
            matrix = p["kept"]
        details[nodes.name(f)]["pattern"] = {"tokens": toks, "matrix": _matrix(matrix), "title": title}


def _prune_empty(details: dict) -> dict:
    return {k: v for k, v in details.items() if v}


def attach_details(run_dir_or_run, task: str, **kwargs) -> Path:
    """Compute a saved circuit's details and rewrite ``circuits/<task>/circuit.json`` in place.

    Every other field of the file is kept as it was; the write is atomic.  Extra keyword
    arguments go to :func:`compute_details`.  Returns the circuit file's path.
    """
    from ..io import atomic_write_json, read_json

    if hasattr(run_dir_or_run, "model"):
        run = run_dir_or_run
    else:
        from ..run import load_run

        run = load_run(run_dir_or_run)
    path = RunDir(run.path).circuit(task)
    raw = read_json(path, what="circuit file")
    circuit = Circuit.from_json(raw, source=str(path))
    raw["details"] = compute_details(run, circuit, **kwargs)  # already plain JSON (no inf/nan)
    atomic_write_json(path, raw)
    return path
