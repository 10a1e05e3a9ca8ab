"""Self-contained HTML report of a run: training curves, a task table, one page per circuit.

Why self-contained: a report gets mailed, attached to a review or opened on a laptop with
no network, so every page carries its own CSS, script and data and renders from file://
with no CDN. Charts and the circuit graph are SVG written here in Python, so a page
reads fine even with scripts off; the small script in ``static/report.js`` only adds the
interaction (hover, the node panel, snippets, attention heatmaps).

Everything that came from text (tokens, snippets, task and file names, config values) is
untrusted. HTML written here goes through ``html.escape``; data for the script sits in a
``<script type="application/json">`` block with ``<``, ``>``, ``&`` and U+2028/2029
escaped; the script sets text only with ``textContent``. A Content-Security-Policy
allowing exactly the page's own script (by hash) is a second line of defence.

Inputs (all optional except ``config.json``): ``metrics.jsonl``, ``tasks.json``
(``{"tasks": {name: {"accuracy", "loss"}}}``) and ``circuits/<task>/circuit.json``.
Malformed pieces are reported on the index page instead of failing the whole report.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from ..circuit_sizes import size_summary, upgrade_circuit_json
from ..errors import UserError
from ..io import atomic_path, read_json
from .graph import circuit_view, normalize_circuit  # noqa: F401 - normalize_circuit is part of the API
from .values import _finite, _int, _num, json_for_script

REPORT_DIR = "report"
INDEX = "index.html"
ANNOTATIONS = "annotations.json"
VENDOR_SCRIPTS = ("vendor/cytoscape.min.js",)  # inlined before report.js on circuit pages

_FORCED_TIP = ("the full model did not reach the accuracy bar on this task; pruning was forced, "
               "so read this circuit with care")
_SERIES_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2"]


# --------------------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------
# Number formatting
# --------------------------------------------------------------------------------------
def _si(x: float | None) -> str:
    if x is None:
        return "\u2013"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.4g}"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "\u2013"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    v = _num(x)
    if v is None:
        return "\u2013" if isinstance(x, float) else str(x)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _loss(x: Any) -> str:
    v = _num(x)
    return "\u2013" if v is None else f"{v:.3f}"


def _pct(x: Any) -> str:
    v = _num(x)
    return "\u2013" if v is None else f"{100 * v:.1f}%"


def _signed(x: Any) -> str:
    v = _num(x)
    return "\u2013" if v is None else f"{v:+.3f}"


# --------------------------------------------------------------------------------------
# Loading the run
# --------------------------------------------------------------------------------------
@dataclass
class CircuitEntry:
    """One ``circuits/<dirname>/circuit.json``; ``data`` is None when it could not be read."""

    dirname: str
    task: str
    page: str
    data: dict | None = None
    error: str | None = None
    annotations: dict | None = None  # annotations.json next to circuit.json (supernodes, notes)


@dataclass
class RunData:
    path: Path
    name: str
    config: dict
    metrics: list[dict]
    tasks: dict[str, dict]
    circuits: list[CircuitEntry]
    warnings: list[str] = field(default_factory=list)
    measures: dict = field(default_factory=dict)  # eval.json's "measures", when present


def _read_json_soft(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: {exc}"


def _page_name(dirname: str, used: set[str]) -> str:
    """A safe, unique file name for a circuit page (task names are untrusted text)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dirname).strip("._") or "task"
    name, n = f"circuit-{slug}.html", 2
    while name.lower() in used:
        name, n = f"circuit-{slug}-{n}.html", n + 1
    used.add(name.lower())
    return name


def _load_metrics(path: Path, warnings: list[str]) -> list[dict]:
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        warnings.append(f"metrics.jsonl: skipped {bad} unreadable line(s)")
    return rows


def _check_circuit(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("nodes"), list) or not isinstance(data.get("links", []), list):
        return "missing 'nodes' or 'links' list"
    return None


