"""Self-contained HTML report of a run: training curves, a task table, one page per circuit.

Why self-contained: a report gets mailed, attached to a review or opened on a laptop with
no network, so every page carries its own CSS, script and data and renders from file://
with no CDN. Charts are SVG written in Python, so a page reads fine even with scripts
off; the script (``static/report.js`` with the vendored graph library) draws the circuit
and adds the interaction (hover, the node panel, snippets, attention heatmaps).

Everything that came from text (tokens, snippets, task and file names, config values) is
untrusted. HTML written here goes through ``html.escape``; data for the script sits in a
``<script type="application/json">`` block with ``<``, ``>``, ``&`` and U+2028/2029
escaped; the script sets text only with ``textContent``. A Content-Security-Policy
allowing exactly the page's own script (by hash) is a second line of defence.

The pieces: ``loading.py`` reads the run, ``pages.py`` renders the pages from
``format.py`` (escaping, numbers, tables), ``charts.py`` (SVG), ``graph.py`` (the circuit
layout) and ``frame.py`` (CSS, script, CSP); this module writes them.

Inputs (all optional except ``config.json``): ``metrics.jsonl``, ``tasks.json``
(``{"tasks": {name: {"accuracy", "loss"}}}``), ``circuits/<task>/circuit.json`` and
``timelines/<task>.json``.  A task pruned both by learned masks and by attribution
(``circuits/<task>@attribution``) also gets a page with the two side by side
(``methods-<task>.html``, ``methods.py``).
Malformed pieces are reported on the index page instead of failing the whole report.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..io import atomic_path
from ..rundir import ANNOTATIONS, RunDir
from .loading import INDEX, load_run_data, read_annotations, read_circuit_file
from .methods import ATTRIBUTION, compare_page, method_pairs
from .pages import render_circuit, render_compare, render_index


def _write_page(path: Path, page: str) -> None:
    """Atomic write (``atomic_path`` gives the file the usual umask-based mode)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(page.encode("utf-8", "replace"))


def build_report(run_dir: str | Path) -> tuple[Path, list[str]]:
    """Write the report; return the index path and the problems found while reading."""
    run = load_run_data(run_dir)
    out = RunDir(run.path).report
    pages = {c.page for c in run.circuits if c.data is not None}
    for c in run.circuits:
        if c.data is not None:
            _write_page(out / c.page, render_circuit(run, c))
    for learned, attr in method_pairs(run):  # a task's learned and attribution circuits side by side
        pages.add(compare_page(learned))
        _write_page(out / compare_page(learned), render_compare(
            learned.data, attr.data, label_a="learned", label_b=ATTRIBUTION,
            annotations=(learned.annotations, attr.annotations)))
    index = out / INDEX
    _write_page(index, render_index(run))
    for stale in [*out.glob("circuit-*.html"), *out.glob("methods-*.html")]:  # pages of circuits now gone
        if stale.name not in pages:
            stale.unlink(missing_ok=True)
    return index, run.warnings


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report/index.html`` and one ``circuit-<task>.html`` per circuit."""
    return build_report(run_dir)[0]


def write_compare(circuit_a: str | Path, circuit_b: str | Path, out: str | Path) -> Path:
    """Write a comparison page of two ``circuit.json`` files (each one's ``annotations.json``
    next to it is shown too). Labels are the files' parent folders when they differ."""
    pa, pb, out = Path(circuit_a), Path(circuit_b), Path(out)
    a, b = read_circuit_file(pa), read_circuit_file(pb)
    warnings: list[str] = []
    notes = (read_annotations(pa.parent / ANNOTATIONS, warnings), read_annotations(pb.parent / ANNOTATIONS, warnings))
    name_a, name_b = pa.resolve().parent.name, pb.resolve().parent.name
    labels = (name_a, name_b) if name_a != name_b else ("A", "B")
    if out.is_dir():
        raise UserError(f"--out is a directory, not a file: {out}")
    _write_page(out, render_compare(a, b, label_a=labels[0], label_b=labels[1], annotations=notes))
    return out
