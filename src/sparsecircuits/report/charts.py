"""SVG line charts written in Python, so a page shows its curves with scripts off."""
from __future__ import annotations

import math

from .format import _e, _fmt, _si
from .values import _num

_SERIES_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2"]


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