def _read_annotations(path: Path, warnings: list[str]) -> dict | None:
    """A circuit's saved reading (the viewer's export); the page checks its contents."""
    if not path.is_file():
        return None
    raw, err = _read_json_soft(path)
    if err or not isinstance(raw, dict):
        warnings.append(f"{path.parent.name}/{path.name}: {err or 'not a JSON object'}")
        return None
    return raw


def load_run_data(run_dir: str | Path) -> RunData:
    """Read everything the report shows; only a missing ``config.json`` is an error."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"not a run directory: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"not a run directory (no config.json): {path}")
    warnings: list[str] = []
    config, err = _read_json_soft(path / "config.json")
    if err or not isinstance(config, dict):
        raise UserError(f"run config is not a valid JSON object: {path / 'config.json'}")
    metrics = _load_metrics(path / "metrics.jsonl", warnings)
    tasks: dict[str, dict] = {}
    if (path / "tasks.json").is_file():
        raw, err = _read_json_soft(path / "tasks.json")
        if err:
            warnings.append(err)
        elif isinstance(raw, dict) and isinstance(raw.get("tasks"), dict):
            tasks = {str(k): v for k, v in raw["tasks"].items() if isinstance(v, dict)}
        else:
            warnings.append("tasks.json: expected {\"tasks\": {name: {...}}}")
    circuits: list[CircuitEntry] = []
    used: set[str] = {INDEX}
    cdir = path / "circuits"
    if cdir.is_dir():
        for sub in sorted(p for p in cdir.iterdir() if p.is_dir()):
            cfile = sub / "circuit.json"
            if not cfile.is_file():
                continue
            data, err = _read_json_soft(cfile)
            err = err or _check_circuit(data)
            task = sub.name
            if not err and isinstance(data.get("task"), str) and data["task"]:
                task = data["task"]
            entry = CircuitEntry(sub.name, task, _page_name(sub.name, used))
            if err:
                entry.error = err
                warnings.append(f"circuits/{sub.name}/circuit.json: {err}")
            else:
                entry.data = upgrade_circuit_json(data)  # older files: edge counts from their links
                entry.annotations = _read_annotations(sub / ANNOTATIONS, warnings)
            circuits.append(entry)
    measures: dict = {}
    if (path / "eval.json").is_file():
        raw, err = _read_json_soft(path / "eval.json")
        if err:
            warnings.append(err)
        elif isinstance(raw, dict) and isinstance(raw.get("measures"), dict):
            measures = raw["measures"]
    return RunData(path, path.resolve().name, config, metrics, tasks, circuits, warnings, measures)


# --------------------------------------------------------------------------------------
# Static assets and page frame
# --------------------------------------------------------------------------------------
def _asset(name: str) -> str:
    return resources.files("sparsecircuits.report").joinpath("static", name).read_text(encoding="utf-8")


def _csp(script: str | None) -> str:
    """Allow our own inline CSS, and only the one inline script whose hash we know."""
    if script is None:
        src = "'none'"
    else:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
        src = f"'sha256-{digest}'"
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {src}; "
            "base-uri 'none'; form-action 'none'")


def viewer_script() -> str:
    """The circuit page's one inline script: the vendored graph library, then ours."""
    parts = [_asset(name) for name in VENDOR_SCRIPTS] + [_asset("report.js")]
    js = "\n;\n".join(parts)
    if "</script" in js.lower() or "<!--" in js:  # pragma: no cover - a guard on our own files
        raise RuntimeError("an inlined script must not contain '</script' or '<!--'")
    return js


