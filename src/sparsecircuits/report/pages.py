"""The report's pages: the run's index, one page per circuit, two circuits side by side.

Each ``render_*`` returns a whole HTML page as text; writing it is ``html.py``'s job.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..circuit_sizes import size_summary
from .bridges import pair_section, steering_section
from .charts import svg_line_chart
from .format import _cards, _config_tables, _e, _flatten, _fmt, _loss, _pct, _si, _table, _value_html
from .frame import _page
from .graph import circuit_view
from .loading import INDEX, CircuitEntry, RunData
from .methods import methods_section, variant_of
from .plots import loss_vs_size_html
from .stability import core_ids, stability_section
from .timeline import timeline_anchor, timelines_section
from .values import _int, _num

_FORCED_TIP = ("the full model did not reach the accuracy bar on this task; pruning was forced, "
               "so read this circuit with care")


def _series(metrics: list[dict], xkey: str, ykey: str) -> list[tuple[float, float]]:
    return [(r[xkey], r[ykey]) for r in metrics if _num(r.get(xkey)) is not None and _num(r.get(ykey)) is not None]


def _training_charts(metrics: list[dict]) -> str:
    if not metrics:
        return "<p class=\"muted\">No metrics.jsonl (or it is empty).</p>"
    with_tokens = sum(1 for r in metrics if _num(r.get("tokens")) is not None)
    xkey = "tokens" if with_tokens >= max(1, len(metrics) // 2) else "step"
    train = _series(metrics, xkey, "train_loss")
    val = _series(metrics, xkey, "val_loss")
    charts = [
        svg_line_chart([{"name": "train", "points": train, "color": "#2563eb"},
                        {"name": "val", "points": val, "color": "#ea580c", "markers": len(val) <= 60}],
                       title="loss (nats/token)", x_label=xkey, y_label="loss", cls="loss-curve"),
        svg_line_chart([{"name": "nonzero fraction", "points": _series(metrics, xkey, "nonzero_frac"), "color": "#16a34a"},
                        {"name": "target density", "points": _series(metrics, xkey, "density"), "color": "#64748b",
                         "dash": True}],
                       title="nonzero weight fraction", x_label=xkey, y_label="fraction", log_y=True,
                       cls="nonzero-curve"),
        svg_line_chart([{"name": "lr", "points": _series(metrics, xkey, "lr"), "color": "#9333ea"}],
                       title="learning rate", x_label=xkey, y_label="lr", cls="lr-curve"),
        svg_line_chart([{"name": "tokens/s", "points": _series(metrics, xkey, "tokens_per_s"), "color": "#0891b2"}],
                       title="throughput", x_label=xkey, y_label="tokens/s", cls="speed-curve"),
    ]
    return "<div class=\"charts\">" + "".join(f"<div class=\"chart-box\">{c}</div>" for c in charts) + "</div>"


def _last(metrics: list[dict], key: str) -> Any:
    for r in reversed(metrics):
        if _num(r.get(key)) is not None:
            return r[key]
    return None


def _checks_summary(data: dict) -> str:
    checks = data.get("checks")
    if not isinstance(checks, dict) or not checks:
        return "\u2013"
    flags = sum(1 for c in checks.values() if isinstance(c, dict) and c.get("verdict") != "pass")
    if flags:
        return f"<span class=\"badge flag\">{flags} flag{'s' if flags > 1 else ''}</span>"
    return f"<span class=\"badge pass\">{len(checks)} pass</span>"


def _forced_badge(forced: Any) -> str:
    if forced is True:
        return f"<span class=\"badge flag\" title=\"{_FORCED_TIP}\">forced</span>"
    return "no" if forced is False else "\u2013"


def _size_note(sized: list[dict]) -> str:
    """The geometric mean over circuits that met the target on held-out items; the others beside it."""
    if not sized:
        return ""
    s = size_summary(sized)
    gm = s["geomean_edges"]
    text = (f"Geometric mean circuit size over the {len(s['counted'])} circuit(s) that met the target on "
            f"held-out items: <b>{gm:.1f}</b> edges (nonzero weights between kept nodes)." if gm is not None
            else "No circuit met its target on held-out items, so there is no geometric mean of sizes.")
    if s["excluded"]:
        text += " Not in the mean: " + "; ".join(
            f"{_e(x['task'])} ({_e(_fmt(_int(x['n_edges'])))} edges, {_e(x['reason'])})" for x in s["excluded"]) + "."
    return f"<p class=\"muted\">{text}</p>"


def _task_table(run: RunData) -> str:
    rows = []
    sized: list[dict] = []
    seen_tasks = set()
    for c in run.circuits:
        full = run.tasks.get(c.task, {})
        seen_tasks.add(c.task)
        if c.data is None:
            rows.append([_e(c.task), _pct(full.get("accuracy")), _loss(full.get("loss")),
                         f"<span class=\"badge flag\">unreadable</span> <span class=\"muted\">{_e(c.error)}</span>",
                         "", "", "", "", "", ""])
            continue
        variant = variant_of(c)  # the task pruned another way (TASK@attribution): beside, not in the mean
        link = f"<a href=\"{_e(quote(c.page))}\">{_e(c.task)}</a>" + (f" ({_e(variant)})" if variant else "")
        m = c.data.get("metrics") if isinstance(c.data.get("metrics"), dict) else {}
        acc = full.get("accuracy", m.get("full_accuracy"))
        floss = full.get("loss", m.get("full_loss"))
        ne = _int(m.get("n_edges"))
        if not variant:
            sized.append({"task": c.task, "n_edges": ne, "n_nodes": _int(m.get("n_nodes")),
                          "circuit_loss": _num(m.get("circuit_loss")), "target_loss": _num(m.get("target_loss")),
                          "forced": c.data.get("forced") is True})
        rows.append([link, _pct(acc), _loss(floss), _e(_fmt(_int(m.get("n_nodes")))), _e(_fmt(ne)),
                     _loss(m.get("circuit_loss")), _pct(m.get("circuit_accuracy")), _loss(m.get("target_loss")),
                     _forced_badge(c.data.get("forced")), _checks_summary(c.data)])
    for name in sorted(set(run.tasks) - seen_tasks):
        t = run.tasks[name]
        rows.append([_e(name), _pct(t.get("accuracy")), _loss(t.get("loss")), "\u2013", "\u2013", "\u2013",
                     "\u2013", "\u2013", "\u2013", "\u2013"])
    if not rows:
        return ("<p class=\"muted\">No task results yet: run <code>sparsecircuits tasks</code> and "
                "<code>sparsecircuits prune</code>.</p>")
    headers = ["task", "full acc", "full loss", "circuit nodes", "circuit edges", "circuit loss",
               "circuit acc", "target", "forced", "checks"]
    return _table(headers, rows, numeric=range(1, 8), cls="data tasks") + _size_note(sized)


def _measures_section(measures: dict) -> str:
    """The model's own measures (``sparsecircuits eval``): kurtosis, dead nodes, AbsTopK density."""
    if not measures:
        return ""
    cards = _cards([
        ("residual kurtosis", _e(_fmt(_num(measures.get("residual_kurtosis")), 3)), ""),
        ("dead neurons", _e(_pct(measures.get("dead_neuron_frac"))), ""),
        ("dead q/k/v channels", _e(_pct(measures.get("dead_attn_channel_frac"))), ""),
    ])
    density = measures.get("activation_density")
    table = ""
    if isinstance(density, dict) and density:
        table = _table(["AbsTopK site", "nonzero fraction"],
                       [[_e(str(k)), _e(_fmt(_num(v), 3))] for k, v in density.items()], numeric=[1], cls="data")
    return f"<section><h2>The model's own measures</h2>{cards}{table}</section>"


