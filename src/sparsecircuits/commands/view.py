"""`sparsecircuits view RUNS_DIR`: browse run reports on a local web server."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="serve the reports of the runs in a folder on http://127.0.0.1")
    p.add_argument("runs_dir", type=Path, help="a folder of run directories (or one run directory)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else exposes your runs to the network)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..report.server import make_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    server = make_server(args.runs_dir, args.host, args.port)
    if not server.loopback_only:
        sys.stderr.write(f"sparsecircuits: warning: listening on {args.host}, reachable from other machines\n")
    print(server.url, flush=True)
    sys.stderr.write("serving; press Ctrl-C to stop\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.stderr.write("stopped\n")
    finally:
        server.server_close()
    return 0
