"""What a root flow run promises its caller when it returns (its log lines are written, its records
are in the store), with many async flows ending at once on one loop: each caller still gets that
promise, and the flows share the writes instead of paying one each. Real SQLite files; counts, never
timings."""

from __future__ import annotations

import io
import sqlite3
import sys
import threading

import anyio
import pytest

from asyncflow import flow, task
from asyncflow._store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

FLOWS = 200


class _CountingStream(io.StringIO):
    """stderr that is not a terminal (lines are queued, written in batches), counting its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _state_on_disk(store: SQLiteStore, flow_run_id: str) -> list[tuple[str]]:
    conn = sqlite3.connect(store.path)  # another connection, no flush: what another process reads
    try:
        return conn.execute("SELECT state_name FROM flow_runs WHERE id = ?", (flow_run_id,)).fetchall()
    finally:
        conn.close()


async def test_many_flows_ending_at_once_each_find_their_lines_written_and_share_the_writes(db, monkeypatch):
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    missing: list[str] = []
    on_disk: list[list[tuple[str]]] = []

    @task
    async def step(i: int) -> int:
        await anyio.sleep(0.01)
        return i

    @flow
    async def one(i: int) -> int:
        return await step(i)

    async def run_and_look(i: int) -> None:
        state = await one(i, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id)
        name = db.read_flow_run(state.state_details.flow_run_id).name
        if f"Flow run '{name}' - Finished in state Completed()" not in stream.getvalue():
            missing.append(name)
        on_disk.append(_state_on_disk(db, flow_run_id))

    async with anyio.create_task_group() as tg:
        for i in range(FLOWS):
            tg.start_soon(run_and_look, i)
    assert missing == []  # each caller found its run's last line written
    assert on_disk == [[("Completed",)]] * FLOWS  # and its run in the file
    assert stream.writes < FLOWS // 2, f"{stream.writes} writes to stderr for {FLOWS} flows"


async def test_a_cancelled_root_flow_has_its_lines_and_records_written_when_the_cancellation_arrives(
        db, monkeypatch):
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)

    @flow
    async def waits() -> None:
        await anyio.sleep(10)

    with anyio.move_on_after(0.05):
        await waits()
    (name,) = [run.name for run in db.read_flow_runs()]
    assert f"Flow run '{name}' - Finished in state Cancelled(" in stream.getvalue()
    conn = sqlite3.connect(db.path)
    try:
        assert conn.execute("SELECT state_name FROM flow_runs").fetchall() == [("Cancelled",)]
    finally:
        conn.close()


async def test_a_root_flow_cancelled_while_it_waits_for_a_shared_flush_returns_only_once_it_is_written(
        db, monkeypatch):
    from asyncflow._engine import flow_run, flushing

    entered, gate = threading.Event(), threading.Event()
    real_flush = flushing.flush_store

    def held_flush() -> object:  # the first round stays in flight until the test lets it go
        entered.set()
        gate.wait(10)
        return real_flush()

    monkeypatch.setattr(flushing, "flush_store", held_flush)
    # the store's writer thread may have written the second flow's records before it ends (then it has
    # nothing to wait for): this test is about a flow that does wait
    monkeypatch.setattr(flow_run, "store_pending", lambda: True)
    outcome: list[list[tuple[int]]] = []
    scopes: list[anyio.CancelScope] = []

    @flow
    async def quick() -> int:
        return 1

    async def second() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await quick()
        assert scope.cancelled_caught  # the cancellation got through, once the wait was over
        conn = sqlite3.connect(db.path)
        try:
            outcome.append(conn.execute("SELECT count(*) FROM flow_runs WHERE state_name = 'Completed'").fetchall())
        finally:
            conn.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(quick)  # its round starts, and is held
        await anyio.to_thread.run_sync(entered.wait, 10)
        tg.start_soon(second)  # it ends while that round is in flight: it waits for the next one
        await anyio.wait_all_tasks_blocked()
        scopes[0].cancel()
        await anyio.wait_all_tasks_blocked()
        assert outcome == []  # cancelled, it still waits for its records
        gate.set()
    assert outcome == [[(2,)]]  # and when the cancellation reached its caller, its run was in the file