def render_index(run: RunData) -> str:
    m = run.metrics
    cards = _cards([
        ("steps", _e(_fmt(_int(_last(m, "step")))), ""),
        ("tokens", _e(_si(_num(_last(m, "tokens")))), ""),
        ("train loss", _e(_loss(_last(m, "train_loss"))), ""),
        ("val loss", _e(_loss(_last(m, "val_loss"))), ""),
        ("nonzero fraction", _e(_fmt(_last(m, "nonzero_frac"), 3)), ""),
        ("circuits", _e(str(sum(1 for c in run.circuits if c.data is not None))), ""),
    ])
    warn = ""
    if run.warnings:
        warn = ("<section class=\"warnings\"><h2>Problems reading the run</h2><ul>"
                + "".join(f"<li>{_e(w)}</li>" for w in run.warnings) + "</ul></section>")
    body = (f"<header class=\"top\"><h1>{_e(run.name)}</h1><span class=\"muted\">sparsecircuits run report</span></header>"
            f"<main>{cards}{warn}"
            f"<section><h2>Training</h2>{_training_charts(m)}</section>"
            f"{_measures_section(run.measures)}{pair_section(run.bridge)}"
            f"<section><h2>Tasks and circuits</h2>{_task_table(run)}</section>"
            f"{methods_section(run)}"
            f"{timelines_section(run.timelines, {c.task: c.page for c in run.circuits if c.data and not variant_of(c)})}"
            f"<section><h2>Config</h2>{_config_tables(run.config)}</section></main>")
    return _page(f"{run.name} \u2014 sparsecircuits report", body, body_class="index-page")


