"""The ASGI app: the JSON API under /api/v1, the pages, static files, the live poller, and one way to
turn errors into responses (JSON for the API, a page for a person).

Read-only, except the two actions a user asks for on a confirmation page (or with `confirm=true` on
the API): delete a flow run, clear a cache record. Forms carry a token only the server's own pages
know, and requests must name this server's host (a page elsewhere cannot drive it, nor read it
through a rebound DNS name).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .._store.base import ObjectNotFound, StoreError, StoreNotFoundError
from ._live import Hub
from ._params import BadParameter

HERE = Path(__file__).parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class StoreHandle:
    """The store the server reads: the one given, else the settings' (SQLite under ASYNCFLOW_HOME),
    opened for reading when first needed. Before anything has run there is no store yet: the pages
    say so, and the server opens it as soon as it exists."""

    def __init__(self, store: Any = None) -> None:
        self._store = store
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._store is None:
            from .._store import default_store

            with self._lock:
                if self._store is None:
                    try:
                        self._store = default_store(create=False)
                    except StoreNotFoundError:
                        return None
        return self._store

    def where(self) -> str:
        store = self._store
        if store is not None:
            return str(getattr(store, "path", type(store).__name__))
        from .. import _settings
        from .._store.sqlite import DB_FILE_NAME

        return str(_settings.HOME.value() / DB_FILE_NAME)

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None and hasattr(store, "close"):
            store.close()


class NoStore(Exception):
    """Nothing has run with this ASYNCFLOW_HOME yet."""


def create_app(store: Any = None, *, allowed_hosts: list[str] | None = None, poll_seconds: float | None = None,
               close_store: bool = False) -> Starlette:
    """The web UI and its JSON API over `store` (default: the settings' store, as the CLI reads it).

    `allowed_hosts`: the names the server answers to (default: loopback only; `["*"]` for any).
    """
    from .. import _settings
    from . import _api, _pages

    if store is None and _settings.STORE.value() == "memory":
        raise ValueError("ASYNCFLOW_STORE=memory: runs are kept in the memory of the process that ran them, so "
                         "there is nothing here to show. Unset it to record runs in ASYNCFLOW_HOME/asyncflow.db.")
    handle = StoreHandle(store)
    hub = Hub(handle.get, **({"interval": poll_seconds} if poll_seconds is not None else {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub._wake = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(hub.run)
            try:
                yield
            finally:
                hub.stop()
                group.cancel_scope.cancel()
        if close_store:
            handle.close()

    routes = [*_api.routes(), *_pages.routes(), Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or list(LOOPBACK_HOSTS))],
                    exception_handlers={HTTPException: _http_error, BadParameter: _known_error,
                                        ObjectNotFound: _known_error, NoStore: _known_error,
                                        StoreError: _known_error})
    app.state.store = handle
    app.state.hub = hub
    app.state.token = secrets.token_urlsafe(24)
    return app


# -- running reads, and errors -------------------------------------------------------------------------
async def read(request: Request, fn: Callable[..., Any], *args: Any, need_store: bool = True) -> Any:
    """fn(store, *args) in a worker thread (SQLite reads never block the event loop); NoStore if there
    is no store yet and `need_store`."""
    handle: StoreHandle = request.app.state.store

    def call() -> Any:
        store = handle.get()
        if store is None and need_store:
            raise NoStore(handle.where())
        return fn(store, *args)

    return await anyio.to_thread.run_sync(call)


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status: int, message: str, parameter: str | None = None) -> Response:
    if is_api(request):
        body: dict[str, Any] = {"status": status, "message": message}
        if parameter is not None:
            body["parameter"] = parameter
        return JSONResponse({"error": body}, status_code=status)
    from ._pages import render

    return render(request, "error.html", {"status": status, "message": message, "parameter": parameter},
                  status=status)


def handle_error(request: Request, exc: BaseException) -> Response | None:
    """The response for an error a request can cause; None for a bug (a 500)."""
    if isinstance(exc, BadParameter):
        return error_response(request, 400, str(exc), exc.parameter)
    if isinstance(exc, ObjectNotFound):
        return error_response(request, 404, str(exc))
    if isinstance(exc, NoStore):
        return error_response(request, 404, f"No asyncflow store at {exc} yet: nothing has run with this "
                                            f"ASYNCFLOW_HOME.")
    if isinstance(exc, StoreError):
        return error_response(request, 503, str(exc))
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(request, 404, f"Nothing at {request.url.path}." + (
            " The API's endpoints are listed at /api/v1." if is_api(request) else ""))
    if exc.status_code == 405:
        return error_response(request, 405, f"{request.method} is not allowed on {request.url.path}.")
    return error_response(request, exc.status_code, str(exc.detail))


async def _known_error(request: Request, exc: Exception) -> Response:
    response = handle_error(request, exc)
    assert response is not None
    return response


__all__ = ["LOOPBACK_HOSTS", "NoStore", "StoreHandle", "create_app", "handle_error", "read"]