def _page(title: str, body: str, *, data: Any = None, blocks: dict[str, Any] | None = None,
          script: bool = False, body_class: str = "") -> str:
    """A whole page. ``data`` goes in the JSON block ``circuit-data``; ``blocks`` maps more
    block ids to payloads (the comparison page has two)."""
    js = viewer_script() if script else None
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(_csp(js))}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"referrer\" content=\"no-referrer\">\n",
        "<link rel=\"icon\" href=\"data:,\">\n",
        f"<title>{_e(title)}</title>\n<style>\n{_asset('report.css')}\n</style>\n</head>\n",
        f"<body class=\"{_e(body_class)}\">\n{body}\n",
    ]
    all_blocks = ({"circuit-data": data} if data is not None else {}) | (blocks or {})
    for block_id, payload in all_blocks.items():
        parts.append(f"<script type=\"application/json\" id=\"{_e(block_id)}\">{json_for_script(payload)}</script>\n")
    if js is not None:
        parts.append(f"<script>{js}</script>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[str]], numeric: Iterable[int] = (), cls: str = "data") -> str:
    """A table; ``rows`` hold already-escaped HTML cells."""
    numeric = set(numeric)
    num = ' class="num"'
    head = "".join(f"<th{num if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{num if i in numeric else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cards(items: list[tuple[str, str, str]]) -> str:
    """Summary cards: (label, escaped value HTML, extra class)."""
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card {_e(c)}\"><div class=\"card-label\">{_e(k)}</div><div class=\"card-value\">{v}</div></div>"
        for k, v, c in items) + "</div>"


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, obj)]


def _value_html(v: Any) -> str:
    if isinstance(v, str):
        return f"<code>{_e(v)}</code>"
    if isinstance(v, (list, dict)):
        return f"<code>{_e(json.dumps(_finite(v), ensure_ascii=False))}</code>"
    return _e(_fmt(v) if isinstance(v, float) else ("null" if v is None else v))


def _config_tables(config: dict) -> str:
    """Config as one key/value table per top-level section."""
    scalars = [(k, v) for k, v in config.items() if not isinstance(v, dict)]
    sections = [(k, v) for k, v in config.items() if isinstance(v, dict)]
    blocks = []
    if scalars:
        blocks.append(("run", scalars))
    for k, v in sections:
        blocks.append((k, _flatten(v)))
    out = []
    for title, rows in blocks:
        out.append(f"<details class=\"config\" open><summary>{_e(title)}</summary>"
                   + _table(["key", "value"], [[f"<code>{_e(k)}</code>", _value_html(v)] for k, v in rows],
                            cls="data kv") + "</details>")
    return "<div class=\"config-grid\">" + "".join(out) + "</div>"


# --------------------------------------------------------------------------------------
# SVG charts
# --------------------------------------------------------------------------------------
def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10 * mag


def _linear_ticks(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float]]:
    if hi - lo <= 0:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, n)
    lo2, hi2 = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks, k = [], 0
    while lo2 + k * step <= hi2 + step * 1e-6:
        ticks.append(round(lo2 + k * step, 12))
        k += 1
    return lo2, hi2, ticks


def _log_ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if a == b:
        b = a + 1
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in mults if 10.0 ** a <= m * 10.0 ** e <= 10.0 ** b]
    return 10.0 ** a, 10.0 ** b, ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return _si(v)
    if abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{round(v, 10):g}"


