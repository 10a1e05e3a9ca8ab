"""The frame every report page shares: inlined CSS and script, the JSON data blocks and
the Content-Security-Policy that allows exactly the page's own script (by hash).

Why inlined: a page must render from ``file://`` with no network, so nothing is linked.
"""
from __future__ import annotations

import base64
import hashlib
from importlib import resources
from typing import Any

from .format import _e
from .values import json_for_script

VENDOR_SCRIPTS = ("vendor/cytoscape.min.js",)  # inlined before report.js on circuit pages


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
