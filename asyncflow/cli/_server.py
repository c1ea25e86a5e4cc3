"""`asyncflow server start`: the web UI and its JSON API over the store under ASYNCFLOW_HOME."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import CLIError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def add_commands(commands: Any) -> None:
    server = commands.add_parser("server", help="serve the web UI over the run store",
                                 description="Serve the web UI and its JSON API over the run store under "
                                             "ASYNCFLOW_HOME (needs the extra 'ui': "
                                             "pip install 'asyncflow-anyio[ui]').")
    sub = server.add_subparsers(dest="action", metavar="{start}", required=True)
    start = sub.add_parser("start", help="start the web UI (http://127.0.0.1:4200 by default)",
                           description="Start the web UI: flow runs, task runs, timelines, logs, the background "
                                       "queue, live. It listens on 127.0.0.1 unless --host says otherwise; anyone "
                                       "who can reach it can read the runs (parameters, logs) and delete runs.")
    start.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every "
                            "interface, with a warning)")
    start.add_argument("--port", type=_port, default=4200, help="port (default 4200; 0 for any free port)")
    start.add_argument("--open", action="store_true", help="open the UI in a web browser once it is up")
    start.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                       help="the server's own log level (default warning)")
    start.set_defaults(run=server_start)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


def server_start(args: argparse.Namespace) -> int:
    try:
        from ..server._serve import PortError, serve
    except ImportError as exc:
        raise CLIError(f"The web UI needs the optional extra 'ui' (starlette, uvicorn, jinja2): pip install "
                       f"'asyncflow-anyio[ui]' ({exc}).") from None
    host = args.host.strip()
    if host not in LOOPBACK:
        sys.stderr.write(f"warning: listening on {host}: anyone who can reach this address can read every run "
                         f"(parameters, logs) and delete runs; there is no login. Use 127.0.0.1 (the default) "
                         f"unless that is what you want.\n")
    try:
        return serve(host, args.port, open_browser=args.open, log_level=args.log_level)
    except PortError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