def _downsample(points: list[tuple[float, float]], limit: int = 800) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def svg_line_chart(series: list[dict], *, title: str, x_label: str, y_label: str, log_y: bool = False,
                   width: int = 480, height: int = 270, vline: float | None = None,
                   vline_label: str = "", cls: str = "") -> str:
    """A small line chart. ``series``: dicts with name, points [(x, y)], color, markers, dash."""
    ml, mr, mt, mb = 58, 14, 40, 42
    pw, ph = width - ml - mr, height - mt - mb
    clean = []
    for s in series:
        pts = [(float(x), float(y)) for x, y in s.get("points", [])
               if _num(x) is not None and _num(y) is not None and (not log_y or y > 0)]
        if pts:
            clean.append({**s, "points": sorted(pts)})
    head = (f"<svg class=\"chart {_e(cls)}\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
            f"aria-label=\"{_e(title)}\" xmlns=\"http://www.w3.org/2000/svg\">"
            f"<text class=\"chart-title\" x=\"{ml}\" y=\"16\">{_e(title)}</text>")
    if not clean:
        return (head + f"<rect class=\"plot-bg\" x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\"/>"
                f"<text class=\"empty\" x=\"{ml + pw / 2}\" y=\"{mt + ph / 2}\" "
                "text-anchor=\"middle\">no data</text></svg>")
    xs = [p[0] for s in clean for p in s["points"]]
    ys = [p[1] for s in clean for p in s["points"]]
    if vline is not None:
        xs.append(vline)
    x0, x1, xt = _linear_ticks(min(xs), max(xs), 5)
    if log_y:
        y0, y1, yt = _log_ticks(min(ys), max(ys))
    else:
        y0, y1, yt = _linear_ticks(min(ys), max(ys), 5)

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        if log_y:
            return mt + ph - (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) * ph
        return mt + ph - (y - y0) / (y1 - y0) * ph

    out = [head, f"<rect class=\"plot-bg\" x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\"/>"]
    for t in yt:
        y = sy(t)
        out.append(f"<line class=\"grid\" x1=\"{ml}\" x2=\"{ml + pw}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\"/>"
                   f"<text class=\"tick\" x=\"{ml - 6}\" y=\"{y + 3.5:.1f}\" "
                   f"text-anchor=\"end\">{_e(_tick_label(t))}</text>")
    for t in xt:
        x = sx(t)
        out.append(f"<line class=\"grid\" x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{mt}\" y2=\"{mt + ph}\"/>"
                   f"<text class=\"tick\" x=\"{x:.1f}\" y=\"{mt + ph + 15}\" "
                   f"text-anchor=\"middle\">{_e(_tick_label(t))}</text>")
    out.append(f"<text class=\"axis-label\" x=\"{ml + pw / 2}\" y=\"{height - 6}\" "
               f"text-anchor=\"middle\">{_e(x_label)}</text>"
               f"<text class=\"axis-label\" transform=\"translate(13 {mt + ph / 2}) rotate(-90)\" "
               f"text-anchor=\"middle\">{_e(y_label)}</text>")
    if vline is not None:
        x = sx(vline)
        out.append(f"<line class=\"vline\" x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{mt}\" y2=\"{mt + ph}\"/>"
                   f"<text class=\"vline-label\" x=\"{x + 4:.1f}\" y=\"{mt + 11}\">{_e(vline_label)}</text>")
    for i, s in enumerate(clean):
        color = s.get("color") or _SERIES_COLORS[i % len(_SERIES_COLORS)]
        pts = _downsample(s["points"])
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
        dash = " stroke-dasharray=\"5 3\"" if s.get("dash") else ""
        out.append(f"<path class=\"series\" d=\"{d}\" stroke=\"{color}\"{dash}><title>{_e(s['name'])}</title></path>")
        if s.get("markers"):
            for x, y in pts:
                out.append(f"<circle class=\"marker\" cx=\"{sx(x):.1f}\" cy=\"{sy(y):.1f}\" r=\"3\" fill=\"{color}\">"
                           f"<title>{_e(s['name'])}: {_e(_fmt(y))} at {_e(x_label)} {_e(_fmt(x))}</title></circle>")
    # Legend, right-aligned on the title row.
    lx = width - mr
    for i, s in reversed(list(enumerate(clean))):
        color = s.get("color") or _SERIES_COLORS[i % len(_SERIES_COLORS)]
        name = str(s["name"])
        lx -= 7 * len(name) + 30
        dash = " stroke-dasharray=\"5 3\"" if s.get("dash") else ""
        out.append(f"<line x1=\"{lx}\" x2=\"{lx + 18}\" y1=\"28\" y2=\"28\" stroke=\"{color}\" stroke-width=\"2.5\"{dash}/>"
                   f"<text class=\"legend\" x=\"{lx + 23}\" y=\"32\">{_e(name)}</text>")
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------
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
        link = f"<a href=\"{_e(quote(c.page))}\">{_e(c.task)}</a>"
        m = c.data.get("metrics") if isinstance(c.data.get("metrics"), dict) else {}
        acc = full.get("accuracy", m.get("full_accuracy"))
        floss = full.get("loss", m.get("full_loss"))
        ne = _int(m.get("n_edges"))
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
            f"{_measures_section(run.measures)}"
            f"<section><h2>Tasks and circuits</h2>{_task_table(run)}</section>"
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


