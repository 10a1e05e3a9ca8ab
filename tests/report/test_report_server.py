"""The local viewer: loopback by default, files under root only, reports on demand."""
from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import pytest

from sparsecircuits.cli import main
from sparsecircuits.report import server as server_mod
from sparsecircuits.report.server import make_server

SECRET = "top-secret-outside-root"


@pytest.fixture
def served(run_dir: Path):
    """(root, port) of a running viewer over the fixture's runs folder."""
    root = run_dir.parent
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    os.symlink(outside, root / "escape")  # a symlink that leaves the root
    os.symlink(run_dir / "config.json", root / "inside-link.json")  # one that stays inside
    (run_dir / ".hidden").write_text("hidden")
    srv = make_server(root, port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _get(srv, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_binds_loopback_by_default(tmp_path):
    srv = make_server(tmp_path, port=0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
        assert srv.loopback_only
        assert srv.url == f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.server_close()


def test_serves_a_file_under_root(served, run_dir):
    root, srv = served
    status, headers, body = _get(srv, "/tiny/config.json")
    assert status == 200
    assert body == (run_dir / "config.json").read_bytes()
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert _get(srv, "/inside-link.json")[0] == 200  # a symlink that stays inside is fine
    status, headers, body = _get(srv, "/tiny/config.json", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize("path", [
    "/../etc/passwd",
    "/../../../../../../etc/passwd",
    "/%2e%2e/etc/passwd",
    "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/tiny/..%2f..%2f..%2f..%2fetc/passwd",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/tiny/../../outside/secret.txt",
    "/%2e%2e/outside/secret.txt",
    "/escape/secret.txt",
    "/escape/",
    "/tiny/..%5c..%5coutside%5csecret.txt",
    "/%252e%252e/outside/secret.txt",
    "/tiny/%00/config.json",
])
def test_refuses_paths_outside_root(served, path):
    root, srv = served
    status, _, body = _get(srv, path)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body and SECRET.encode() not in body


def test_missing_and_hidden_are_404(served):
    _, srv = served
    assert _get(srv, "/tiny/nope.json")[0] == 404
    assert _get(srv, "/nope/")[0] == 404
    assert _get(srv, "/tiny/.hidden")[0] == 404


def test_rejects_foreign_host_header(served):
    """DNS rebinding: a page on evil.example must not read the runs through the viewer."""
    _, srv = served
    port = srv.server_address[1]
    assert _get(srv, "/tiny/config.json", host=f"evil.example:{port}")[0] == 403
    assert _get(srv, "/tiny/config.json", host=f"localhost:{port}")[0] == 200
    assert _get(srv, "/tiny/config.json", host=f"127.0.0.1:{port}")[0] == 200


def test_runs_page_links_reports_and_writes_them_on_demand(served, run_dir):
    _, srv = served
    status, headers, body = _get(srv, "/")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'href="tiny/report/"' in text
    assert "outside" not in text and "escape" not in text  # not a run, and leaves the root
    assert not (run_dir / "report").exists()
    status, _, body = _get(srv, "/tiny/report/")
    assert status == 200 and b"loss-curve" in body
    assert (run_dir / "report" / "index.html").is_file()
    status, _, body = _get(srv, "/tiny/report/circuit-single_double_quote.html")
    assert status == 200 and b"circuit-data" in body


def test_directory_redirect_stays_on_site(served):
    _, srv = served
    status, headers, _ = _get(srv, "/tiny")
    assert status == 301 and headers["Location"] == "/tiny/"
    status, headers, _ = _get(srv, "//evil.example")
    assert status in (301, 404)
    assert not headers.get("Location", "/").startswith("//")


def test_hostile_file_names_in_listing_are_escaped(served, run_dir):
    _, srv = served
    (run_dir / '"><img src=x onerror=alert(1)>.txt').write_text("x")
    status, _, body = _get(srv, "/tiny/")
    assert status == 200
    assert b"<img" not in body and b"&lt;img" in body


def test_view_command_prints_url_and_stops_on_ctrl_c(run_dir, monkeypatch, capsys):
    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(server_mod.ViewerServer, "serve_forever", interrupted)
    assert main(["view", str(run_dir.parent), "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("http://127.0.0.1:") and out.strip().endswith("/")


def test_view_command_bad_input(tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["view", str(tmp_path), "--port", "70000"]) == 2
