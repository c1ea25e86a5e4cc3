"""A real server for the UI's tests: uvicorn in a thread, on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def running_server(store: Any = None, **options: Any) -> Iterator[tuple[str, Any]]:
    """Yields (base url, app). `store`: what the app reads (default: the settings' store, as
    `asyncflow server start` opens it)."""
    import uvicorn

    from asyncflow.server import create_app
    from asyncflow.server._serve import bind

    options.setdefault("poll_seconds", 0.05)
    app = create_app(store, **options)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        if store is None:  # the store the app opened itself
            app.state.store.close()
