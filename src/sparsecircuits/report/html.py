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
from ..io import atomic_path

REPORT_DIR = "report"
INDEX = "index.html"

# Site -> column within a layer, left to right in the order data flows.
_SITE_COLUMN = {"attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2, "mlp_in": 3,
                "neuron": 4, "mlp_out": 5}
_QKV_ORDER = {"q": 0, "k": 1, "v": 2}
SITE_NAMES = {
    "embed": "token embedding",
    "attn_in": "attention read (residual channel)",
    "q": "query channel",
    "k": "key channel",
    "v": "value channel",
    "attn_out": "attention write (residual channel)",
    "mlp_in": "MLP read (residual channel)",
    "neuron": "MLP neuron",
    "mlp_out": "MLP write (residual channel)",
    "logit": "answer logit",
}
_COLUMN_TITLES = {0: "attn in", 1: "heads q·k·v", 2: "attn out", 3: "mlp in", 4: "neurons",
                  5: "mlp out", 6: "other"}
_EMBED_KEY = (-1, 0)
_LOGIT_KEY = (1 << 30, 0)

# Graph geometry, in SVG pixels.
_NODE_W, _TOKEN_W, _NODE_H, _ROW = 64, 92, 22, 30
_COL_GAP, _LAYER_GAP, _TOP, _PAD = 46, 26, 58, 16
_HEAD_PAD, _HEAD_LABEL, _HEAD_GAP, _LANE = 5, 13, 10, 14

_FORCED_TIP = ("the full model did not reach the accuracy bar on this task; pruning was forced, "
               "so read this circuit with care")
_SERIES_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2"]


# --------------------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by None: ``JSON.parse`` rejects them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` only ever occur inside JSON strings, where ``\\u003c`` etc.
    mean the same thing, so ``</script>`` or ``<!--`` in a token cannot end the block.
    ``ensure_ascii`` also escapes U+2028/2029 and lone surrogates.
    """
    text = json.dumps(_finite(obj), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def visible_token(tok: str, limit: int | None = None) -> str:
    """A token with its whitespace made visible, optionally shortened with an ellipsis."""
    out = tok.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5").replace("\r", "\u240d")
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 1)] + "\u2026"
    return out or "\u2205"


# --------------------------------------------------------------------------------------
# Number formatting
# --------------------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    v = _num(x)
    return int(v) if v is not None else None


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


def _page(title: str, body: str, *, data: Any = None, script: bool = False, body_class: str = "") -> str:
    js = _asset("report.js") if script else None
    if js is not None and "</script" in js.lower():  # pragma: no cover - a guard on our own file
        raise RuntimeError("report.js must not contain '</script'")
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(_csp(js))}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"referrer\" content=\"no-referrer\">\n",
        "<link rel=\"icon\" href=\"data:,\">\n",
        f"<title>{_e(title)}</title>\n<style>\n{_asset('report.css')}\n</style>\n</head>\n",
        f"<body class=\"{_e(body_class)}\">\n{body}\n",
    ]
    if data is not None:
        parts.append(f"<script type=\"application/json\" id=\"circuit-data\">{json_for_script(data)}</script>\n")
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
# Circuit graph: normalise, lay out, draw
# --------------------------------------------------------------------------------------
_LAYER_RE = re.compile(r"blocks\.(\d+)\.")


def _node_label(n: dict) -> str:
    site = n["site"]
    if site in ("embed", "logit"):
        return visible_token(n["token"], 11) if n["token"] is not None else f"#{n['index']}"
    idx = "?" if n["index"] is None else n["index"]
    if site in _QKV_ORDER:
        return f"{site}{idx}"
    return f"#{idx}"


def _clean_details(raw: Any) -> dict | None:
    """Keep only well-formed detail fields, coerced to the types the script expects."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    snippets = []
    for s in raw.get("snippets") or []:
        if not isinstance(s, dict) or not isinstance(s.get("tokens"), list):
            continue
        toks = [str(t) for t in s["tokens"]][:512]
        acts = [(_num(a) or 0.0) for a in (s.get("acts") or [])][: len(toks)]
        acts += [0.0] * (len(toks) - len(acts))
        mx = _num(s.get("max"))
        snippets.append({"tokens": toks, "acts": acts,
                         "max": mx if mx is not None else max(acts, key=abs, default=0.0)})
    if snippets:
        out["snippets"] = snippets[:50]
    ca = raw.get("class_acts")
    if isinstance(ca, dict):
        classes = {str(k): [v for v in (_num(x) for x in vals[:4000]) if v is not None]
                   for k, vals in ca.items() if isinstance(vals, list)}
        if classes:
            out["class_acts"] = classes
    if _num(raw.get("ablation_delta")) is not None:
        out["ablation_delta"] = _num(raw["ablation_delta"])
    pat = raw.get("pattern")
    if isinstance(pat, dict) and isinstance(pat.get("tokens"), list) and isinstance(pat.get("matrix"), list):
        toks = [str(t) for t in pat["tokens"]][:256]
        rows = [[(_num(v) or 0.0) for v in row[: len(toks)]] for row in pat["matrix"][: len(toks)]
                if isinstance(row, list)]
        if toks and rows:
            out["pattern"] = {"tokens": toks, "matrix": rows}
            if isinstance(pat.get("title"), str):
                out["pattern"]["title"] = pat["title"]
    return out


