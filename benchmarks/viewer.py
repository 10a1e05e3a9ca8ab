"""How fast the circuit viewer opens and moves, on generated circuits of 100, 1,000 and
3,000 nodes (ten links per node, a fifth of the nodes tokens), in Debian's Chromium.

Per size: the time to write the page (layout included), the page's size, the time from
navigation to the viewer's script being done (``built_ms``), to its first frame
(``drawn_ms``: fitted, every box and link on screen, panning and zooming; a circuit of
more than 200 boxes has them painted on the ink layer then) and to every box being a
Cytoscape element and drawn as one (``ready_ms``: hover, click and selection answer too),
the renderer's CPU time until ready (``ready_cpu_ms``, the whole renderer process from its
start, and ``ready_main_thread_cpu_ms``, the thread that runs the page's script; on a busy
machine wall time is mostly waiting for a core, so these are the figures to compare), a
"fit" (until the next frame is painted), frame times while panning for two seconds, and a
first zoom to 100%
(``zoom_in_ms``, until painted: the boxes in view get their labels then). The machine's
load average is printed with the results.

``--profile DIR`` also records Chromium's sampling profiler from navigation to the first
frame, writes ``DIR/viewer-N.cpuprofile`` (open it in Chromium's DevTools, Performance
panel) and lists the functions with the most self time; the profiler itself adds CPU
time, so take the other figures from a run without it. Prints JSON.

    python benchmarks/viewer.py [--sizes 100,1000,3000] [--repeat N] [--pan-seconds 2] [--profile DIR]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

FIT_JS = """() => new Promise(done => {
  const v = window.circuitViewers[0];
  const t0 = performance.now();
  v.cy.zoom(v.cy.zoom() * 3);
  v.fit();
  requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
})"""

ZOOM_IN_JS = """() => new Promise(done => {
  const v = window.circuitViewers[0], s = v.size();
  const t0 = performance.now();
  v.cy.zoom({level: 1, renderedPosition: {x: s.width / 2, y: s.height / 2}});
  requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
})"""

PAN_JS = """(seconds) => new Promise(done => {
  const cy = window.circuitViewers[0].cy;
  cy.zoom(cy.zoom() * 2);
  const times = [];
  let last = performance.now(), k = 0;
  const end = last + seconds * 1000;
  function step(now) {
    times.push(now - last);
    last = now;
    k += 1;
    cy.panBy({x: 6 * Math.cos(k / 20), y: 6 * Math.sin(k / 20)});
    if (now < end) { requestAnimationFrame(step); } else { done(times.slice(2)); }
  }
  requestAnimationFrame(step);
})"""


def top_self_time(profile: dict, n: int = 12) -> list[dict]:
    """The functions with the most self time in a CDP CPU profile (ms, by name and line)."""
    by_id = {node["id"]: node for node in profile["nodes"]}
    spent: collections.Counter = collections.Counter()
    for sample, dt in zip(profile["samples"], profile["timeDeltas"]):
        frame = by_id[sample]["callFrame"]
        spent[f"{frame['functionName'] or '(anonymous)'}:{frame['lineNumber'] + 1}"] += dt
    return [{"function": name, "self_ms": round(us / 1000, 1)} for name, us in spent.most_common(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,3000")
    ap.add_argument("--pan-seconds", type=float, default=2.0)
    ap.add_argument("--profile", type=Path, default=None, help="write a CPU profile of each page load here")
    ap.add_argument("--repeat", type=int, default=1, help="load each page this many times (one result per load)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from sparsecircuits.report.loading import CircuitEntry, RunData
    from sparsecircuits.report.pages import render_circuit
    from sparsecircuits.report.synthetic import synthetic_circuit

    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for n in [int(s) for s in args.sizes.split(",") for _ in range(args.repeat)]:
            circuit = synthetic_circuit(n, 10 * n, seed=0, task=f"generated-{n}")
            run = RunData(Path(tmp), "bench", {}, [], {}, [])
            t = time.perf_counter()
            page_html = render_circuit(run, CircuitEntry(f"g{n}", f"generated-{n}", f"g{n}.html", data=circuit))
            write_s = time.perf_counter() - t
            path = Path(tmp) / f"g{n}.html"
            path.write_text(page_html, encoding="utf-8")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            if args.profile:
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            page.goto(path.as_uri())
            page.wait_for_function("() => performance.getEntriesByName('viewer-ready').length === 1")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            profile = cdp.send("Profiler.stop")["profile"] if args.profile else None
            ready = page.evaluate("() => performance.getEntriesByName('viewer-ready')[0].startTime")
            built = page.evaluate("() => performance.getEntriesByName('viewer-built')[0].startTime")
            first = page.evaluate("() => performance.getEntriesByName('viewer-drawn')[0].startTime")
            dcl = page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
            fit_ms = page.evaluate(FIT_JS)
            frames = sorted(page.evaluate(PAN_JS, args.pan_seconds))
            zoom_in_ms = page.evaluate(ZOOM_IN_JS)
            drawn = page.evaluate("() => window.circuitViewers[0].drawnEdges()")
            shown = page.evaluate("() => window.circuitViewers[0].boxes().length")
            results.append({
                "nodes": len(circuit["nodes"]), "links": len(circuit["links"]),
                "drawn_nodes": shown, "drawn_edges": drawn,
                "write_page_s": round(write_s, 2), "page_mb": round(len(page_html.encode()) / 1e6, 2),
                "built_ms": round(built), "drawn_ms": round(first), "ready_ms": round(ready),
                "dom_content_loaded_ms": round(dcl),
                "ready_cpu_ms": round(1000 * metrics.get("ProcessTime", float("nan"))),
                "ready_main_thread_cpu_ms": round(1000 * metrics.get("ThreadTime", float("nan"))),
                "load_script_ms": round(1000 * metrics.get("ScriptDuration", float("nan"))),
                "fit_ms": round(fit_ms, 1), "zoom_in_ms": round(zoom_in_ms, 1),
                "pan_frame_ms_median": round(frames[len(frames) // 2], 1) if frames else None,
                "pan_frame_ms_p95": round(frames[int(0.95 * (len(frames) - 1))], 1) if frames else None,
                "pan_frames": len(frames),
            })
            if profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                (args.profile / f"viewer-{n}.cpuprofile").write_text(json.dumps(profile), encoding="utf-8")
                results[-1]["profile_top"] = top_self_time(profile)
            print(json.dumps(results[-1]), file=sys.stderr)
            page.close()
        browser.close()
    load = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps({"benchmark": "viewer", "load_average_1_5_15": load, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
