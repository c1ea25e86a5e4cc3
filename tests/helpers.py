"""Helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from asyncflow import flow, task

HANG_GUARD = 60.0  # seconds: only a broken test waits this long


class Body:
    """Sync user code that blocks until the test lets it go on (`block()`): `entered` once it runs,
    `went_on` if it ran the line after the blocking call, `ended` once it left (its `finally:`, which
    runs when the stop is raised in it)."""

    def __init__(self) -> None:
        self.entered, self.proceed, self.went_on, self.ended = (threading.Event() for _ in range(4))
        self.left_before_proceed = False

    def block(self) -> None:
        self.entered.set()
        try:
            self.proceed.wait(HANG_GUARD)  # a call that outlives the deadline
            self.went_on.set()  # "I will not execute"
        finally:
            # the wait only returns once the test lets it go on: leaving before that means the stop landed
            # before the body was blocked in it (between `entered` and the C wait)
            self.left_before_proceed = not self.proceed.is_set()
            self.ended.set()

    def assert_stopped(self) -> None:
        """The caller has moved on: it did so while the body was still blocked, and the body, let go
        on, is stopped before its next line.

        On a loaded machine the stop can come before the body is blocked: a deadline that passed before
        the run's thread started (the body never runs), or a stop landing between `entered` and the
        blocking wait (the body leaves at once). Both are the library doing its job, so both are
        accepted, and checked for the same thing: no line after the blocking call ran."""
        if not self.entered.is_set():  # stopped before the body started
            self.proceed.set()
            assert not self.went_on.is_set()
            return
        if self.ended.is_set():  # left already: only a stop that landed before the blocking wait does that
            assert self.left_before_proceed and not self.went_on.is_set()
            return
        self.proceed.set()
        assert self.ended.wait(HANG_GUARD)
        assert not self.went_on.is_set()

    async def cancel_once_entered(self, scope: anyio.CancelScope) -> None:
        await anyio.to_thread.run_sync(self.entered.wait, HANG_GUARD)
        scope.cancel()


def run_in_thread(fn: Any, *args: Any, timeout: float = 60.0) -> Any:
    """Run `fn(*args)` in a daemon thread; fail the test (instead of hanging) if it does not finish within
    `timeout` seconds: a hang guard, generous enough for a loaded machine, never a performance bound."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s (deadlock?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    await anyio.lowlevel.checkpoint()
    return a + b


def build_schema(conn: Any, migrations: list[list[str]], version: int) -> None:
    """Make on `conn` (sqlite3 or psycopg) the tables asyncflow wrote at schema `version`, from the
    dialect's own migrations, and record that version (the file header stays as that version left it)."""
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statements in migrations[:version]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"INSERT INTO schema_version VALUES ({int(version)})")


def all_states(db: Any) -> list[tuple[Any, ...]]:
    """Every state an SQLite store's file holds, in number order: (seq, run_ref, type, name, message, ts,
    details, line), from the `states` rows and from the task runs' packed histories (`_store/history.py`).
    `db`: a path, a store (its `path`), or a sqlite3 connection."""
    import sqlite3

    from asyncflow._store import history

    conn = db if isinstance(db, sqlite3.Connection) else sqlite3.connect(getattr(db, "path", db))
    try:
        rows = conn.execute("SELECT seq, run_ref, type, name, message, ts, details, line FROM states").fetchall()
        for ref, created, packed in conn.execute("SELECT ref, created, history FROM task_runs "
                                                 "WHERE history IS NOT NULL"):
            rows += [(seq, ref, code, name, message, ts, details, line)
                     for seq, code, name, message, ts, details, line in history.decode(packed, created)]
    finally:
        if conn is not db:
            conn.close()
    return sorted(rows)


@contextlib.contextmanager
def without_log_capture() -> Iterator[None]:
    """Count what runs hold, not what pytest's log capture keeps of them (a record per engine line)."""
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, []
    try:
        yield
    finally:
        root.handlers = handlers


def tracked_objects() -> int:
    """The objects the cyclic GC tracks, after a collection."""
    gc.collect()
    return len(gc.get_objects())


async def objects_per_waiting_flow(flows: int) -> float:
    """GC-tracked objects per async flow run waiting on its one task (after one flow first: imports,
    caches, the store's indexes)."""
    release = anyio.Event()
    waiting = [0]

    @task
    async def wait_for_release() -> None:
        waiting[0] += 1
        await release.wait()

    @flow
    async def one() -> None:
        await wait_for_release()

    async def wait_until(count: int) -> None:
        while waiting[0] < count:  # noqa: ASYNC110  (polls a count that many tasks raise)
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await wait_until(1)
        release.set()
    release, waiting[0] = anyio.Event(), 0
    with without_log_capture():
        before = tracked_objects()
        async with anyio.create_task_group() as tg:
            for _ in range(flows):
                tg.start_soon(one)
            await wait_until(flows)
            during = tracked_objects()
            release.set()
    return (during - before) / flows
