"""Read what ran: flow runs, task runs, their state histories and logs (Prefect's `get_client`).

    from asyncflow.client import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_name="etl", state="Failed", limit=10)
        history = await client.read_flow_run_states(runs[0].id)

    with get_client(sync_client=True) as client:
        run = client.read_task_run(task_run_id)

The client reads the process's store: by default the SQLite file under ASYNCFLOW_HOME, so another
process (or terminal) with the same home sees every run once it is written (at the latest when the
outermost flow run that recorded it has returned). Reads in this process see everything recorded so
far. The async client runs each read in a worker thread, so the event loop never waits on SQLite.
Runs come back as attrs records (`FlowRun`, `TaskRun`) carrying their current `state`; state
histories as `State` objects (no result data: the store keeps what happened, not values).

Concurrency limits are managed with Prefect's client methods (docs/concurrency-limits.md, "From
Python"): `create_concurrency_limit(tag, n)`, `create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
name=..., limit=...))`, `update_global_concurrency_limit`, `read_global_concurrency_limits`, ... with the
schemas in `asyncflow.client.schemas` (`.actions`, `.objects`, `.responses`, Prefect's paths).

The read API a UI stands on (docs/store.md, "Reading it"): `RunFilter`, cursor paging (pass
`cursor=None` for the first page: a `Page` comes back, with `next_cursor`), the change feed
(`read_changes(since)`), logs since a sequence number, a flow run's whole `read_timeline`, and
`count_flow_runs_by_state`. These read what is stored: they never make the writer flush.

    page = client.read_flow_runs(filter=RunFilter(states="Failed", tags="prod"), limit=50, cursor=None)
    while page.next_cursor:
        page = client.read_flow_runs(filter=RunFilter(states="Failed", tags="prod"), cursor=page.next_cursor)
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs

from .._runs import FlowRun, TaskRun
from .._states import State
from .._store import LogRecord, ObjectNotFound, RunStore, get_store
from .._store.base import ObjectAlreadyExists, as_uuid, check_limit, state_filter
from .._store.reads import (
    Change,
    Page,
    RunFilter,
    StateCount,
    TaskRunTimeline,
    Timeline,
    as_filter,
    check_bucket,
    check_feed_limit,
    check_page_limit,
    check_since,
    levels_from,
)
from ._limits import AsyncLimitMethods, SyncLimitMethods

T = TypeVar("T")


class _NoPaging:
    def __repr__(self) -> str:
        return "<no cursor paging>"


NO_PAGING: Any = _NoPaging()  # the default of `cursor=`: a list comes back, as before; None asks for pages
DEFAULT_PAGE_SIZE = 50


_ARGUMENTS = {"flow_names": "flow_name", "states": "state", "parent_flow_run_id": "flow_run_id"}


def _merge(filter: Any, **fields: Any) -> RunFilter:
    """The filter with the plain arguments (flow_name=, state=, flow_run_id=) folded in."""
    merged = as_filter(filter)
    given = {name: value for name, value in fields.items() if value is not None}
    for name in given:
        if getattr(merged, name) is not None:
            raise TypeError(f"{_ARGUMENTS[name]}= and the filter's {name} both say it: give it once.")
    return attrs.evolve(merged, **given) if given else merged


def _list_args(flow_name: Any, state: Any, limit: Any) -> None:
    if flow_name is not None and not isinstance(flow_name, str):
        raise TypeError(f"flow_name must be a string; got {type(flow_name).__name__}.")
    state_filter(state)
    check_limit(limit)


def _paged_args(limit: Any, cursor: Any) -> int | None:
    """The page size: `limit`, else DEFAULT_PAGE_SIZE when pages are asked for, else all (a list)."""
    if cursor is NO_PAGING:
        return check_limit(limit)
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError(f"cursor must be a page's next_cursor (a string), or None for the first page; got "
                        f"{type(cursor).__name__}.")
    return DEFAULT_PAGE_SIZE if limit is None else check_page_limit(limit)


class _Reads:
    """The reads both clients share, as plain blocking calls on the store."""

    def __init__(self, store: RunStore | None = None) -> None:
        self._given = store

    @property
    def store(self) -> RunStore:
        return self._given if self._given is not None else get_store()

    def _flow_run(self, flow_run_id: Any) -> FlowRun:
        return _copy(self.store.read_flow_run(as_uuid(flow_run_id, "flow_run_id")))

    def _flow_runs(self, flow_name: str | None, state: Any, limit: int | None, filter: Any = None,
                   cursor: Any = NO_PAGING, newest_first: bool = True) -> Any:
        _list_args(flow_name, state, limit)
        if filter is None and cursor is NO_PAGING and newest_first is True:  # today's read (flushes first)
            return [_copy(run) for run in self.store.read_flow_runs(flow_name=flow_name, state=state, limit=limit)]
        f = _merge(filter, flow_names=flow_name, states=state)
        size = _paged_args(limit, cursor)
        if size == 0:
            return []
        page = self.store.read_flow_runs_page(f, size, None if cursor is NO_PAGING else cursor, newest_first)
        return _copied(page, cursor)

    def _task_run(self, task_run_id: Any) -> TaskRun:
        return _copy(self.store.read_task_run(as_uuid(task_run_id, "task_run_id")))

    def _task_runs(self, flow_run_id: Any, limit: int | None, filter: Any = None, cursor: Any = NO_PAGING,
                   newest_first: bool = False) -> Any:
        key = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        check_limit(limit)
        if filter is None and cursor is NO_PAGING and newest_first is False:  # today's read (flushes first)
            return [_copy(run) for run in self.store.read_task_runs(flow_run_id=key, limit=limit)]
        f = _merge(filter, parent_flow_run_id=key)
        size = _paged_args(limit, cursor)
        if size == 0:
            return []
        page = self.store.read_task_runs_page(f, size, None if cursor is NO_PAGING else cursor, newest_first)
        return _copied(page, cursor)

    def _flow_run_states(self, flow_run_id: Any) -> list[State[Any]]:
        key = as_uuid(flow_run_id, "flow_run_id")
        store = self.store
        store.read_flow_run(key)  # an unknown id is an error, not an empty history
        return store.read_states(key)

    def _task_run_states(self, task_run_id: Any) -> list[State[Any]]:
        key = as_uuid(task_run_id, "task_run_id")
        store = self.store
        store.read_task_run(key)
        return store.read_states(key)

    def _logs(self, flow_run_id: Any, task_run_id: Any, level: Any = None) -> list[LogRecord]:
        levels = levels_from(level)
        flow_key = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        task_key = as_uuid(task_run_id, "task_run_id") if task_run_id is not None else None
        logs = self.store.read_logs(flow_run_id=str(flow_key) if flow_key else None,
                                    task_run_id=str(task_key) if task_key else None)
        return logs if levels is None else [log for log in logs if log.level in levels]

    def _logs_since(self, since: Any, flow_run_id: Any, task_run_id: Any, level: Any,
                    limit: Any) -> tuple[list[LogRecord], int]:
        return self.store.read_logs_since(since, flow_run_id=flow_run_id, task_run_id=task_run_id, level=level,
                                          limit=limit)

    def _changes(self, since: Any, limit: Any) -> tuple[list[Change], int]:
        return self.store.read_changes(since, limit)

    def _timeline(self, flow_run_id: Any) -> Timeline:
        return _copy_timeline(self.store.read_timeline(as_uuid(flow_run_id, "flow_run_id")))

    def _counts(self, filter: Any, bucket_seconds: Any) -> list[StateCount]:
        return self.store.count_flow_runs_by_state(filter, bucket_seconds)


def _copy(run: Any) -> Any:
    """Runs from the memory store are the engine's own records: hand out copies."""
    return run.replace(parameters=dict(run.parameters))