def _metric_cards(m: dict, model: dict) -> str:
    target = _num(m.get("target_loss"))
    closs = _num(m.get("circuit_loss"))
    ok = "" if target is None or closs is None else ("good" if closs <= target else "bad")
    target_html = f" <small>/ target {_e(_loss(target))}</small>" if target is not None else ""
    others = [(key, label) for key, label in (("n_residual_links", "residual"), ("n_qk_pairs", "q.k"),
                                              ("n_io_edges", "embed/logit")) if _int(m.get(key)) is not None]
    links = " \u00b7 ".join(f"{_e(_fmt(_int(m.get(key))))} {label}" for key, label in others)
    shape = " \u00b7 ".join(f"{k} {model[k]}" for k in ("n_layer", "d_model", "n_head") if k in model)
    return _cards([
        ("nodes", _e(_fmt(_int(m.get("n_nodes")))), ""),
        ("edges", _e(_fmt(_int(m.get("n_edges")))) + " <small>nonzero weights</small>", ""),
        ("other links", links or "\u2013", ""),
        ("circuit loss", _e(_loss(closs)) + target_html, ok),
        ("full-model loss", _e(_loss(m.get("full_loss"))), ""),
        ("circuit acc", _e(_pct(m.get("circuit_accuracy"))), ""),
        ("full-model acc", _e(_pct(m.get("full_accuracy"))), ""),
        ("ablation", _e(m.get("ablation", "\u2013")), ""),
        ("model", _e(shape or "\u2013"), ""),
    ])


def _checks_table(checks: Any) -> str:
    if not isinstance(checks, dict) or not checks:
        return ""
    rows = []
    for name, c in checks.items():
        if not isinstance(c, dict):
            continue
        verdict = str(c.get("verdict", ""))
        badge = f"<span class=\"badge {'pass' if verdict == 'pass' else 'flag'}\">{_e(verdict or '?')}</span>"
        rows.append([f"<code>{_e(name)}</code>", _e(_fmt(c.get("value"))), _e(_fmt(c.get("threshold"))), badge,
                     _e(c.get("detail", ""))])
    return ("<section class=\"checks\"><h2>Faithfulness report card</h2>"
            + _table(["check", "value", "threshold", "verdict", "detail"], rows, numeric=(1, 2), cls="data checks")
            + "</section>")


EMPTY_NOTE = ("The empty circuit meets the target and every size target on the train items: the direct path "
              "from the token embeddings to the logits, which no node mask touches, decides this task. No mask "
              "was optimised, and there is no size-vs-target or loss-vs-size curve to draw.")


def _circuit_charts(m: dict) -> str:
    if (m.get("settings") or {}).get("empty_meets_all_targets") is True:
        return f"<section><h2>Size and pruning</h2><p class=\"muted empty-circuit\">{_e(EMPTY_NOTE)}</p></section>"
    charts = []
    svt = [r for r in (m.get("size_vs_target") or []) if isinstance(r, dict)]
    if svt:
        charts.append(svg_line_chart(
            [{"name": "edges", "points": [(r.get("target_loss"), r.get("n_edges")) for r in svt],
              "markers": True, "color": "#2563eb"},
             {"name": "nodes", "points": [(r.get("target_loss"), r.get("n_nodes")) for r in svt],
              "markers": True, "color": "#ea580c"}],
            title="circuit size vs target loss", x_label="target loss (nats)", y_label="count", log_y=True,
            vline=_num(m.get("target_loss")), vline_label="target", cls="size-vs-target"))
    curve = [r for r in (m.get("curve") or []) if isinstance(r, dict)]
    if curve:
        charts.append(svg_line_chart([{"name": "task loss", "points": [(r.get("step"), r.get("loss")) for r in curve]}],
                                     title="pruning: task loss", x_label="step", y_label="loss", cls="prune-loss"))
        charts.append(svg_line_chart([{"name": "open nodes", "points": [(r.get("step"), r.get("n_open")) for r in curve],
                                       "color": "#16a34a"}],
                                     title="pruning: open nodes", x_label="step", y_label="nodes", log_y=True,
                                     cls="prune-open"))
    plot = loss_vs_size_html(m)
    if plot:
        charts.append(plot)
    if not charts:
        return ""
    return ("<section><h2>Size and pruning</h2><div class=\"charts\">"
            + "".join(f"<div class=\"chart-box\">{c}</div>" for c in charts) + "</div></section>")


