"""The pages: server-rendered HTML (Jinja2), with a little plain JavaScript (static/app.js) that keeps
them live from the server-sent events and fetches one row when a new run appears."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import __version__
from .._states import StateType
from .._store.base import ObjectNotFound
from .._store.reads import RunFilter, flow_run_matches
from . import _data, _params
from ._api import paged, path_id
from ._app import HERE, read
from ._json import iso
from ._params import BadParameter, Query

RUNS_PAGE = 50
RUN_FILTER = ("flow", "state", "tag", "since", "until", "search", "parent")
TIME_RANGES = (("", "any time"), ("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"),
               ("30d", "last 30 days"))
STATE_CHOICES = ("Completed", "Cached", "Failed", "TimedOut", "Crashed", "Cancelled", "Running", "Pending",
                 "Scheduled", "AwaitingRetry", "Retrying", "Paused")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Prefect's UI colours for the state types (ui-v2/src/utils/state-colors.ts); static/app.css uses them
STATE_COLORS = {"COMPLETED": "#219D4B", "FAILED": "#DE0529", "RUNNING": "#09439B", "CANCELLED": "#333333",
                "CANCELLING": "#334863", "CRASHED": "#EA580C", "PAUSED": "#726576", "PENDING": "#8E8093",
                "SCHEDULED": "#E08504"}


# -- rendering --------------------------------------------------------------------------------------
def _local(ts: float | None, millis: bool = False) -> str:
    if ts is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ts)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def _duration(start: float | None, end: float | None) -> str:
    from ..cli._output import duration

    return duration(start, end)


def _segments(states: Any, end: float | None) -> list[dict[str, Any]]:
    """A run's states as segments of its bar: each lasts until the next state; a final state is a mark
    at its time; the last state of a run still going lasts until now (`to` None)."""
    out = []
    states = list(states)
    for i, state in enumerate(states):
        if i + 1 < len(states):
            to: float | None = states[i + 1].ts
        elif state.is_final():
            to = state.ts
        else:
            to = None if end is None else max(end, state.ts)
        out.append({"name": state.name, "type": state.type.value, "from": state.ts, "to": to,
                    "message": state.message or ""})
    return out


def _place(segment: dict[str, Any], start: float, end: float | None) -> str:
    """CSS left/width of a segment on a scale from `start` to `end` (None: now, for a run still going)."""
    if end is None:
        end = time.time()
    span = max(end - start, 1e-6)
    to = segment["to"] if segment["to"] is not None else end
    left = min(max((segment["from"] - start) / span, 0.0), 1.0) * 100
    width = min(max((to - segment["from"]) / span, 0.0), 1.0) * 100
    return f"left:{left:.3f}%;width:{min(width, 100 - left):.3f}%"


def _state_class(state_type: Any) -> str:
    return "state-" + (state_type.value if isinstance(state_type, StateType) else str(state_type)).lower()


def _query(request: Request, **changes: Any) -> str:
    """This page's query string with some parameters changed (None removes one)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    items += [(k, v) for k, v in changes.items() if v is not None]
    return ("?" + urlencode(items)) if items else "?"


def _json_attr(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


_env: Any = None


def environment() -> Any:
    """The Jinja2 environment, made (and jinja2 imported) at the first page: the server starts without it."""
    global _env
    if _env is None:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 trim_blocks=True, lstrip_blocks=True, auto_reload=False)
        env.filters.update(local=_local, duration=_duration, state_class=_state_class, iso=iso, tojson_attr=_json_attr,
                           short=lambda text, n=80: text if not text or len(text) <= n else text[: n - 1] + "…")
        env.globals.update(version=__version__, segments=_segments, place=_place, levels=LEVELS,
                           time_ranges=TIME_RANGES, state_choices=STATE_CHOICES, colors=STATE_COLORS)
        _env = env
    return _env


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    page = environment().get_template(template)
    html = page.render(request=request, token=request.app.state.token, store=request.app.state.store.where(),
                       now=time.time(), query=lambda **changes: _query(request, **changes), **context)
    return HTMLResponse(html, status_code=status)


# -- the runs page ------------------------------------------------------------------------------------
async def home(request: Request) -> Response:
    return RedirectResponse("/runs", status_code=307)


async def runs(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, (*RUN_FILTER, "cursor", "limit", "deleted"))
    f = _params.run_filter(query)
    limit, cursor = _params.limit(query, RUNS_PAGE), _params.cursor(query)
    hub = request.app.state.hub

    def page_of(store: Any) -> Any:
        positions = hub.positions(logs=False) if store is not None else (0, 0)
        if store is None:
            return None, positions
        return paged(store, "read_flow_runs_page", f, limit, cursor, True), positions

    page, (seq, _) = await read(request, page_of, need_store=False)
    return render(request, "runs.html", {
        "page": page, "cursor": cursor, "filter": f, "seq": seq, "no_store": page is None,
        "params": {name: query.all(name) if name in ("flow", "state", "tag") else query.one(name)
                   for name in RUN_FILTER},
        "chart_query": _query(request, cursor=None, limit=None, deleted=None), "deleted": query.one("deleted")})