def _circuit_charts(m: dict) -> str:
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


def circuit_payload(data: dict, task: str, annotations: dict | None = None) -> tuple[dict, list[str]]:
    """The JSON the viewer reads for one circuit, and the problems found reading it."""
    m = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    view, problems = circuit_view(data)
    view.update({"task": task, "full_loss": _num(m.get("full_loss")), "circuit_loss": _num(m.get("circuit_loss")),
                 "annotations": annotations})
    return view, problems


def render_circuit(run: RunData, entry: CircuitEntry) -> str:
    data = entry.data or {}
    m = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    payload, problems = circuit_payload(data, entry.task, entry.annotations)
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
        f"<main>{_metric_cards(m, model)}{warn}"
        "<section><h2>Circuit</h2>"
        f"<p class=\"muted\">{_e(_VIEWER_HELP)} ({n_detail} of {len(nodes)} nodes have details.)</p>"
        f"{viewer_html()}</section>"
        f"{_checks_table(data.get('checks'))}{_circuit_charts(m)}{settings_html}</main>"
    )
    return _page(f"{entry.task} \u2014 circuit \u2014 {run.name}", body, data=payload, script=True,
                 body_class="circuit-page")


# --------------------------------------------------------------------------------------
# Two circuits side by side
# --------------------------------------------------------------------------------------
def _read_circuit_file(path: Path) -> dict:
    data = read_json(path, "circuit file")
    err = _check_circuit(data)
    if err:
        raise UserError(f"not a circuit file ({err}): {path}")
    return upgrade_circuit_json(data)


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


def write_compare(circuit_a: str | Path, circuit_b: str | Path, out: str | Path) -> Path:
    """Write a comparison page of two ``circuit.json`` files (each one's ``annotations.json``
    next to it is shown too). Labels are the files' parent folders when they differ."""
    pa, pb, out = Path(circuit_a), Path(circuit_b), Path(out)
    a, b = _read_circuit_file(pa), _read_circuit_file(pb)
    warnings: list[str] = []
    notes = (_read_annotations(pa.parent / ANNOTATIONS, warnings), _read_annotations(pb.parent / ANNOTATIONS, warnings))
    name_a, name_b = pa.resolve().parent.name, pb.resolve().parent.name
    labels = (name_a, name_b) if name_a != name_b else ("A", "B")
    if out.is_dir():
        raise UserError(f"--out is a directory, not a file: {out}")
    _write_page(out, render_compare(a, b, label_a=labels[0], label_b=labels[1], annotations=notes))
    return out


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def _write_page(path: Path, page: str) -> None:
    """Atomic write (``atomic_path`` gives the file the usual umask-based mode)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(page.encode("utf-8", "replace"))


def build_report(run_dir: str | Path) -> tuple[Path, list[str]]:
    """Write the report; return the index path and the problems found while reading."""
    run = load_run_data(run_dir)
    out = run.path / REPORT_DIR
    pages = {c.page for c in run.circuits if c.data is not None}
    for c in run.circuits:
        if c.data is not None:
            _write_page(out / c.page, render_circuit(run, c))
    index = out / INDEX
    _write_page(index, render_index(run))
    for stale in out.glob("circuit-*.html"):  # pages of circuits that no longer exist
        if stale.name not in pages:
            stale.unlink(missing_ok=True)
    return index, run.warnings


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report/index.html`` and one ``circuit-<task>.html`` per circuit."""
    return build_report(run_dir)[0]
