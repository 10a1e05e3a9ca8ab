"""The report's view of a bridged run (``bridge train``): the pair's translation errors per
location (``bridge_eval.json``) and the steering curves (``steer/TASK/NODE.json``).

The index page and every circuit page show the pair's NMSE and KL per location; a circuit
page also draws the task's steering curves (the dense model's probability of the
counterfactual answer against the strength of the edit, for the chosen node and for
random nodes of the same read: the paper's Figure 9). The curves are drawn again from
the JSON, not copied from the PNGs beside it, so the page stays one self-contained file
and shows only numbers it has checked. Like the rest of the report, every file here is
read defensively: a damaged one is a warning on the index page and hides nothing else.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from ..rundir import BRIDGE, BRIDGE_EVAL, STEER, RunDir
from .format import _cards, _e, _fmt, _table
from .plots import finished_png
from .values import _int, _num

_TERMS = (("nmse_encoder", "NMSE encoder"), ("nmse_decoder", "NMSE decoder"),
          ("kl_dense_to_sparse", "KL dense\u2192sparse tail"), ("kl_sparse_to_dense", "KL sparse\u2192dense tail"))


def read_bridge_report(rd: RunDir, read_soft, warnings: list[str]) -> dict | None:
    """``{"pair", "eval", "steer": {task: [curve, ...]}}`` for a bridged run, None for any
    other. ``read_soft(path) -> (value, error)`` is the report's tolerant JSON reader."""
    if not rd.bridge.is_file():
        return None
    pair, err = read_soft(rd.bridge)
    if err or not isinstance(pair, dict):
        warnings.append(f"{BRIDGE}: {err or 'not a JSON object'}")
        pair = {}
    evaluation = None
    if rd.bridge_eval.is_file():
        evaluation, err = read_soft(rd.bridge_eval)
        if err or not isinstance(evaluation, dict):
            warnings.append(f"{BRIDGE_EVAL}: {err or 'not a JSON object'}")
            evaluation = None
    steer: dict[str, list[dict]] = {}
    root = rd.path / STEER
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        curve, err = read_soft(path)
        problem = err or _check_curve(curve)
        if problem:
            warnings.append(f"{STEER}/{path.parent.name}/{path.name}: {problem}")
            continue
        steer.setdefault(str(curve.get("task") or path.parent.name), []).append(curve)
    return {"pair": pair, "eval": evaluation, "steer": steer}


def _check_curve(curve: Any) -> str | None:
    if not isinstance(curve, dict):
        return "not a JSON object"
    xs, ys = curve.get("strengths"), curve.get("p_counterfactual")
    if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)):
        return "missing or unequal 'strengths' and 'p_counterfactual'"
    return None


def _dense_name(pair: dict) -> str:
    dense = pair.get("dense_run")
    return Path(dense).name if isinstance(dense, str) and dense else "?"


def pair_section(bridge: dict | None) -> str:
    """The bridged pair: what it couples and its errors per location (``bridge eval``)."""
    if not bridge:
        return ""
    pair = bridge.get("pair") or {}
    ev = bridge.get("eval")
    shape = f"{_fmt(pair.get('d_dense'))} \u2192 {_fmt(pair.get('d_sparse'))}"
    cards = [("dense run", f"<code>{_e(_dense_name(pair))}</code>", ""), ("widths dense \u2192 sparse", _e(shape), ""),
             ("encoder AbsTopK k", _e(_fmt(pair.get("encoder_k"))), "")]
    if not isinstance(ev, dict):
        return (f"<section class=\"bridges\"><h2>Bridged pair</h2>{_cards(cards)}<p class=\"muted\">No "
                "measurement yet: <code>sparsecircuits bridge eval RUN</code> writes the NMSE and KL per "
                "location.</p></section>")
    cards += [("val loss sparse / dense",
               _e(f"{_fmt(_num(ev.get('sparse_val_loss')))} / {_fmt(_num(ev.get('dense_val_loss')))}"), ""),
              ("KL(dense \u2016 sparse)", _e(_fmt(_num(ev.get("kl_dense_to_sparse_model")))), "")]
    rows = []
    for r in ev.get("locations") if isinstance(ev.get("locations"), list) else []:
        if isinstance(r, dict):
            rows.append([f"<code>{_e(r.get('location'))}</code>"] + [_e(_fmt(_num(r.get(k)))) for k, _ in _TERMS])
    note = (f"<p class=\"muted\">On {_e(_fmt(_int(ev.get('tokens'))))} validation tokens. NMSE is the squared "
            "error over the target's squared norm (1 = predicting zero); a KL is from the dense model's "
            "next-token distribution to a hybrid forward that switches models once, at that location.</p>")
    table = _table(["location"] + [label for _, label in _TERMS], rows, numeric=range(1, 5))
    return f"<section class=\"bridges\"><h2>Bridged pair</h2>{_cards(cards)}{note}{table}</section>"


