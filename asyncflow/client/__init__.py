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
from .._store.base import as_uuid, check_limit, state_filter

T = TypeVar("T")


class _Reads:
    """The reads both clients share, as plain blocking calls on the store."""

    def __init__(self, store: RunStore | None = None) -> None:
        self._given = store

    @property
    def store(self) -> RunStore:
        return self._given if self._given is not None else get_store()

    def _flow_run(self, flow_run_id: Any) -> FlowRun:
        return _copy(self.store.read_flow_run(as_uuid(flow_run_id, "flow_run_id")))

    def _flow_runs(self, flow_name: str | None, state: Any, limit: int | None) -> list[FlowRun]:
        if flow_name is not None and not isinstance(flow_name, str):
            raise TypeError(f"flow_name must be a string; got {type(flow_name).__name__}.")
        state_filter(state)
        check_limit(limit)
        return [_copy(run) for run in self.store.read_flow_runs(flow_name=flow_name, state=state, limit=limit)]

    def _task_run(self, task_run_id: Any) -> TaskRun:
        return _copy(self.store.read_task_run(as_uuid(task_run_id, "task_run_id")))

    def _task_runs(self, flow_run_id: Any, limit: int | None) -> list[TaskRun]:
        key = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        check_limit(limit)
        return [_copy(run) for run in self.store.read_task_runs(flow_run_id=key, limit=limit)]

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

    def _logs(self, flow_run_id: Any, task_run_id: Any) -> list[LogRecord]:
        flow_key = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        task_key = as_uuid(task_run_id, "task_run_id") if task_run_id is not None else None
        return self.store.read_logs(flow_run_id=str(flow_key) if flow_key else None,
                                    task_run_id=str(task_key) if task_key else None)


def _copy(run: Any) -> Any:
    """Runs from the memory store are the engine's own records: hand out copies."""
    return attrs.evolve(run, parameters=dict(run.parameters))


class AsyncflowClient(_Reads):
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

    async def read_flow_runs(self, *, flow_name: str | None = None,
                             state: str | Iterable[str] | None = None, limit: int | None = None) -> list[FlowRun]:
        """Flow runs, newest first: of one flow, in some states (names such as "Cached" or types such
        as "FAILED", any case), at most `limit`."""
        state_filter(state)
        check_limit(limit)
        return await self._off_loop(self._flow_runs, flow_name, state, limit)

    async def read_task_run(self, task_run_id: uuid.UUID | str) -> TaskRun:
        as_uuid(task_run_id, "task_run_id")
        return await self._off_loop(self._task_run, task_run_id)

    async def read_task_runs(self, *, flow_run_id: uuid.UUID | str | None = None,
                             limit: int | None = None) -> list[TaskRun]:
        """Task runs in the order they were created (of one flow run, if given)."""
        if flow_run_id is not None:
            as_uuid(flow_run_id, "flow_run_id")
        check_limit(limit)
        return await self._off_loop(self._task_runs, flow_run_id, limit)

    async def read_flow_run_states(self, flow_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the flow run entered, oldest first."""
        as_uuid(flow_run_id, "flow_run_id")
        return await self._off_loop(self._flow_run_states, flow_run_id)

    async def read_task_run_states(self, task_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the task run entered, oldest first."""
        as_uuid(task_run_id, "task_run_id")
        return await self._off_loop(self._task_run_states, task_run_id)

    async def read_logs(self, *, flow_run_id: uuid.UUID | str | None = None,
                        task_run_id: uuid.UUID | str | None = None) -> list[LogRecord]:
        """Log lines of a flow run (its task runs' lines included) or of one task run, in order."""
        _check_log_filter(flow_run_id, task_run_id)
        return await self._off_loop(self._logs, flow_run_id, task_run_id)


class SyncAsyncflowClient(_Reads):
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
                       limit: int | None = None) -> list[FlowRun]:
        """Flow runs, newest first: of one flow, in some states (names such as "Cached" or types such
        as "FAILED", any case), at most `limit`."""
        return self._flow_runs(flow_name, state, limit)

    def read_task_run(self, task_run_id: uuid.UUID | str) -> TaskRun:
        return self._task_run(task_run_id)

    def read_task_runs(self, *, flow_run_id: uuid.UUID | str | None = None, limit: int | None = None) -> list[TaskRun]:
        """Task runs in the order they were created (of one flow run, if given)."""
        return self._task_runs(flow_run_id, limit)

    def read_flow_run_states(self, flow_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the flow run entered, oldest first."""
        return self._flow_run_states(flow_run_id)

    def read_task_run_states(self, task_run_id: uuid.UUID | str) -> list[State[Any]]:
        """Every state the task run entered, oldest first."""
        return self._task_run_states(task_run_id)

    def read_logs(self, *, flow_run_id: uuid.UUID | str | None = None,
                  task_run_id: uuid.UUID | str | None = None) -> list[LogRecord]:
        """Log lines of a flow run (its task runs' lines included) or of one task run, in order."""
        _check_log_filter(flow_run_id, task_run_id)
        return self._logs(flow_run_id, task_run_id)


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


__all__ = ["AsyncflowClient", "LogRecord", "ObjectNotFound", "SyncAsyncflowClient", "get_client"]