def normalize_circuit(data: dict) -> tuple[list[dict], list[list], list[str]]:
    """Nodes and links as the page uses them; returns (nodes, links [s, t, w], problems)."""
    problems: list[str] = []
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    d_head = _int(model.get("d_head"))
    nodes: list[dict] = []
    index_of: dict[str, int] = {}
    for raw in data.get("nodes", []):
        if not isinstance(raw, dict) or raw.get("id") is None:
            problems.append("a node without an id was skipped")
            continue
        nid = str(raw["id"])
        if nid in index_of:
            problems.append(f"duplicate node id skipped: {nid}")
            continue
        hook = str(raw.get("hook") or nid.rsplit(":", 1)[0])
        site = str(raw.get("site") or "")
        layer = _int(raw.get("layer"))
        if layer is None and site not in ("embed", "logit"):
            m = _LAYER_RE.search(hook)
            layer = int(m.group(1)) if m else None
        token = raw.get("token")
        index = _int(raw.get("index"))
        if index is None and re.fullmatch(r"\d+", nid.rsplit(":", 1)[-1]):
            index = int(nid.rsplit(":", 1)[-1])
        node = {
            "id": nid, "hook": hook, "site": site, "layer": layer,
            "index": index, "head": _int(raw.get("head")),
            "token": None if token is None else str(token), "mask": _num(raw.get("mask")),
        }
        if node["head"] is None and site in _QKV_ORDER and node["index"] is not None and d_head:
            node["head"] = node["index"] // d_head  # q/k/v channels are numbered across heads
        node["label"] = _node_label(node)
        node["site_name"] = SITE_NAMES.get(site, site or "unknown site")
        det = _clean_details(details.get(nid))
        if det:
            node["details"] = det
        index_of[nid] = len(nodes)
        nodes.append(node)
    links: list[list] = []
    dropped = 0
    for raw in data.get("links", []):
        if not isinstance(raw, dict):
            dropped += 1
            continue
        s, t = index_of.get(str(raw.get("source"))), index_of.get(str(raw.get("target")))
        w = _num(raw.get("weight"))
        if s is None or t is None:
            dropped += 1
            continue
        links.append([s, t, 0.0 if w is None else w])
    if dropped:
        problems.append(f"{dropped} link(s) with unknown endpoints were skipped")
    return nodes, links, problems


def _column_key(n: dict) -> tuple[int, int]:
    if n["site"] == "embed":
        return _EMBED_KEY
    if n["site"] == "logit":
        return _LOGIT_KEY
    layer = n["layer"] if n["layer"] is not None else (1 << 29)
    return (layer, _SITE_COLUMN.get(n["site"], 6))