def steering_png(curve: dict) -> bytes:
    """Figure 9 of the paper for one node: its curve, the random nodes' and their mean, log y."""
    from matplotlib.figure import Figure

    xs = [_num(x) for x in curve["strengths"]]
    fig = Figure(figsize=(4.8, 3.0), dpi=150)
    ax = fig.subplots()

    def line(ys: Any, **kw) -> None:
        if isinstance(ys, list) and len(ys) == len(xs):
            pts = [(x, y) for x, y in zip(xs, map(_num, ys)) if x is not None and y is not None and y > 0]
            if pts:
                ax.plot(*zip(*pts), **kw)

    randoms = curve.get("random") if isinstance(curve.get("random"), dict) else {}
    for ys in randoms.values():
        line(ys, color="0.78", lw=1)
    line(curve.get("random_mean"), color="0.35", lw=1.5, ls="--", label="random (mean)")
    line(curve["p_counterfactual"], color="#2563eb", lw=2, marker="o", ms=3, label=str(curve.get("node", "node")))
    first = _num(curve["p_counterfactual"][0])
    if first is not None and first > 0:
        ax.axhline(first, color="#dc2626", lw=0.8, ls=":", label="no steering")
    ax.set_yscale("log")
    ax.set_xlabel("steering strength (toward the counterfactual)")
    ax.set_ylabel("dense P(counterfactual answer)")
    return finished_png(fig, ax)


def _curve_html(curve: dict) -> str:
    ys, rnd = curve["p_counterfactual"], curve.get("random_mean")
    rnd = rnd if isinstance(rnd, list) and len(rnd) == len(ys) else None
    ends = [0, len(ys) - 1] if len(ys) > 1 else [0]
    rows = [[_e(_fmt(_num(curve["strengths"][i]), 2)), _e(_fmt(_num(ys[i]))),
             _e(_fmt(_num(rnd[i]))) if rnd else "\u2013"] for i in ends]
    target = _num(curve.get("p_counterfactual_unsteered_on_counterfactual_prompt"))
    alt = "the dense model's probability of the counterfactual answer against steering strength"
    return (f"<h3>node <code>{_e(curve.get('node'))}</code></h3>"
            f"<img class=\"plot steering\" width=\"480\" alt=\"{_e(alt)}\" "
            f"src=\"data:image/png;base64,{base64.b64encode(steering_png(curve)).decode('ascii')}\">"
            + _table(["strength", "P(node)", "P(random, mean)"], rows, numeric=[0, 1, 2])
            + f"<p class=\"muted\">{_e(_fmt(_int(curve.get('n_prompts'))))} prompts; on the counterfactual "
              f"prompt itself the dense model gives the answer P = {_e(_fmt(target))}.</p>")


def steering_section(bridge: dict | None, task: str) -> str:
    """The circuit page's steering curves for ``task`` (``bridge steer``), with the pair."""
    if not bridge:
        return ""
    curves = (bridge.get("steer") or {}).get(task) or []
    body = "".join(_curve_html(c) for c in curves) or (
        "<p class=\"muted\">No steering curve for this task yet: <code>sparsecircuits bridge steer RUN "
        f"--task {_e(task)} --node blocks.L.hook_attn_in:C</code> edits the dense model through one "
        "residual read of this circuit.</p>")
    return (f"{pair_section(bridge)}<section class=\"bridges\"><h2>Steering the dense model</h2>"
            "<p class=\"muted\">The node's activation on the counterfactual prompt minus that on the presented "
            "one, at every token, carried through the bridge decoder into the dense model's read at the same "
            "place and added times the strength; grey lines are random channels of the same read.</p>"
            f"{body}</section>")
