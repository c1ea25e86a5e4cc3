"""The JSON API, version 1 (`/api/v1/...`): the store's read API over HTTP (docs/ui.md lists it).

Lists are pages: `{"items": [...], "next_cursor": ...}` (pass `cursor=` back for the next page);
feeds return the number to continue from. Errors are `{"error": {"status", "message", "parameter"}}`:
400 for a malformed parameter (named), 404 for an unknown id or path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from .._store.base import ObjectNotFound
from . import _data, _params
from ._app import NoStore, read
from ._json import count_json, flow_run_json, log_json, row_json, state_json, task_run_json
from ._live import Scope, change_json, level_names, parse_event_id
from ._params import BadParameter, Query

API_VERSION = 1
RUN_FILTER = ("flow", "state", "tag", "since", "until", "search")
PAGE = ("limit", "cursor", "order")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def path_id(request: Request, kind: str) -> uuid.UUID:
    """The run id in the path; one that is no UUID names no run: a 404."""
    text = request.path_params["run_id"]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ObjectNotFound(f"No {kind} with id {text!r}: run ids are UUIDs such as "
                             f"'0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90'.") from None


def paged(store: Any, method: str, f: Any, limit: int, cursor: str | None, newest_first: bool) -> Any:
    """A page of runs; an empty one while there is no store yet."""
    if store is None:
        from .._store.reads import Page

        return Page(())
    try:
        return getattr(store, method)(f, limit, cursor, newest_first)
    except ValueError as exc:  # the cursor of another query, or damaged
        if "cursor" in str(exc):
            raise BadParameter("cursor", str(exc)) from None
        raise


# -- runs ------------------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    _params.check_known(Query(request.query_params), ())
    return _json({"api_version": API_VERSION, "asyncflow": __version__, "store": request.app.state.store.where(),
                  "endpoints": [f"{' '.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in routes()
                                if isinstance(r, Route) and r.methods]})


async def flow_runs(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, (*RUN_FILTER, "parent", *PAGE))
    f = _params.run_filter(query)
    limit, cursor = _params.limit(query, 50), _params.cursor(query)
    newest = _params.order(query, True)
    page = await read(request, paged, "read_flow_runs_page", f, limit, cursor, newest, need_store=False)
    return _json({"items": [flow_run_json(r) for r in page], "next_cursor": page.next_cursor})


async def flow_run_counts(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, (*RUN_FILTER, "parent", "bucket"))
    f = _params.run_filter(query)
    bucket = _params.seconds(query, "bucket") or 3600.0
    counts = await read(request, lambda store: store.count_flow_runs_by_state(f, bucket) if store else [],
                        need_store=False)
    return _json({"bucket_seconds": bucket, "items": [count_json(c) for c in counts]})


async def flow_run(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    _params.check_known(Query(request.query_params), ())

    def one(store: Any) -> dict[str, Any]:
        run = store.read_flow_run(run_id)
        states = store.read_states(run_id)
        out = {**flow_run_json(run), "states": [state_json(s) for s in states]}
        counts = _data.task_run_counts(store, run_id)
        if counts is not None:
            out["task_run_counts"] = dict(counts)
        out["traceback"] = _data.traceback_of(store, run, True)
        return out

    return _json(await read(request, one))


async def timeline(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    query = Query(request.query_params)
    _params.check_known(query, ("limit", "cursor"))
    limit, cursor = _params.limit(query, _data.TIMELINE_PAGE), _params.cursor(query)

    def one(store: Any) -> dict[str, Any]:
        try:
            page = _data.timeline_page(store, run_id, cursor, limit)
        except ValueError as exc:
            if "cursor" in str(exc):
                raise BadParameter("cursor", str(exc)) from None
            raise
        return {"flow_run": flow_run_json(page.flow_run), "states": [state_json(s) for s in page.states],
                "rows": [row_json(r) for r in page.rows], "next_cursor": page.next_cursor}

    return _json(await read(request, one))


async def _logs(request: Request, kind: str) -> Response:
    run_id = path_id(request, kind)
    query = Query(request.query_params)
    _params.check_known(query, ("level", "after", "limit"))
    level = _params.level(query)
    after = _params.sequence(query, "after") or 0
    limit = _params.limit(query, _data.LOG_PAGE)

    def lines(store: Any) -> dict[str, Any]:
        if kind == "flow run":
            store.read_flow_run(run_id)  # an unknown run is a 404, not an empty list
            page = _data.log_page(store, flow_run_id=run_id, level=level, after=after, limit=limit)
        else:
            store.read_task_run(run_id)
            page = _data.log_page(store, task_run_id=run_id, level=level, after=after, limit=limit)
        return {"items": [log_json(line) for line in page.lines], "next_after": page.next_after,
                "last_seq": page.last_seq}

    return _json(await read(request, lines))


async def flow_run_logs(request: Request) -> Response:
    return await _logs(request, "flow run")


async def task_run_logs(request: Request) -> Response:
    return await _logs(request, "task run")


def confirmed(query: Query) -> None:
    if (query.one("confirm") or "").lower() not in ("true", "yes", "1"):
        raise BadParameter("confirm", "this deletes what the store holds: add confirm=true to say so.")


async def delete_flow_run(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    query = Query(request.query_params)
    _params.check_known(query, ("confirm",))
    confirmed(query)

    def delete(store: Any) -> dict[str, Any]:
        run = store.read_flow_run(run_id)
        counts = store.delete_flow_runs([run_id])
        return {"deleted": flow_run_json(run), "counts": counts}

    return _json(await read(request, delete))


async def task_runs(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, (*RUN_FILTER, "task", "flow_run_id", *PAGE))
    f = _params.run_filter(query, task_runs=True)
    limit, cursor = _params.limit(query, 50), _params.cursor(query)
    newest = _params.order(query, f.parent_flow_run_id is None)
    page = await read(request, paged, "read_task_runs_page", f, limit, cursor, newest, need_store=False)
    return _json({"items": [task_run_json(r) for r in page], "next_cursor": page.next_cursor})


async def task_run(request: Request) -> Response:
    run_id = path_id(request, "task run")
    _params.check_known(Query(request.query_params), ())

    def one(store: Any) -> dict[str, Any]:
        run = store.read_task_run(run_id)
        states = tuple(store.read_states(run_id))
        cache = _data.cache_info(states)
        return {**task_run_json(run), "states": [state_json(s) for s in states],
                "cache": None if cache is None else {"key": cache.key, "expiration": _iso(cache.expiration),
                                                     "stored": cache.stored},
                "traceback": _data.traceback_of(store, run, False)}

    return _json(await read(request, one))


def _iso(ts: float | None) -> str | None:
    from ._json import iso

    return iso(ts)


# -- feeds ------------------------------------------------------------------------------------------------
async def changes(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("since", "limit"))
    since = _params.sequence(query, "since") or 0
    limit = _params.limit(query, 1000, "limit") if query.one("limit") else 1000
    found, last = await read(request, lambda store: store.read_changes(since, limit) if store else ([], since),
                             need_store=False)
    return _json({"items": [change_json(c) for c in found], "last_seq": last})


async def events(request: Request) -> Response:
    """Server-sent events: `changes` events as the store records states (and log lines, with
    `logs=true`), scoped to `flow_run_id`, `task_run_id`, or `scope=flow_runs`."""
    query = Query(request.query_params)
    _params.check_known(query, ("since", "logs_since", "flow_run_id", "task_run_id", "scope", "logs", "level"))
    since, log_since = _params.sequence(query, "since"), _params.sequence(query, "logs_since")
    header_since, header_logs = parse_event_id(request.headers.get("last-event-id"))
    since = header_since if header_since is not None else since
    log_since = header_logs if header_logs is not None else log_since
    scope_name = _params.choice(query, "scope", ("all", "flow_runs"), "all")
    logs = _params.choice(query, "logs", ("true", "false", "1", "0"), "false") in ("true", "1")
    level = _params.level(query)
    flow_id, task_id = query.one("flow_run_id"), query.one("task_run_id")
    if flow_id is not None and task_id is not None:
        raise BadParameter("task_run_id", "give flow_run_id or task_run_id, not both.")
    levels = level_names(level)
    if flow_id is not None:
        scope = Scope("flow_run", _params.run_id("flow_run_id", flow_id), logs, levels)
    elif task_id is not None:
        scope = Scope("task_run", _params.run_id("task_run_id", task_id), logs, levels)
    else:
        scope = Scope("runs" if scope_name == "flow_runs" else "all", None, logs, levels)
    hub = request.app.state.hub
    return StreamingResponse(hub.events(scope, since, log_since), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- background, cache ----------------------------------------------------------------------------------
async def background(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("limit",))
    limit = _params.limit(query, 100)
    from ._queue import read_queue

    return _json(await read(request, lambda _store: read_queue(limit=limit), need_store=False))


async def cache(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("task",))
    task = query.one("task")
    records = await read(request, lambda _store: _data.cache_records(task), need_store=False)
    return _json({"storage": str(_data.storage_root()), "items": [
        {**r, "expiration": _iso(r["expiration"])} for r in records]})


async def clear_cache(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("confirm",))
    confirmed(query)
    key = request.path_params["key"]
    if not await read(request, lambda _store: _data.clear_cache_record(key), need_store=False):
        raise ObjectNotFound(f"No cache record with key {key!r} under {_data.storage_root()}.")
    return _json({"cleared": key, "at": time.time()})


def routes() -> list[Route]:
    return [
        Route("/api/v1", index, methods=["GET"]),
        Route("/api/v1/flow-runs", flow_runs, methods=["GET"]),
        Route("/api/v1/flow-runs/counts", flow_run_counts, methods=["GET"]),
        Route("/api/v1/flow-runs/{run_id}", flow_run, methods=["GET"]),
        Route("/api/v1/flow-runs/{run_id}", delete_flow_run, methods=["DELETE"]),
        Route("/api/v1/flow-runs/{run_id}/timeline", timeline, methods=["GET"]),
        Route("/api/v1/flow-runs/{run_id}/logs", flow_run_logs, methods=["GET"]),
        Route("/api/v1/task-runs", task_runs, methods=["GET"]),
        Route("/api/v1/task-runs/{run_id}", task_run, methods=["GET"]),
        Route("/api/v1/task-runs/{run_id}/logs", task_run_logs, methods=["GET"]),
        Route("/api/v1/changes", changes, methods=["GET"]),
        Route("/api/v1/events", events, methods=["GET"]),
        Route("/api/v1/background", background, methods=["GET"]),
        Route("/api/v1/cache", cache, methods=["GET"]),
        Route("/api/v1/cache/{key:path}", clear_cache, methods=["DELETE"]),
    ]


__all__ = ["API_VERSION", "NoStore", "routes"]