def _copied(page: Page[Any], cursor: Any) -> Any:
    items = tuple(_copy(run) for run in page.items)
    return list(items) if cursor is NO_PAGING else Page(items, page.next_cursor)


def _copy_timeline(timeline: Timeline) -> Timeline:
    return Timeline(_copy(timeline.flow_run), timeline.states,
                    tuple(TaskRunTimeline(_copy(t.run), t.states) for t in timeline.task_runs),
                    tuple(_copy_timeline(sub) for sub in timeline.subflows))


def _check_feed(since: Any, limit: Any) -> None:
    check_since(since)
    check_feed_limit(limit)


def _check_logs_since(since: Any, flow_run_id: Any, task_run_id: Any, level: Any, limit: Any) -> None:
    _check_feed(since, limit)
    levels_from(level)
    if flow_run_id is not None:
        as_uuid(flow_run_id, "flow_run_id")
    if task_run_id is not None:
        as_uuid(task_run_id, "task_run_id")


class AsyncflowClient(_Reads, AsyncLimitMethods):
    """The async client: `async with get_client() as client: await client.read_flow_run(id)`."""

    async def __aenter__(self) -> AsyncflowClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __enter__(self) -> Any:
        raise TypeError("get_client() returns an async client: use `async with get_client() as client:`, or "
                        "`with get_client(sync_client=True) as client:` in sync code.")

    def __exit__(self, *exc_info: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def read_flow_run(self, flow_run_id: uuid.UUID | str) -> FlowRun:
        """One flow run with its current state; `ObjectNotFound` if there is none with this id."""
        as_uuid(flow_run_id, "flow_run_id")  # bad input fails here, not in a thread
        return await self._off_loop(self._flow_run, flow_run_id)

    async def read_flow_runs(self, *, flow_name: str | None = None, state: str | Iterable[str] | None = None,
                             limit: int | None = None, filter: RunFilter | None = None, cursor: Any = NO_PAGING,
                             newest_first: bool = True) -> Any:
        """Flow runs, newest first: of one flow, in some states (names such as "Cached" or types such
        as "FAILED", any case), matching `filter` (a RunFilter), at most `limit`. With `cursor=` (None
        for the first page, then a page's `next_cursor`): a `Page` of `limit` runs (default 50)."""
        _list_args(flow_name, state, limit)
        _merge(filter, flow_names=flow_name, states=state)
        _paged_args(limit, cursor)
        return await self._off_loop(self._flow_runs, flow_name, state, limit, filter, cursor, newest_first)

    async def read_task_run(self, task_run_id: uuid.UUID | str) -> TaskRun:
        as_uuid(task_run_id, "task_run_id")
        return await self._off_loop(self._task_run, task_run_id)

    async def read_task_runs(self, *, flow_run_id: uuid.UUID | str | None = None, limit: int | None = None,
                             filter: RunFilter | None = None, cursor: Any = NO_PAGING,
                             newest_first: bool = False) -> Any:
        """Task runs in the order they were created (of one flow run, if given; matching `filter`).
        With `cursor=` (None for the first page): a `Page` of `limit` runs (default 50)."""
        key = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        check_limit(limit)
        _merge(filter, parent_flow_run_id=key)
        _paged_args(limit, cursor)
        return await self._off_loop(self._task_runs, flow_run_id, limit, filter, cursor, newest_first)

    async def read_flow_run_states(self, flow_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the flow run entered, oldest first."""
        as_uuid(flow_run_id, "flow_run_id")
        return await self._off_loop(self._flow_run_states, flow_run_id)

    async def read_task_run_states(self, task_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the task run entered, oldest first."""
        as_uuid(task_run_id, "task_run_id")
        return await self._off_loop(self._task_run_states, task_run_id)

    async def read_logs(self, *, flow_run_id: uuid.UUID | str | None = None,
                        task_run_id: uuid.UUID | str | None = None, level: str | int | None = None) -> list[LogRecord]:
        """Log lines of a flow run (its task runs' lines included) or of one task run, in order; with
        `level=` ("WARNING", any case, or a number) that level and above only."""
        _check_log_filter(flow_run_id, task_run_id)
        levels_from(level)
        return await self._off_loop(self._logs, flow_run_id, task_run_id, level)

    async def read_logs_since(self, since: int = 0, *, flow_run_id: uuid.UUID | str | None = None,
                              task_run_id: uuid.UUID | str | None = None, level: str | int | None = None,
                              limit: int = 1000) -> tuple[list[LogRecord], int]:
        """Log lines stored after sequence number `since` (of a run, at `level` and above), oldest
        first, and the number to pass as `since` next time."""
        _check_logs_since(since, flow_run_id, task_run_id, level, limit)
        return await self._off_loop(self._logs_since, since, flow_run_id, task_run_id, level, limit)

    async def read_changes(self, since: int = 0, limit: int = 1000) -> tuple[list[Change], int]:
        """The states stored after sequence number `since`, in the order stored, and the number to
        pass as `since` next time (a feed: each state once)."""
        _check_feed(since, limit)
        return await self._off_loop(self._changes, since, limit)

    async def read_timeline(self, flow_run_id: uuid.UUID | str) -> Timeline:
        """A flow run with every state of its own, of its task runs and of its subflows (nested)."""
        as_uuid(flow_run_id, "flow_run_id")
        return await self._off_loop(self._timeline, flow_run_id)

    async def count_flow_runs_by_state(self, filter: RunFilter | None = None,
                                       bucket_seconds: float = 3600) -> list[StateCount]:
        """How many flow runs (matching `filter`) are in each state, by buckets of creation time."""
        as_filter(filter)
        check_bucket(bucket_seconds)
        return await self._off_loop(self._counts, filter, bucket_seconds)


class SyncAsyncflowClient(_Reads, SyncLimitMethods):
    """The sync client: `with get_client(sync_client=True) as client: client.read_flow_run(id)`."""

    def __enter__(self) -> SyncAsyncflowClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    async def __aenter__(self) -> Any:
        raise TypeError("get_client(sync_client=True) returns a sync client: use `with "
                        "get_client(sync_client=True) as client:`, or `async with get_client() as client:` in "
                        "async code.")

    async def __aexit__(self, *exc_info: Any) -> None:  # pragma: no cover - __aenter__ always raises
        return None

    def read_flow_run(self, flow_run_id: uuid.UUID | str) -> FlowRun:
        """One flow run with its current state; `ObjectNotFound` if there is none with this id."""
        return self._flow_run(flow_run_id)

    def read_flow_runs(self, *, flow_name: str | None = None, state: str | Iterable[str] | None = None,
                       limit: int | None = None, filter: RunFilter | None = None, cursor: Any = NO_PAGING,
                       newest_first: bool = True) -> Any:
        """Flow runs, newest first: of one flow, in some states (names such as "Cached" or types such
        as "FAILED", any case), matching `filter` (a RunFilter), at most `limit`. With `cursor=` (None
        for the first page, then a page's `next_cursor`): a `Page` of `limit` runs (default 50)."""
        return self._flow_runs(flow_name, state, limit, filter, cursor, newest_first)

    def read_task_run(self, task_run_id: uuid.UUID | str) -> TaskRun:
        return self._task_run(task_run_id)

    def read_task_runs(self, *, flow_run_id: uuid.UUID | str | None = None, limit: int | None = None,
                       filter: RunFilter | None = None, cursor: Any = NO_PAGING, newest_first: bool = False) -> Any:
        """Task runs in the order they were created (of one flow run, if given; matching `filter`).
        With `cursor=` (None for the first page): a `Page` of `limit` runs (default 50)."""
        return self._task_runs(flow_run_id, limit, filter, cursor, newest_first)

    def read_flow_run_states(self, flow_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the flow run entered, oldest first."""
        return self._flow_run_states(flow_run_id)

    def read_task_run_states(self, task_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the task run entered, oldest first."""
        return self._task_run_states(task_run_id)

    def read_logs(self, *, flow_run_id: uuid.UUID | str | None = None,
                  task_run_id: uuid.UUID | str | None = None, level: str | int | None = None) -> list[LogRecord]:
        """Log lines of a flow run (its task runs' lines included) or of one task run, in order; with
        `level=` ("WARNING", any case, or a number) that level and above only."""
        _check_log_filter(flow_run_id, task_run_id)
        return self._logs(flow_run_id, task_run_id, level)

    def read_logs_since(self, since: int = 0, *, flow_run_id: uuid.UUID | str | None = None,
                        task_run_id: uuid.UUID | str | None = None, level: str | int | None = None,
                        limit: int = 1000) -> tuple[list[LogRecord], int]:
        """Log lines stored after sequence number `since` (of a run, at `level` and above), oldest
        first, and the number to pass as `since` next time."""
        _check_logs_since(since, flow_run_id, task_run_id, level, limit)
        return self._logs_since(since, flow_run_id, task_run_id, level, limit)

    def read_changes(self, since: int = 0, limit: int = 1000) -> tuple[list[Change], int]:
        """The states stored after sequence number `since`, in the order stored, and the number to
        pass as `since` next time (a feed: each state once)."""
        _check_feed(since, limit)
        return self._changes(since, limit)

    def read_timeline(self, flow_run_id: uuid.UUID | str) -> Timeline:
        """A flow run with every state of its own, of its task runs and of its subflows (nested)."""
        return self._timeline(flow_run_id)

    def count_flow_runs_by_state(self, filter: RunFilter | None = None,
                                 bucket_seconds: float = 3600) -> list[StateCount]:
        """How many flow runs (matching `filter`) are in each state, by buckets of creation time."""
        return self._counts(filter, bucket_seconds)


def _check_log_filter(flow_run_id: Any, task_run_id: Any) -> None:
    if flow_run_id is None and task_run_id is None:
        raise TypeError("read_logs() needs flow_run_id=... or task_run_id=... (the logs of which run?).")
    if flow_run_id is not None:
        as_uuid(flow_run_id, "flow_run_id")
    if task_run_id is not None:
        as_uuid(task_run_id, "task_run_id")


def get_client(sync_client: bool = False) -> Any:
    """A client over the process's store: async (`async with get_client() as client`) or, with
    `sync_client=True`, sync (`with get_client(sync_client=True) as client`)."""
    if not isinstance(sync_client, bool):
        raise TypeError(f"sync_client must be True or False; got {sync_client!r}.")
    return SyncAsyncflowClient() if sync_client else AsyncflowClient()


__all__ = ["AsyncflowClient", "Change", "LogRecord", "ObjectAlreadyExists", "ObjectNotFound", "Page", "RunFilter",
           "StateCount", "SyncAsyncflowClient", "TaskRunTimeline", "Timeline", "get_client"]
