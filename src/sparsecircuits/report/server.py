"""A small local viewer: serves run reports from one folder, and nothing outside it.

Why not ``python -m http.server``: that one serves whatever a symlink points at, lists
every folder and answers any Host. Here every path is resolved (symlinks included) and
must stay under the root; dot-files are hidden; only GET and HEAD exist; on a loopback
address the Host header must name the loopback too, which stops a web page from reading
the runs through DNS rebinding. Reports missing on disk are written on first request.
"""
from __future__ import annotations

import html
import ipaddress
import mimetypes
import os
import shutil
import socket
import sys
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..errors import UserError
from ..rundir import REPORT, RunDir
from .html import INDEX, write_report

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_LISTING_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_LISTING_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2937}
header{padding:14px 24px;border-bottom:1px solid #e5e7eb;background:#f8fafc}
h1{font-size:20px;margin:0} main{padding:12px 24px} a{color:#1d4ed8;text-decoration:none}
table{border-collapse:collapse;min-width:60%} td,th{padding:5px 10px;border-bottom:1px solid #e5e7eb;text-align:left}
th{font-size:11.5px;text-transform:uppercase;color:#6b7280;background:#f8fafc} .muted{color:#6b7280}
"""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_run_dir(path: Path) -> bool:
    return RunDir(path).is_run()


class ViewerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its root and whether it listens on loopback only."""

    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]):
        self.root = root
        self.loopback_only = _is_loopback(address[0])
        self.report_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ViewerHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "sparsecircuits-viewer"
    sys_version = ""

    # -- plumbing -------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str = "") -> None:
        text = f"{status.value} {status.phrase}" + (f": {message}" if message else "")
        self._send(status.value, (text + "\n").encode("utf-8", "replace"), "text/plain; charset=utf-8")

    def _host_ok(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host")
        if host is None:  # HTTP/1.0 without Host: a local tool, not a browser
            return True
        name = host.strip()
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return _is_loopback(name.lower())

    # -- path resolution --------------------------------------------------------------
    def _resolve(self) -> tuple[Path | None, str, list[str]]:
        """Map the URL path to a file under root, or None (with the reason) if refused."""
        raw = urlsplit(self.path).path
        path = unquote(raw, errors="strict") if "%" in raw else raw
        if "\x00" in path or "\\" in path:
            return None, "bad path", []
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None, "outside the root", parts
        if any(p.startswith(".") for p in parts):
            return None, "hidden", parts
        root = self.server.root
        try:
            target = root.joinpath(*parts).resolve()
        except (OSError, RuntimeError):  # symlink loops
            return None, "hidden", parts
        if target != root and not target.is_relative_to(root):
            return None, "outside the root", parts
        return target, "", parts

    # -- handlers ---------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        try:
            target, why, parts = self._resolve()
        except UnicodeDecodeError:
            self._error(HTTPStatus.BAD_REQUEST, "bad path")
            return
        if target is None:
            status = HTTPStatus.NOT_FOUND if why == "hidden" else HTTPStatus.FORBIDDEN
            self._error(status)
            return
        if not target.exists():
            if target.name == REPORT and is_run_dir(target.parent):
                self._ensure_report(target.parent)
            elif target.suffix == ".html" and target.parent.name == REPORT and is_run_dir(target.parent.parent):
                self._ensure_report(target.parent.parent)
        url_path = urlsplit(self.path).path
        if target.is_dir():
            if not url_path.endswith("/"):
                # Rebuilt from the checked parts, so "//host" can never become an off-site redirect.
                location = "/" + "".join(quote(p, errors="replace") + "/" for p in parts)
                self._send(HTTPStatus.MOVED_PERMANENTLY.value, b"", "text/plain", {"Location": location})
                return
            if target == self.server.root:
                self._send(200, self._runs_page().encode("utf-8", "replace"), "text/html; charset=utf-8",
                           {"Content-Security-Policy": _LISTING_CSP})
                return
            index = target / INDEX
            if index.is_file():
                self._send_file(index)
            else:
                self._send(200, self._listing_page(target, "/" + "/".join(parts) + "/").encode("utf-8", "replace"),
                           "text/html; charset=utf-8", {"Content-Security-Policy": _LISTING_CSP})
            return
        if not target.is_file():
            self._error(HTTPStatus.NOT_FOUND)
            return
        self._send_file(target)

    def _ensure_report(self, run: Path) -> None:
        """Write a run's report on first request; a broken run just stays without one."""
        with self.server.report_lock:
            if (run / REPORT / INDEX).is_file():
                return
            try:
                write_report(run)
            except (UserError, OSError) as exc:
                self.log_message("could not write the report of %s: %s", run, exc)

    def _send_file(self, path: Path) -> None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json", "application/javascript"):
            ctype += "; charset=utf-8"
        if path.suffix in (".jsonl", ".toml", ".md", ".txt", ".log"):
            ctype = "text/plain; charset=utf-8"
        try:
            fh = open(path, "rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with fh:
            size = os.fstat(fh.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            if self.command != "HEAD":
                shutil.copyfileobj(fh, self.wfile)

    # -- pages --------------------------------------------------------------------------
    def _frame(self, title: str, body: str) -> str:
        e = html.escape
        return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<link rel=\"icon\" href=\"data:,\"><style>{_LISTING_CSS}</style></head><body>"
                f"<header><h1>{e(title)}</h1></header><main>{body}</main></body></html>")

    def _runs_page(self) -> str:
        """The runs under root (and root itself if it is a run), each linking its report."""
        e = html.escape
        root = self.server.root
        candidates = ([(".", root)] if is_run_dir(root) else []) + [
            (p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        rows = []
        for name, run in candidates:
            prefix = "" if name == "." else quote(name, errors="replace") + "/"
            has_report = (run / REPORT / INDEX).is_file()
            if not (is_run_dir(run) or has_report):
                continue
            n_circ = len(RunDir(run).circuit_dirs())
            mtime = datetime.fromtimestamp(run.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
            label = root.name if name == "." else name
            report = "report" if has_report else "report (written on first view)"
            rows.append(f"<tr><td><a href=\"{e(prefix)}{REPORT}/\">{e(label)}</a></td>"
                        f"<td><a href=\"{e(prefix)}{REPORT}/\">{e(report)}</a></td>"
                        f"<td>{n_circ}</td><td class=\"muted\">{e(mtime)}</td>"
                        f"<td><a href=\"{e(prefix)}\">files</a></td></tr>")
        if not rows:
            body = f"<p class=\"muted\">No runs (folders with a config.json) under {e(str(root))}.</p>"
        else:
            body = ("<table><thead><tr><th>run</th><th>report</th><th>circuits</th><th>modified</th><th></th></tr></thead>"
                    f"<tbody>{''.join(rows)}</tbody></table>")
        return self._frame(f"runs in {root.name}", body)

    def _listing_page(self, folder: Path, url_path: str) -> str:
        e = html.escape
        items = ["<li><a href=\"../\">../</a></li>"]
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            name = p.name + ("/" if p.is_dir() else "")
            items.append(f"<li><a href=\"{e(quote(name, errors='replace'))}\">{e(name)}</a></li>")
        return self._frame(url_path, "<ul>" + "".join(items) + "</ul>")


def make_server(root_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> ViewerServer:
    """Build (and bind) the server; ``port=0`` picks a free port. Call ``serve_forever``."""
    root = Path(root_dir).resolve()
    if not root.is_dir():
        raise UserError(f"not a folder: {root_dir}")
    try:
        return ViewerServer(root, (host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(root_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(root_dir, host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