_VIEWER_HELP = ("Data flows left to right; the whole circuit is fitted to the pane. Wheel or +/- zoom, drag or "
                "the arrow keys pan, F or Fit fits. Click a node for its snippets, class activations, ablation "
                "effect and attention pattern; its ancestors and descendants stay lit. Shift-click or shift-drag "
                "selects several, to group into a named supernode. Esc clears the selection.")


def viewer_html(source: str = "circuit-data", compact: bool = False) -> str:
    """The viewer's frame: toolbar, graph pane, panel. The script fills it from the JSON block ``source``."""
    names = f"names-{_e(source)}"
    return (
        f"<div class=\"viewer{' compact' if compact else ''}\" data-source=\"{_e(source)}\">"
        "<div class=\"toolbar\">"
        "<button type=\"button\" data-act=\"fit\" title=\"fit the whole circuit (F)\">Fit</button>"
        f"<input type=\"search\" data-role=\"search\" list=\"{names}\" placeholder=\"find a node or hook\" "
        "aria-label=\"find a node or hook name\" autocomplete=\"off\">"
        f"<datalist id=\"{names}\" data-role=\"names\"></datalist><span class=\"muted\" data-role=\"search-info\"></span>"
        "<label class=\"tool\" title=\"hide links weaker than a quantile of |weight|\">|w| "
        "<input type=\"range\" data-role=\"weight\" min=\"0\" max=\"99\" step=\"1\" value=\"0\" aria-label=\"edge filter\">"
        " <span data-role=\"weight-value\">all</span></label>"
        "<label class=\"tool\"><input type=\"checkbox\" data-role=\"residual\" checked> residual links</label>"
        "<button type=\"button\" data-act=\"unfold\">Unfold inputs/outputs</button>"
        "<button type=\"button\" data-act=\"group\" title=\"group the selected nodes into a named supernode\">Group\u2026</button>"
        "<button type=\"button\" data-act=\"export\" title=\"save supernodes and notes as annotations.json\">Export</button>"
        "<label class=\"tool file\" title=\"load an annotations.json\">Import <input type=\"file\" data-role=\"import\" "
        "accept=\".json,application/json\"></label>"
        "<span class=\"muted count\" data-role=\"edge-count\"></span></div>"
        "<div class=\"legend\" data-role=\"legend\"></div>"
        "<div class=\"viewer-body\"><div class=\"graph\" data-role=\"graph\" tabindex=\"0\" role=\"application\" "
        "aria-label=\"circuit graph: arrows pan, + and - zoom, F fits\"></div>"
        "<aside class=\"panel\" data-role=\"panel\" aria-live=\"polite\"></aside></div>"
        "<div class=\"hover-line muted\" data-role=\"hover\"></div>"
        "<noscript><p>The circuit graph needs JavaScript; the tables below do not.</p></noscript></div>"
    )


def circuit_payload(data: dict, task: str, annotations: dict | None = None,
                    stability: dict | None = None) -> tuple[dict, list[str]]:
    """The JSON the viewer reads for one circuit, and the problems found reading it;
    ``core`` lists the nodes of the stable core across seeds (``stability.json``)."""
    m = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    view, problems = circuit_view(data)
    core = core_ids(stability)
    view.update({"task": task, "full_loss": _num(m.get("full_loss")), "circuit_loss": _num(m.get("circuit_loss")),
                 "annotations": annotations, "core": [i for i, n in enumerate(view["nodes"]) if n["id"] in core]})
    return view, problems


def _timeline_link(run: RunData, entry: CircuitEntry) -> str:
    """A pointer to the task's block in "circuits during training", when it has one."""
    if entry.task not in run.timelines or variant_of(entry):
        return ""
    return (f"<p class=\"muted\"><a href=\"{INDEX}#{timeline_anchor(entry.task)}\">How this task's circuit formed "
            "during training</a> (the circuit at every kept checkpoint).</p>")


