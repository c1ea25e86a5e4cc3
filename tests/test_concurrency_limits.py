"""Concurrency limits without a server (SPEC §12): `concurrency` / `rate_limit` (sync, and async on
asyncio and trio), leases, tag limits on task runs, bad input. Every test uses a real SQLite store file;
lease expiry, decay and timeouts run on a fake clock."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
import uuid

import anyio
import pytest
from helpers import build_schema

from asyncflow import flow, task
from asyncflow._limits import db as limits_db
from asyncflow._limits import leases, manage, sql, tags
from asyncflow._store import owners
from asyncflow._store.sqlite import SCHEMA_VERSION, SQLiteStore
from asyncflow.concurrency import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError
from asyncflow.concurrency import asyncio as aconc
from asyncflow.concurrency import sync as sconc
from asyncflow.testing import isolated_store

pytest_plugins = ["limits_fixtures"]  # sqlite_store, limits_store, fake_clock


def held(name: str) -> float:
    return manage.read_limit(name)[0].active_slots


# -- the sync API ------------------------------------------------------------------------------------------
def test_sync_concurrency_holds_a_slot_only_inside_the_block(limits_store):
    manage.create_limit("db", 2)
    with sconc.concurrency("db"):
        assert held("db") == 1
        with sconc.concurrency("db"):
            assert held("db") == 2
        assert held("db") == 1
    assert held("db") == 0


def test_sync_concurrency_releases_when_the_block_raises(limits_store):
    manage.create_limit("db", 1)
    with pytest.raises(ZeroDivisionError), sconc.concurrency("db"):
        raise ZeroDivisionError("in the block")
    assert held("db") == 0


def test_a_full_limit_times_out_with_an_error_naming_it(limits_store, fake_clock):
    manage.create_limit("db", 1)
    with (
        sconc.concurrency("db"),
        pytest.raises(AcquireConcurrencySlotTimeoutError, match=r"timed out after 5 second.*'db' \(1 of 1"),
        sconc.concurrency("db", timeout_seconds=5),
    ):
        pass
    assert isinstance(AcquireConcurrencySlotTimeoutError("x"), TimeoutError)
    # it polled with backoff, never a busy loop: few sleeps, growing, none longer than a second
    assert 5 <= len(fake_clock.slept) <= 20
    assert fake_clock.slept[1] > fake_clock.slept[0] and max(fake_clock.slept) <= 1.25


def test_a_waiter_gets_the_slot_when_the_holder_releases_it(limits_store):
    manage.create_limit("db", 1)
    inside, spans = threading.Lock(), []

    def worker() -> None:
        with sconc.concurrency("db", timeout_seconds=30):
            assert inside.acquire(blocking=False), "two holders of a limit of 1 at once"
            start = time.monotonic()
            time.sleep(0.02)
            spans.append((start, time.monotonic()))
            inside.release()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(spans) == 4
    spans.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))


def test_max_retries_gives_up_after_that_many_polls(sqlite_store, fake_clock):
    manage.create_limit("db", 1)
    with (
        sconc.concurrency("db"),
        pytest.raises(ConcurrencySlotAcquisitionError, match=r"after 3 attempt\(s\) \(max_retries=2\)"),
        sconc.concurrency("db", max_retries=2),
    ):
        pass
    assert len(fake_clock.slept) == 2


def test_unknown_limit_warns_once_and_runs_unlimited(sqlite_store, capsys):
    name = f"missing-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        with sconc.concurrency(name):
            pass
    assert capsys.readouterr().err.count(f"Concurrency limits ['{name}'] do not exist - skipping acquisition") == 1


def test_unknown_limit_with_strict_raises(limits_store):
    manage.create_limit("db", 1)
    with (
        pytest.raises(ConcurrencySlotAcquisitionError, match=r"\['nope'\] must be created before acquiring"),
        sconc.concurrency(["db", "nope"], strict=True),
    ):
        pass
    assert held("db") == 0


def test_an_inactive_limit_does_not_limit(limits_store):
    manage.create_limit("db", 1, active=False)
    with sconc.concurrency("db", timeout_seconds=0), sconc.concurrency("db", timeout_seconds=0):
        pass


def test_several_limits_are_taken_all_or_none(limits_store, fake_clock):
    manage.create_limit("a", 1)
    manage.create_limit("b", 1)
    with sconc.concurrency("b"):
        with pytest.raises(AcquireConcurrencySlotTimeoutError), sconc.concurrency(["a", "b"], timeout_seconds=1):
            pass
        assert held("a") == 0
    with sconc.concurrency(["a", "b"], occupy=1):
        assert held("a") == held("b") == 1


def test_occupy_more_than_the_limit_is_an_error_at_once(limits_store):
    manage.create_limit("db", 2)
    with (
        pytest.raises(ConcurrencySlotAcquisitionError, match=r"3 slot\(s\) of concurrency limit 'db': it has 2"),
        sconc.concurrency("db", occupy=3),
    ):
        pass


# -- rate_limit --------------------------------------------------------------------------------------------
def test_rate_limit_takes_slots_that_decay(limits_store, fake_clock):
    manage.create_limit("api", 2, slot_decay_per_second=1.0)
    start = fake_clock.now
    for _ in range(4):
        sconc.rate_limit("api")
    # two at once, then one per second as the slots decay (each wait polls with backoff up to 1.25 s)
    assert 2.0 - 1e-6 <= fake_clock.now - start <= 2.0 + 2 * 1.25
    assert 1.0 < held("api") <= 2.0
    fake_clock.now += 10
    assert held("api") == 0


def test_rate_limit_needs_slot_decay(sqlite_store):
    manage.create_limit("db", 1)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="rate_limit needs a concurrency limit with slot decay"):
        sconc.rate_limit("db")


# -- the async API, on asyncio and trio --------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_concurrency_limits_concurrent_tasks(limits_store):
    manage.create_limit("db", 2)
    active, peak = [0], [0]

    async def worker() -> None:
        async with aconc.concurrency("db", timeout_seconds=30):
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            await anyio.sleep(0.02)
            active[0] -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(worker)
    assert peak[0] == 2
    assert held("db") == 0


@pytest.mark.anyio
async def test_cancelling_a_holder_releases_its_slot(limits_store):
    manage.create_limit("db", 1)
    entered = anyio.Event()

    async def holder() -> None:
        async with aconc.concurrency("db"):
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await entered.wait()
        assert held("db") == 1
        tg.cancel_scope.cancel()
    assert held("db") == 0


@pytest.mark.anyio
async def test_cancelling_a_waiter_leaves_nothing_held(limits_store):
    manage.create_limit("db", 1)
    async with aconc.concurrency("db"):
        with anyio.move_on_after(0.1) as scope:
            async with aconc.concurrency("db"):
                pytest.fail("got a slot of a full limit")
        assert scope.cancelled_caught
        assert held("db") == 1
    assert held("db") == 0


@pytest.mark.anyio
async def test_async_timeout_and_rate_limit(limits_store, fake_clock):
    manage.create_limit("db", 1, slot_decay_per_second=0.5)
    await aconc.rate_limit("db")
    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="timed out after 1 second"):
        await aconc.rate_limit("db", timeout_seconds=1)
    await aconc.rate_limit("db", timeout_seconds=5)  # decayed after 2 s


@contextlib.contextmanager
def _database_busy_until_a_release_was_tried(store, monkeypatch):
    """Another connection holds the store file's write lock (as the store's writer and the lease
    thread do, for a moment, under load) until one attempt to release a slot has found it taken.
    Yields the names of the threads whose attempt freed the slots."""
    tried, freed_in = threading.Event(), []
    real_release = sql.release

    def release(conn, lease):
        try:
            freed = real_release(conn, lease)
        except sqlite3.OperationalError:
            tried.set()
            raise
        freed_in.append(threading.current_thread().name)
        return freed

    monkeypatch.setattr(sql, "release", release)
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    def let_go() -> None:
        tried.wait(60)  # (a hang guard)
        other.execute("COMMIT")

    thread = threading.Thread(target=let_go, daemon=True)
    thread.start()
    try:
        yield freed_in
    finally:
        tried.set()
        thread.join(60)
        other.close()


def test_a_sync_block_frees_its_slot_before_it_ends_even_while_the_database_is_busy(sqlite_store, monkeypatch):
    manage.create_limit("db", 1)
    with contextlib.ExitStack() as stack:
        with sconc.concurrency("db"):
            freed_in = stack.enter_context(_database_busy_until_a_release_was_tried(sqlite_store, monkeypatch))
        assert freed_in == [threading.current_thread().name]  # before: left to the lease thread, for later
        assert held("db") == 0


@pytest.mark.anyio
async def test_an_async_block_frees_its_slot_before_it_ends_even_while_the_database_is_busy(sqlite_store,
                                                                                            monkeypatch):
    manage.create_limit("db", 1)
    with contextlib.ExitStack() as stack:
        async with aconc.concurrency("db"):
            freed_in = stack.enter_context(_database_busy_until_a_release_was_tried(sqlite_store, monkeypatch))
        assert freed_in == [threading.current_thread().name]  # awaited on the loop, which kept running
        assert held("db") == 0


@pytest.mark.anyio
async def test_a_cancelled_async_block_frees_its_slot_before_it_ends_even_while_the_database_is_busy(
        sqlite_store, monkeypatch):
    manage.create_limit("db", 1)
    with contextlib.ExitStack() as stack:
        with anyio.CancelScope() as scope:
            async with aconc.concurrency("db"):
                freed_in = stack.enter_context(_database_busy_until_a_release_was_tried(sqlite_store, monkeypatch))
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert freed_in == [threading.current_thread().name]
        assert held("db") == 0


# -- leases: released when the holder is gone -------------------------------------------------------------
def _claim_as(owner: tuple[str, str, int, str], name: str, lease_seconds: float, now: float) -> sql.Claim:
    db = limits_db.current_or_raise()
    return db.run(lambda conn: sql.claim(conn, [name], 1, "concurrency", "crashed-lease", lease_seconds, None,
                                         owner, now))


def test_a_lease_that_is_not_renewed_expires(limits_store, fake_clock):
    """A holder on another host that died (nobody can check its process): its slot is free once its
    lease runs out, not before."""
    manage.create_limit("db", 1)
    assert _claim_as(("another-host", "boot", 4242, "1"), "db", 30, fake_clock.now).acquired
    with pytest.raises(AcquireConcurrencySlotTimeoutError), sconc.concurrency("db", timeout_seconds=20):
        pass
    with sconc.concurrency("db", timeout_seconds=20):  # the lease expired at 30 s
        assert held("db") == 1


def test_a_dead_holder_on_this_host_frees_its_slot_at_once(limits_store, fake_clock):
    manage.create_limit("db", 1)
    gone = (owners.HOST, owners.BOOT, 2**22 + 12345, "1")  # no such pid
    assert _claim_as(gone, "db", 300, fake_clock.now).acquired
    with sconc.concurrency("db", timeout_seconds=1):
        pass


def test_held_leases_are_renewed_while_the_block_runs(limits_store):
    manage.create_limit("db", 1)
    with sconc.concurrency("db", lease_duration=1):
        first = manage.read_limit("db")[1][0].expires
        deadline = time.monotonic() + 10
        while manage.read_limit("db")[1][0].expires == first:
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)
    assert manage.read_limit("db")[1] == []


def test_a_release_that_finds_the_database_locked_is_retried(sqlite_store):
    manage.create_limit("db", 1)
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    with sconc.concurrency("db"):
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock as the block ends
    other.execute("COMMIT")
    deadline = time.monotonic() + 10
    while held("db"):
        assert time.monotonic() < deadline, "the release was never retried"
        time.sleep(0.02)
    other.close()
    assert not leases.held()


# -- tag limits on task runs -------------------------------------------------------------------------------
def test_tag_limit_limits_concurrent_mapped_task_runs(limits_store):
    manage.create_limit("tag:io", 2)
    lock, active, peak = threading.Lock(), [0], [0]

    @task(tags=["io"])
    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.03)
        with lock:
            active[0] -= 1
        return i

    @flow
    def pipeline() -> list[int]:
        return work.map(range(8)).result()

    assert pipeline() == list(range(8))
    assert 1 <= peak[0] <= 2  # (how many run at once without the limit is the pool's business)
    assert held("tag:io") == 0


def test_a_task_run_waiting_for_a_slot_shows_it_in_its_state(limits_store):
    manage.create_limit("tag:io", 1)

    @task(tags=["io"])
    def work() -> str:
        return "done"

    @flow
    def pipeline() -> str:
        return work()

    result: list[str] = []
    with sconc.concurrency("tag:io"):  # someone else holds the only slot
        runner = threading.Thread(target=lambda: result.append(pipeline()))
        runner.start()
        deadline = time.monotonic() + 30
        while True:  # visible in the store while it waits (the CLI and the UI read it there)
            runs = limits_store.read_task_runs()
            if runs and runs[0].state.name == "AwaitingConcurrencySlot":
                break
            assert time.monotonic() < deadline, "the waiting run's state never showed it"
            time.sleep(0.01)
        state = runs[0].state
        assert state.is_pending() and "'tag:io' (1 of 1 slot(s) in use)" in (state.message or "")
    runner.join(30)
    assert result == ["done"]
    names = [s.name for s in limits_store.read_states(runs[0].id)]
    assert names == ["Pending", "AwaitingConcurrencySlot", "Running", "Completed"]


@pytest.mark.anyio
async def test_tag_limit_on_async_tasks(limits_store):
    manage.create_limit("tag:gpu", 2)
    active, peak = [0], [0]

    @task(tags=["gpu", "other"])
    async def train(i: int) -> int:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await anyio.sleep(0.02)
        active[0] -= 1
        return i

    @flow
    async def pipeline() -> list[int]:
        return [await f for f in train.map(range(6))]  # all six start at once on the loop

    assert await pipeline() == list(range(6))
    assert peak[0] == 2


def test_a_failed_or_retried_task_run_gives_its_slot_back(limits_store):
    manage.create_limit("tag:flaky", 1)
    calls = []

    @task(tags=["flaky"], retries=1)
    def flaky() -> int:
        calls.append(held("tag:flaky"))
        if len(calls) == 1:
            raise ValueError("first attempt")
        return 1

    assert flaky() == 1
    assert calls == [1, 1] and held("tag:flaky") == 0


def test_tasks_without_limited_tags_take_no_slot(limits_store):
    manage.create_limit("tag:io", 1)

    @task(tags=["cpu"])
    def plain() -> float:
        return held("tag:io")

    assert plain() == 0
    assert tags.limited(("cpu",))[1] == []
    assert tags.limited(("io", "cpu"))[1] == ["tag:io"]


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "error", "match"), [
    (0, ValueError, "at least 1 slot; got 0"), (-1, ValueError, "at least 1 slot"),
    (1.5, TypeError, "whole number of slots"), (True, TypeError, "whole number of slots")])
def test_a_limit_below_one_or_not_an_int_is_rejected(sqlite_store, limit, error, match):
    with pytest.raises(error, match=match):
        manage.create_limit("db", limit)


@pytest.mark.parametrize(("names", "error", "match"), [
    (3, TypeError, "must be a string or a list of strings; got int"),
    (["db", 3], TypeError, "names must be strings; got int 3"),
    ([" db"], ValueError, "leading/trailing spaces"), ([""], ValueError, "is empty")])
def test_limit_names_must_be_strings(sqlite_store, names, error, match):
    with pytest.raises(error, match=match), sconc.concurrency(names):
        pass


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"occupy": 0}, "occupy must be"), ({"timeout_seconds": -1}, "timeout_seconds must be"),
    ({"lease_duration": 0.5}, "lease_duration must be at least 1"), ({"max_retries": -1}, "max_retries must be")])
def test_bad_concurrency_arguments_are_rejected_before_waiting(sqlite_store, kwargs, match):
    with pytest.raises(ValueError, match=match), sconc.concurrency("db", **kwargs):
        pass


def test_create_twice_and_unknown_names_say_what_to_do(limits_store):
    manage.create_limit("db", 1)
    with pytest.raises(ValueError, match="exists already: change it with `asyncflow gcl update db"):
        manage.create_limit("db", 2)
    with pytest.raises(KeyError, match="No concurrency limit 'nope'"):
        manage.delete_limit("nope")
    with pytest.raises(ValueError, match="slot_decay_per_second must be"):
        manage.create_limit("x", 1, slot_decay_per_second=-1)


# -- the store's schema ------------------------------------------------------------------------------------
def test_an_older_store_file_is_upgraded_with_the_limit_tables(tmp_path):
    from asyncflow._store import sqlite as sqlite_module

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    build_schema(conn, sqlite_module.MIGRATIONS, 5)  # what asyncflow wrote at schema version 5
    conn.close()
    store = SQLiteStore(path)
    try:
        with isolated_store(store):
            manage.create_limit("db", 1)
            with sconc.concurrency("db"):
                assert held("db") == 1
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        conn.close()
    finally:
        store.close()


def test_an_older_postgres_store_is_upgraded_with_the_limit_tables(postgres_url):
    import psycopg

    from asyncflow._store import postgres as pg_module

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what asyncflow wrote at schema version 1
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in pg_module.MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
    store = pg_module.PostgresStore(postgres_url)
    try:
        with isolated_store(store):
            manage.create_limit("db", 1)
            with sconc.concurrency("db"):
                assert held("db") == 1
        assert store.schema_version() == pg_module.SCHEMA_VERSION >= 2  # 2: the limit tables
    finally:
        store.close()
        db = limits_db._databases.pop(postgres_url, None)
        if db is not None:
            db.close()


def test_a_lease_past_its_expiry_is_freed_for_the_next_claim(limits_store):
    """A holder on another machine that vanished: once its lease's expiry has passed (set in the past
    here, as if the time had gone by), its slot is the next claim's."""
    manage.create_limit("db", 1)
    assert _claim_as(("another-host", "boot", 4242, "1"), "db", 300, time.time()).acquired
    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="'db' \\(1 of 1"), \
            sconc.concurrency("db", timeout_seconds=0.05):
        pass
    db = limits_db.current_or_raise()
    db.run(lambda conn: conn.execute("UPDATE concurrency_slots SET expires = ? WHERE lease = 'crashed-lease'",
                                     (time.time() - 1,)))
    with sconc.concurrency("db", timeout_seconds=0):
        assert [slot.host for slot in manage.read_limit("db")[1]] == [owners.HOST]