def _node_width(n: dict) -> int:
    return _TOKEN_W if n["site"] in ("embed", "logit") else _NODE_W


@dataclass
class _Column:
    key: tuple[int, int]
    members: list[int]  # item ids: real nodes first numbered 0..N-1, then edge waypoints
    x: float = 0.0
    width: float = _NODE_W

    @property
    def is_heads(self) -> bool:
        return self.key[1] == 1 and self.key not in (_EMBED_KEY, _LOGIT_KEY)


@dataclass
class GraphLayout:
    """Where everything goes. Items ``0..N-1`` are the nodes; the rest are waypoints that
    carry an edge across the columns it skips, so long edges run in their own lanes
    instead of through other nodes (the classic layered-drawing trick)."""

    pos: dict[int, tuple[float, float]]
    columns: list[_Column]
    chains: list[list[int]]  # per link: item ids from source to target
    col_of: dict[int, int]  # item id -> index into columns
    width: float
    height: float
    n_nodes: int

    def is_waypoint(self, item: int) -> bool:
        return item >= self.n_nodes


def _groups(col: _Column, nodes: list[dict], n_nodes: int) -> list[tuple[bool, list[int]]]:
    """The column's items in display groups: (boxed, members). Heads get a box each."""
    if not col.is_heads:
        return [(False, [i]) for i in col.members]
    out: list[tuple[bool, list[int]]] = []
    by_head: dict[Any, list[int]] = {}
    for i in col.members:
        if i >= n_nodes:
            out.append((False, [i]))
        else:
            head = nodes[i]["head"]
            if head not in by_head:
                by_head[head] = []
                out.append((True, by_head[head]))
            by_head[head].append(i)
    return out


def _item_height(i: int, n_nodes: int) -> float:
    return _ROW if i < n_nodes else _LANE


def _column_height(col: _Column, nodes: list[dict], n_nodes: int) -> float:
    total = 0.0
    for k, (boxed, g) in enumerate(_groups(col, nodes, n_nodes)):
        total += sum(_item_height(i, n_nodes) for i in g)
        if boxed:
            total += 2 * _HEAD_PAD + _HEAD_LABEL + (_HEAD_GAP if k else 0)
    return total