async def runs_row(request: Request) -> Response:
    """One row of the runs page, for a run that appeared while the page is open: 204 if it does not
    match the page's filter."""
    run_id = path_id(request, "flow run")
    query = Query(request.query_params)
    _params.check_known(query, RUN_FILTER)
    f = _params.run_filter(query)

    def row(store: Any) -> Any:
        run = store.read_flow_run(run_id)
        states = store.read_states(run_id)
        created = states[0].ts if states else run.state.ts
        return run if flow_run_matches(f, run, created) else None

    run = await read(request, row)
    if run is None:
        return Response(status_code=204)
    return render(request, "_run_row.html", {"run": run})


async def runs_chart(request: Request) -> Response:
    """Flow runs by state over the page's time range (24 hours unless the filter says): a small SVG of
    stacked bars, fetched after the page has shown (it counts runs: the page does not wait for it)."""
    query = Query(request.query_params)
    _params.check_known(query, RUN_FILTER)
    f = _params.run_filter(query)
    now = time.time()
    start = f.since if f.since is not None else now - 86400
    end = f.until if f.until is not None else now
    span = max(end - start, 60.0)
    bucket = next((b for b in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400) if span / b <= 48),
                  30 * 86400)
    counted = RunFilter(flow_names=f.flow_names, states=f.states, tags=f.tags, since=start, until=f.until,
                        parent_flow_run_id=f.parent_flow_run_id, search=f.search)
    counts = await read(request, lambda store: store.count_flow_runs_by_state(counted, bucket) if store else [],
                        need_store=False)
    first, last = math.floor(start / bucket), math.floor(end / bucket)
    buckets: dict[int, dict[str, int]] = {n: {} for n in range(first, last + 1)}
    for count in counts:
        number = round(count.start / bucket)
        if number in buckets:
            types = buckets[number]
            types[count.state_type.value] = types.get(count.state_type.value, 0) + count.count
    tallest = max((sum(types.values()) for types in buckets.values()), default=0)
    order = ("COMPLETED", "RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING", "CANCELLED", "CRASHED",
             "FAILED")
    bars = [{"start": n * bucket, "total": sum(types.values()),
             "parts": [(t, types[t]) for t in order if types.get(t)]} for n, types in buckets.items()]
    totals: dict[str, list[Any]] = {}
    for count in counts:
        totals.setdefault(count.state_name, [count.state_type.value, 0])[1] += count.count
    return render(request, "_chart.html", {"bars": bars, "tallest": tallest, "bucket": bucket, "totals": totals,
                                           "start": start, "end": end})