def test_threads_with_their_own_connections_never_take_the_last_slot_twice(limits_store):
    """Each thread claims on its own connection (on PostgreSQL, its own session): many claims at once on
    a limit of 3 take exactly 3 slots."""
    manage.create_limit("db", 3)
    db = limits_db.current_or_raise()
    start, results = threading.Barrier(8), []

    def claim(i: int) -> None:
        start.wait(10)
        while True:
            try:
                results.append(db.attempt(lambda conn: sql.claim(conn, ["db"], 1, "concurrency", f"lease-{i}", 300,
                                                                 None, owners.this_process(), time.time())))
                return
            except limits_db.Busy:
                time.sleep(0.01)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert sum(1 for result in results if result.acquired) == 3 and held("db") == 3
    db.run(lambda conn: [sql.release(conn, f"lease-{i}") for i in range(8)])


def test_the_memory_store_keeps_limits_in_this_process():
    manage.create_limit("db", 1)  # the suite's default store is in memory
    with sconc.concurrency("db"):
        assert held("db") == 1
    assert held("db") == 0


# -- fork safety -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_holds_none_of_its_parents_slots_and_can_take_its_own(limits_store):
    manage.create_limit("db", 1)
    manage.create_limit("other", 1)
    with sconc.concurrency("db"):  # the lease thread runs in the parent
        pid = os.fork()
        if pid == 0:  # the child: a fresh lease registry, its own connections, the gate open
            code = 1
            try:
                assert leases.held() == []
                with sconc.concurrency("other", timeout_seconds=10):
                    assert held("other") == 1
                assert held("db") == 1  # the parent's slot is the parent's
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert held("db") == 0 and held("other") == 0  # (on the parent's connection: the child left it alone)