def render_circuit(run: RunData, entry: CircuitEntry) -> str:
    data = entry.data or {}
    m = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    payload, problems = circuit_payload(data, entry.task, entry.annotations, entry.stability)
    nodes = payload["nodes"]
    forced = ""
    if data.get("forced") is True:
        forced = f" {_forced_badge(True)}"
    settings = m.get("settings") if isinstance(m.get("settings"), dict) else {}
    extra = dict(settings)
    for key in ("seed", "calibration", "seconds"):
        if key in m:
            extra[key] = m[key]
    settings_html = ""
    if extra:
        rows = [[f"<code>{_e(k)}</code>", _value_html(v)] for k, v in _flatten(extra)]
        settings_html = "<section><h2>Pruning settings</h2>" + _table(["setting", "value"], rows, cls="data kv") + "</section>"
    warn = ""
    if problems:
        warn = "<section class=\"warnings\"><ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul></section>"
    n_detail = sum(1 for n in nodes if n.get("details"))
    body = (
        f"<header class=\"top\"><a class=\"back\" href=\"{INDEX}\">\u2190 {_e(run.name)}</a>"
        f"<h1>{_e(entry.task)}</h1>{forced}<span class=\"muted\">circuit</span></header>"
        f"<main>{_metric_cards(m, model)}{warn}{_timeline_link(run, entry)}"
        "<section><h2>Circuit</h2>"
        f"<p class=\"muted\">{_e(_VIEWER_HELP)} ({n_detail} of {len(nodes)} nodes have details.)</p>"
        f"{viewer_html()}</section>"
        f"{_checks_table(data.get('checks'))}{stability_section(entry.stability, len(payload['core']))}"
        f"{steering_section(run.bridge, entry.task)}"
        f"{_circuit_charts(m)}{settings_html}</main>"
    )
    return _page(f"{entry.task} \u2014 circuit \u2014 {run.name}", body, data=payload, script=True,
                 body_class="circuit-page")


def render_compare(a: dict, b: dict, *, label_a: str = "A", label_b: str = "B",
                   annotations: tuple[dict | None, dict | None] = (None, None)) -> str:
    """One page with two circuits (two seeds, methods or checkpoints) side by side; nodes
    present in both (same id: hook and channel, or token) are marked in each."""
    task_a = a.get("task") if isinstance(a.get("task"), str) else label_a
    task_b = b.get("task") if isinstance(b.get("task"), str) else label_b
    pa, problems_a = circuit_payload(a, task_a, annotations[0])
    pb, problems_b = circuit_payload(b, task_b, annotations[1])
    ids_a = {n["id"] for n in pa["nodes"]}
    ids_b = {n["id"] for n in pb["nodes"]}
    both = ids_a & ids_b
    pa["shared"] = [i for i, n in enumerate(pa["nodes"]) if n["id"] in both]
    pb["shared"] = [i for i, n in enumerate(pb["nodes"]) if n["id"] in both]
    la = {(pa["nodes"][s]["id"], pa["nodes"][t]["id"]) for s, t, _w, _k in pa["links"]}
    lb = {(pb["nodes"][s]["id"], pb["nodes"][t]["id"]) for s, t, _w, _k in pb["links"]}
    union = len(ids_a | ids_b)
    cards = _cards([
        (f"nodes {label_a}", _e(_fmt(len(ids_a))), ""), (f"nodes {label_b}", _e(_fmt(len(ids_b))), ""),
        ("shared nodes", _e(_fmt(len(both))) + (f" <small>/ {union} ({len(both) / union:.0%})</small>" if union else ""), ""),
        (f"links {label_a}", _e(_fmt(len(la))), ""), (f"links {label_b}", _e(_fmt(len(lb))), ""),
        ("shared links", _e(_fmt(len(la & lb))), ""),
    ])
    warn = ""
    problems = [f"{label_a}: {p}" for p in problems_a] + [f"{label_b}: {p}" for p in problems_b]
    if problems:
        warn = "<section class=\"warnings\"><ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul></section>"

    def side(label: str, task: str, data: dict, source: str) -> str:
        forced = f" {_forced_badge(True)}" if data.get("forced") is True else ""
        return (f"<div class=\"side\"><h2>{_e(label)}: {_e(task)}{forced}</h2>"
                f"{viewer_html(source, compact=True)}</div>")

    body = (f"<header class=\"top\"><h1>{_e(task_a)} vs {_e(task_b)}</h1><span class=\"muted\">two circuits; "
            "nodes in both are ringed in pink, and selecting one selects it on the other side</span></header>"
            f"<main class=\"wide\">{cards}{warn}<p class=\"muted\">{_e(_VIEWER_HELP)}</p><div class=\"compare\">"
            f"{side(label_a, task_a, a, 'circuit-a')}{side(label_b, task_b, b, 'circuit-b')}</div></main>")
    return _page(f"{task_a} vs {task_b} \u2014 sparsecircuits", body, blocks={"circuit-a": pa, "circuit-b": pb},
                 script=True, body_class="compare-page")
