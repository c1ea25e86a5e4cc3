"""`asyncflow server start`: the app on uvicorn, listening on a socket bound before uvicorn starts (so
a port in use is a clear error, and `--port 0` picks a free port and says which)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

from ._app import LOOPBACK_HOSTS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


class PortError(OSError):
    pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
            raise PortError(f"Port {port} on {host} is in use (another server?): pass --port with a free one, or "
                            f"--port 0 for any free port.") from None
        raise PortError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str) -> list[str]:
    if host in ("0.0.0.0", "::", "[::]", ""):
        return ["*"]
    return sorted({*LOOPBACK_HOSTS, host.strip("[]"), host})


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host in ("::", "[::]") else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False,
          log_level: str = "warning", out: Any = None) -> int:
    import uvicorn

    from . import create_app

    out = out or sys.stdout
    started = time.perf_counter()
    app = create_app(allowed_hosts=allowed_hosts(host), close_store=True)
    sock = bind(host, port)
    url = url_of(sock, host)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=2,
                            server_header=False)
    server = _Server(config, app)
    where = app.state.store.where()

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.005)
        if server.started:
            out.write(f"asyncflow UI at {url} (store: {where}; ready in {time.perf_counter() - started:.2f}s). "
                      f"Ctrl-C stops it.\n")
            out.flush()
            if open_browser:
                import webbrowser

                webbrowser.open(url)

    threading.Thread(target=announce, name="asyncflow-ui-announce", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """Ends the live streams when asked to stop, so open pages do not hold the shutdown up."""

        def __init__(self, config: Any, app: Any) -> None:
            super().__init__(config)
            self._app = app

        def handle_exit(self, sig: int, frame: Any) -> None:
            self._app.state.hub.stop()
            super().handle_exit(sig, frame)

    return Server


def _Server(config: Any, app: Any) -> Any:
    return _server_class()(config, app)