def layout_graph(nodes: list[dict], links: list[list]) -> GraphLayout:
    """Columns by (layer, site), rows ordered by barycentre sweeps to cut edge crossings."""
    n_nodes = len(nodes)
    cols: dict[tuple[int, int], _Column] = {}
    for i, n in enumerate(nodes):
        cols.setdefault(_column_key(n), _Column(_column_key(n), [])).members.append(i)
    columns = [cols[k] for k in sorted(cols)]
    col_of: dict[int, int] = {}
    for ci, col in enumerate(columns):
        col.width = max(_node_width(nodes[i]) for i in col.members) + (2 * _HEAD_PAD if col.is_heads else 0)
        col.members.sort(key=lambda i: (nodes[i]["head"] if nodes[i]["head"] is not None else -1,
                                        _QKV_ORDER.get(nodes[i]["site"], 3),
                                        nodes[i]["index"] if nodes[i]["index"] is not None else -1,
                                        nodes[i]["id"]))
        for i in col.members:
            col_of[i] = ci
    # Waypoints: one per (source, skipped column), shared by all long edges of a source.
    n_items = n_nodes
    waypoint: dict[tuple[int, int], int] = {}
    seg: dict[tuple[int, int], float] = {}
    chains: list[list[int]] = []
    for s, t, w in links:
        chain = [s]
        if col_of[t] - col_of[s] > 1:
            for c in range(col_of[s] + 1, col_of[t]):
                if (s, c) not in waypoint:
                    waypoint[(s, c)] = n_items
                    columns[c].members.append(n_items)
                    col_of[n_items] = c
                    n_items += 1
                chain.append(waypoint[(s, c)])
        chain.append(t)
        chains.append(chain)
        for a, b in zip(chain, chain[1:]):
            if a != b:
                seg[(a, b)] = seg.get((a, b), 0.0) + abs(w) + 1e-6
    x, prev_layer = float(_PAD), None
    for col in columns:
        if prev_layer is not None and col.key[0] != prev_layer:
            x += _LAYER_GAP
        col.x = x + col.width / 2
        x += col.width + _COL_GAP
        prev_layer = col.key[0]
    width = x - _COL_GAP + _PAD
    inner = max((_column_height(c, nodes, n_nodes) for c in columns), default=_ROW)
    pos: dict[int, tuple[float, float]] = {}

    def place(col: _Column) -> None:
        y = _TOP + (inner - _column_height(col, nodes, n_nodes)) / 2
        for k, (boxed, g) in enumerate(_groups(col, nodes, n_nodes)):
            if boxed:
                y += _HEAD_PAD + _HEAD_LABEL + (_HEAD_GAP if k else 0)
            for i in g:
                h = _item_height(i, n_nodes)
                pos[i] = (col.x, y + h / 2)
                y += h
            if boxed:
                y += _HEAD_PAD

    for col in columns:
        place(col)
    ins: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n_items)}
    outs: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n_items)}
    for (a, b), w in seg.items():
        outs[a].append((b, w))
        ins[b].append((a, w))

    def bary(i: int, nbrs: dict[int, list[tuple[int, float]]]) -> float:
        total = sum(w for _, w in nbrs[i])
        if total <= 0:
            return pos[i][1]
        return sum(pos[j][1] * w for j, w in nbrs[i]) / total

    for sweep in range(10):
        forward = sweep % 2 == 0
        for col in (columns if forward else list(reversed(columns))):
            b = {i: bary(i, ins if forward else outs) for i in col.members}
            groups = _groups(col, nodes, n_nodes)
            groups.sort(key=lambda g: sum(b[i] for i in g[1]) / len(g[1]))
            if col.is_heads:
                col.members = [i for _, g in groups for i in sorted(g, key=lambda i: (_QKV_ORDER.get(nodes[i]["site"], 3)
                                                                                      if i < n_nodes else 0, b[i]))]
            else:
                col.members = [g[0] for _, g in groups]
            place(col)
    return GraphLayout(pos, columns, chains, col_of, width, _TOP + inner + _PAD, n_nodes)