# -- a flow run -----------------------------------------------------------------------------------
async def flow_run(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    query = Query(request.query_params)
    _params.check_known(query, ("cursor", "level", "after"))
    cursor = _params.cursor(query)
    level = _params.level(query)
    after = _params.sequence(query, "after") or 0
    hub = request.app.state.hub

    def view(store: Any) -> dict[str, Any]:
        seq, log_seq = hub.positions()
        try:
            page = _data.timeline_page(store, run_id, cursor)
        except ValueError as exc:
            if "cursor" in str(exc):
                raise BadParameter("cursor", str(exc)) from None
            raise
        logs = _data.log_page(store, flow_run_id=run_id, level=level, after=after)
        names = {str(row.run.id): row.run.name for row in page.rows}
        for row in page.rows:
            names.update({str(child.run.id): child.run.name for child in row.rows})
        return {"page": page, "logs": logs, "names": names, "seq": seq, "log_seq": log_seq,
                "counts": _data.task_run_counts(store, run_id),
                "traceback": _data.traceback_of(store, page.flow_run, True),
                "level": level, "cursor": cursor}

    return render(request, "flow_run.html", await read(request, view))


async def flow_run_row(request: Request) -> Response:
    """A timeline row (and a table row, at depth 0) for a task run or subflow of flow run `run_id` that
    appeared while a page shows it (`depth`: how deep that page nests it)."""
    run_id = path_id(request, "flow run")
    try:
        child = uuid.UUID(request.path_params["child_id"])
    except ValueError:
        raise ObjectNotFound(f"No run with id {request.path_params['child_id']!r}.") from None
    query = Query(request.query_params)
    _params.check_known(query, ("start", "end", "depth"))
    start = _params.parse_time("start", query.one("start"))
    end = _params.parse_time("end", query.one("end"))
    depth = int(_params.choice(query, "depth", tuple(str(d) for d in range(_data.MAX_DEPTH)), "0"))

    def row(store: Any) -> Any:
        try:
            run = store.read_task_run(child)
            kind = "task_run"
            parent = run.flow_run_id
        except ObjectNotFound:
            run = store.read_flow_run(child)
            kind = "flow_run"
            parent = run.parent_flow_run_id
        if parent != run_id:
            raise ObjectNotFound(f"Run {child} is not a task run or subflow run of flow run {run_id}.")
        rows: tuple[_data.Row, ...] = ()
        more = kind == "flow_run"
        return _data.Row(kind, run, _data.states_of(store, child), depth, rows, more)

    found = await read(request, row)
    return render(request, "_flow_run_row.html", {"row": found, "page_start": start or found.start,
                                                  "page_end": end})


# -- a task run -----------------------------------------------------------------------------------
async def task_run(request: Request) -> Response:
    run_id = path_id(request, "task run")
    query = Query(request.query_params)
    _params.check_known(query, ("level", "after"))
    level = _params.level(query)
    after = _params.sequence(query, "after") or 0
    hub = request.app.state.hub

    def view(store: Any) -> dict[str, Any]:
        seq, log_seq = hub.positions()
        run = store.read_task_run(run_id)
        states = _data.states_of(store, run_id)
        flow_run = None
        if run.flow_run_id is not None:
            with contextlib.suppress(ObjectNotFound):
                flow_run = store.read_flow_run(run.flow_run_id)
        return {"run": run, "states": states, "flow_run": flow_run, "cache": _data.cache_info(states),
                "logs": _data.log_page(store, task_run_id=run_id, level=level, after=after),
                "traceback": _data.traceback_of(store, run, False), "seq": seq, "log_seq": log_seq, "level": level,
                "names": {str(run.id): run.name}}

    return render(request, "task_run.html", await read(request, view))


# -- background, cache ---------------------------------------------------------------------------------
async def background(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("fragment",))
    from ._queue import read_queue

    queue = await read(request, lambda _store: read_queue(), need_store=False)
    template = "_background.html" if query.one("fragment") else "background.html"
    return render(request, template, {"queue": queue})


async def cache(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("task", "cleared"))
    task = query.one("task")
    records = await read(request, lambda _store: _data.cache_records(task), need_store=False)
    return render(request, "cache.html", {"records": records, "task": task, "root": str(_data.storage_root()),
                                          "cleared": query.one("cleared")})


# -- actions, behind a confirmation ------------------------------------------------------------------
async def confirm_delete(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    _params.check_known(Query(request.query_params), ())

    def view(store: Any) -> dict[str, Any]:
        run = store.read_flow_run(run_id)
        return {"run": run, "counts": _data.task_run_counts(store, run_id)}

    context = await read(request, view)
    return render(request, "confirm.html", {
        "title": f"Delete flow run {context['run'].name}?", "action": f"/flow-runs/{run_id}/delete",
        "button": "Delete", "cancel": f"/flow-runs/{run_id}", "fields": {},
        "what": "delete", **context})


async def check_form(request: Request) -> dict[str, Any]:
    # a urlencoded form of a few fields (no multipart parser needed: the confirmation pages post these)
    body = await request.body()
    if len(body) > 64 * 1024:
        raise BadParameter("form", "the form is too large.")
    form = {key: values[-1] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}
    if not secrets.compare_digest(str(form.get("token", "")), request.app.state.token):
        raise BadParameter("token", "this form is not one of this server's pages (or the server restarted): "
                                    "open the page again and confirm there.")
    return form


async def delete(request: Request) -> Response:
    run_id = path_id(request, "flow run")
    await check_form(request)

    def remove(store: Any) -> str:
        run = store.read_flow_run(run_id)
        store.delete_flow_runs([run_id])
        return run.name

    name = await read(request, remove)
    return RedirectResponse("/runs?" + urlencode({"deleted": name}), status_code=303)


async def confirm_clear(request: Request) -> Response:
    query = Query(request.query_params)
    _params.check_known(query, ("key",))
    key = query.one("key")
    if key is None:
        raise BadParameter("key", "key is missing: which cache record (its key, as the cache page lists it)?")
    path = _data.cache_path(key)
    if path is None or not path.is_file():
        raise ObjectNotFound(f"No cache record with key {key!r} under {_data.storage_root()}.")
    return render(request, "confirm.html", {
        "title": "Clear this cache record?", "action": "/cache/clear", "button": "Clear", "cancel": "/cache",
        "fields": {"key": key}, "what": "clear", "key": key})


async def clear(request: Request) -> Response:
    form = await check_form(request)
    key = str(form.get("key") or "")
    if not await read(request, lambda _store: _data.clear_cache_record(key), need_store=False):
        raise ObjectNotFound(f"No cache record with key {key!r} under {_data.storage_root()}.")
    return RedirectResponse("/cache?" + urlencode({"cleared": key}), status_code=303)


def routes() -> list[Route]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/runs", runs, methods=["GET"]),
        Route("/runs/chart", runs_chart, methods=["GET"]),
        Route("/runs/row/{run_id}", runs_row, methods=["GET"]),
        Route("/flow-runs/{run_id}", flow_run, methods=["GET"]),
        Route("/flow-runs/{run_id}/rows/{child_id}", flow_run_row, methods=["GET"]),
        Route("/flow-runs/{run_id}/delete", confirm_delete, methods=["GET"]),
        Route("/flow-runs/{run_id}/delete", delete, methods=["POST"]),
        Route("/task-runs/{run_id}", task_run, methods=["GET"]),
        Route("/background", background, methods=["GET"]),
        Route("/cache", cache, methods=["GET"]),
        Route("/cache/clear", confirm_clear, methods=["GET"]),
        Route("/cache/clear", clear, methods=["POST"]),
    ]


__all__ = ["STATE_COLORS", "render", "routes"]