@pytest.mark.parametrize("limits_store", ["postgres"], indirect=True)
def test_threads_that_ended_leave_no_postgres_connection_open(limits_store, postgres_url):
    """(The SQLite store's connections are files, not server sessions.)"""
    import gc

    import psycopg

    def sessions() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND application_name = 'asyncflow'").fetchone()[0])

    manage.create_limit("db", 1)
    before = sessions()

    def use() -> None:
        with sconc.concurrency("db", timeout_seconds=30):
            pass

    for _ in range(5):
        thread = threading.Thread(target=use)
        thread.start()
        thread.join(30)
    gc.collect()
    deadline = time.monotonic() + 10
    while sessions() > before + 1:  # (the lease thread may still hold one while it winds down)
        assert time.monotonic() < deadline, f"{sessions() - before} connections left open by ended threads"
        time.sleep(0.05)


def test_a_waiter_whose_first_poll_found_the_database_locked_still_reports_its_wait(sqlite_store):
    from asyncflow._engine.bridge import BLOCKING, drive_sync
    from asyncflow._limits.acquire import Request, acquire

    manage.create_limit("db", 1)
    reports: list[str] = []
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    with sconc.concurrency("db"):
        other.execute("BEGIN IMMEDIATE")  # the waiter's first poll finds the database locked
        request = Request.checked("db", 1, "concurrency", timeout_seconds=30)
        waiter = threading.Thread(target=lambda: drive_sync(acquire(request, BLOCKING, reports.append)).release())
        waiter.start()
        time.sleep(0.2)
        other.execute("COMMIT")
        deadline = time.monotonic() + 10
        while not reports:
            assert time.monotonic() < deadline, "the wait was never reported"
            time.sleep(0.01)
    waiter.join(30)
    other.close()
    assert len(reports) == 1 and "'db' (1 of 1 slot(s) in use)" in reports[0]
    assert held("db") == 0