def _edge_path(layout: GraphLayout, chain: list[int], nodes: list[dict]) -> str:
    """A smooth path through the chain: horizontal tangents at every node and waypoint."""
    pos = layout.pos
    s, t = chain[0], chain[-1]
    (xs, ys), (xt, yt) = pos[s], pos[t]
    ws, wt = _node_width(nodes[s]), _node_width(nodes[t])
    if xt - wt / 2 <= xs + ws / 2:
        # Same column (a head's q -> k pair) or backwards: a tight bracket on the right.
        x1, x2 = xs + ws / 2, xt + wt / 2
        c = 8 + min(abs(yt - ys) / 6, 24)
        return f"M{x1:.1f},{ys:.1f} C{x1 + c:.1f},{ys:.1f} {x2 + c:.1f},{yt:.1f} {x2:.1f},{yt:.1f}"
    pts = [(xs + ws / 2, ys)]
    straight = [False]
    for item in chain[1:-1]:
        x, y = pos[item]
        half = layout.columns[layout.col_of[item]].width / 2
        pts += [(x - half, y), (x + half, y)]
        straight += [False, True]
    pts.append((xt - wt / 2, yt))
    straight.append(False)
    d = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (x1, y1), (x2, y2), flat in zip(pts, pts[1:], straight[1:]):
        if flat:
            d.append(f"L{x2:.1f},{y2:.1f}")
        else:
            dx = max((x2 - x1) * 0.5, 12)
            d.append(f"C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
    return " ".join(d)


def _node_tooltip(n: dict, n_in: int, n_out: int) -> str:
    lines = [n["id"]]
    parts = [f"layer {n['layer']}" if n["layer"] is not None else None, n["site_name"],
             f"head {n['head']}" if n["head"] is not None else None,
             f"#{n['index']}" if n["index"] is not None else None]
    lines.append(" \u00b7 ".join(p for p in parts if p))
    if n["token"] is not None:
        lines.append(f"token: {n['token']!r}")
    nums = []
    if n["mask"] is not None:
        nums.append(f"mask {n['mask']:.3g}")
    delta = n.get("details", {}).get("ablation_delta")
    if delta is not None:
        nums.append(f"ablation \u0394loss {delta:+.3f}")
    nums.append(f"in {n_in} \u00b7 out {n_out}")
    lines.append(" \u00b7 ".join(nums))
    return "\n".join(lines)


def svg_circuit_graph(nodes: list[dict], links: list[list]) -> str:
    """The circuit as an SVG: layer bands, column headers, head boxes, edges, nodes."""
    if not nodes:
        return "<p class=\"muted\">This circuit has no nodes.</p>"
    layout = layout_graph(nodes, links)
    pos, columns, width, height = layout.pos, layout.columns, layout.width, layout.height
    # Fit the pane's width, shrinking to at most 65% of natural size; beyond that, scroll.
    out = [f"<svg class=\"circuit-graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" "
           f"viewBox=\"0 0 {width:.0f} {height:.0f}\" role=\"img\" aria-label=\"circuit graph\" "
           f"style=\"min-width:{0.65 * width:.0f}px;max-width:{width:.0f}px\">"]
    # Layer bands and labels.
    bands: dict[tuple, list[_Column]] = {}
    for col in columns:
        bands.setdefault(col.key if col.key in (_EMBED_KEY, _LOGIT_KEY) else (col.key[0],), []).append(col)
    for k, (band, cols) in enumerate(bands.items()):
        x0 = min(c.x - c.width / 2 for c in cols) - _COL_GAP / 2 + 6
        x1 = max(c.x + c.width / 2 for c in cols) + _COL_GAP / 2 - 6
        if band == _EMBED_KEY:
            label = "embedding"
        elif band == _LOGIT_KEY:
            label = "answer logits"
        elif band[0] == 1 << 29:
            label = "layer ?"
        else:
            label = f"layer {band[0]}"
        out.append(f"<rect class=\"band band-{k % 2}\" x=\"{x0:.1f}\" y=\"6\" width=\"{x1 - x0:.1f}\" "
                   f"height=\"{height - 12:.1f}\" rx=\"8\"/>"
                   f"<text class=\"band-label\" x=\"{(x0 + x1) / 2:.1f}\" y=\"22\" "
                   f"text-anchor=\"middle\">{_e(label)}</text>")
    for col in columns:
        title = {_EMBED_KEY: "tokens", _LOGIT_KEY: "answers"}.get(col.key, _COLUMN_TITLES.get(col.key[1], ""))
        out.append(f"<text class=\"col-label\" x=\"{col.x:.1f}\" y=\"38\" text-anchor=\"middle\">{_e(title)}</text>")
    # Head boxes.
    for col in columns:
        if not col.is_heads:
            continue
        for boxed, g in _groups(col, nodes, layout.n_nodes):
            if not boxed:
                continue
            ys = [pos[i][1] for i in g]
            top = min(ys) - _ROW / 2 - _HEAD_LABEL - _HEAD_PAD + 2
            bottom = max(ys) + _ROW / 2 + _HEAD_PAD - 2
            head = nodes[g[0]]["head"]
            label = f"head {head}" if head is not None else "head ?"
            out.append(f"<g class=\"head-group\"><rect x=\"{col.x - col.width / 2:.1f}\" y=\"{top:.1f}\" "
                       f"width=\"{col.width:.1f}\" height=\"{bottom - top:.1f}\" rx=\"7\"/>"
                       f"<text x=\"{col.x - col.width / 2 + 6:.1f}\" y=\"{top + 11:.1f}\">{_e(label)}</text></g>")
    # Edges, weakest first so strong ones draw on top.
    max_w = max((abs(w) for _, _, w in links), default=0.0) or 1.0
    n_in = [0] * len(nodes)
    n_out = [0] * len(nodes)
    out.append("<g class=\"edges\">")
    for li in sorted(range(len(links)), key=lambda li: abs(links[li][2])):
        s, t, w = links[li]
        n_out[s] += 1
        n_in[t] += 1
        sw = 0.8 + 5.2 * abs(w) / max_w
        sign = "pos" if w >= 0 else "neg"
        d = _edge_path(layout, layout.chains[li], nodes)
        tip = f"{nodes[s]['id']} \u2192 {nodes[t]['id']}\nweight {w:+.4g}"
        out.append(f"<path class=\"edge {sign}\" data-l=\"{li}\" data-s=\"{s}\" data-t=\"{t}\" d=\"{d}\" "
                   f"stroke-width=\"{sw:.2f}\"><title>{_e(tip)}</title></path>")
    out.append("</g><g class=\"nodes\">")
    for i, n in enumerate(nodes):
        x, y = pos[i]
        w = _node_width(n)
        site_cls = re.sub(r"[^a-z_]", "", n["site"]) or "unknown"
        if site_cls not in SITE_NAMES:
            site_cls = "unknown"
        out.append(f"<g class=\"node site-{site_cls}\" data-i=\"{i}\" tabindex=\"0\" role=\"button\" "
                   f"aria-label=\"{_e(n['id'])}\" transform=\"translate({x:.1f} {y:.1f})\">"
                   f"<title>{_e(_node_tooltip(n, n_in[i], n_out[i]))}</title>"
                   f"<rect x=\"{-w / 2}\" y=\"{-_NODE_H / 2}\" width=\"{w}\" height=\"{_NODE_H}\" rx=\"{_NODE_H / 2}\"/>"
                   f"<text text-anchor=\"middle\" dy=\"0.35em\">{_e(n['label'])}</text></g>")
    out.append("</g></svg>")
    return "".join(out)


def _legend() -> str:
    sites = ["embed", "attn_in", "q", "k", "v", "attn_out", "mlp_in", "neuron", "mlp_out", "logit"]
    items = "".join(f"<span class=\"lg\"><span class=\"sw site-{s}\"></span>{_e(SITE_NAMES[s])}</span>" for s in sites)
    return ("<div class=\"legend\">" + items +
            "<span class=\"lg\"><span class=\"ln pos\"></span>positive weight</span>"
            "<span class=\"lg\"><span class=\"ln neg\"></span>negative weight</span>"
            "<span class=\"lg muted\">edge width \u221d |weight|</span></div>")


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


def render_circuit(run: RunData, entry: CircuitEntry) -> str:
    data = entry.data or {}
    m = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    nodes, links, problems = normalize_circuit(data)
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
        f"<p class=\"muted\">Data flows left to right. Hover a node or edge for numbers; click a node for its "
        "snippets, class activations, ablation effect and attention pattern "
        f"({n_detail} of {len(nodes)} nodes have details). "
        "Esc clears the selection.</p>"
        f"{_legend()}<div class=\"circuit-layout\">"
        f"<div class=\"graph-scroll\" id=\"graph\">{svg_circuit_graph(nodes, links)}</div>"
        "<aside class=\"panel\" id=\"panel\" aria-live=\"polite\"><p class=\"muted\">Click a node.</p></aside>"
        "</div></section>"
        f"{_checks_table(data.get('checks'))}{_circuit_charts(m)}{settings_html}</main>"
    )
    payload = {"task": entry.task, "nodes": nodes, "links": links,
               "full_loss": _num(m.get("full_loss")), "circuit_loss": _num(m.get("circuit_loss"))}
    return _page(f"{entry.task} \u2014 circuit \u2014 {run.name}", body, data=payload, script=True,
                 body_class="circuit-page")


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
