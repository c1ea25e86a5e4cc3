"""The SQLite store's writer process (ASYNCFLOW_STORE_WRITER=process): it stores exactly what the writer
thread stores, and keeps the writer's promises when it dies, when its parent forks, exits or is killed,
when a record is bad and when the database becomes unusable. Real SQLite files, processes and signals.

The rest of the store's tests run with the writer process too: `ASYNCFLOW_STORE_WRITER=process pytest
tests/test_store_*.py` (tox -e store-process)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import all_states

from asyncflow import flow, task
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._states import State, StateDetails, StateType
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store

TABLES = ("flows", "flow_runs", "task_runs", "states", "logs")


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubling(n: int = 3) -> list[int]:
    return [double(i) for i in range(n)]


@task
async def adouble(x: int) -> int:
    return 2 * x


@flow
async def adoubling(n: int) -> list[int]:
    return [await adouble(i) for i in range(n)]


def started(store: SQLiteStore) -> SQLiteStore:
    """A first batch written (in the thread: it registers this process as the runs' owner), then the
    writer process started: every later batch goes through it."""
    store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="first", ts=1.0)
    assert store.flush()
    store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="second", ts=2.0)
    assert store.flush()
    assert store._child is not None and store._child.ready
    return store


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}
    finally:
        conn.close()


def count(path: Path, sql: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def record_everything(store: SQLiteStore) -> None:
    """Every kind of record, with fixed ids and times: a flow run, task runs (one renamed, one whose flow
    run is unknown), states with details, a late state, log lines, engine lines."""
    flow_id, other_flow = uuid.UUID(int=1), uuid.UUID(int=2)
    flow_run = FlowRun(id=flow_id, name="calm-otter", flow_name="f", flow_version="v1", parameters={"n": 3, "s": "x"},
                       tags=("a", "b"), state=State(StateType.PENDING, ts=10.0))
    store.record_flow_run(flow_run, flow_run.state)
    store.record_state(flow_id, State(StateType.RUNNING, ts=11.0))
    for i in range(20):
        run_id = uuid.UUID(int=100 + i)
        details = StateDetails(flow_run_id=flow_id, task_run_id=run_id, cache_key=f"key-{i}",
                               cache_expiration=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
        run = TaskRun(id=run_id, name=f"t-{i}", task_name="t", task_key="t-1", flow_run_id=flow_id if i else other_flow,
                      parent_task_run_id=None, parameters={"i": i, "password": "hunter2"}, tags=("x",),
                      state=State(StateType.PENDING, state_details=details, ts=12.0 + i))
        store.record_task_run(run, run.state)
        store.record_state_line(run_id, 1, flow_id, flow_run_id=str(flow_id), task_run_id=str(run_id), level="INFO",
                                message=f"Created task run 't-{i}' for task 't'", ts=12.0 + i)
        store.record_state(run_id, State(StateType.RUNNING, state_details=details, ts=12.1 + i))
        if i == 3:
            run.name = "renamed"
            store.record_task_run(run)
        store.record_state(run_id, State(StateType.COMPLETED, "Done", message="ok", state_details=details,
                                         ts=12.2 + i))
        store.record_log(flow_run_id=str(flow_id), task_run_id=str(run_id), level="WARNING", message=f"user {i}",
                         ts=12.15 + i)
    store.record_state(flow_id, State(StateType.COMPLETED, ts=40.0))
    store.record_state(flow_id, State(StateType.RUNNING, ts=39.0))  # late: the run stays Completed
    assert store.flush()


def stored_by_thread_and_process(tmp_path, record) -> dict[str, Any]:
    """The rows `record(store)` leaves with the writer thread and with the writer process."""
    stored = {}
    for mode in ("thread", "process"):
        store = SQLiteStore(tmp_path / mode / "asyncflow.db", writer=mode)
        try:
            started(store) if mode == "process" else record_two_logs(store)
            record(store)
            if mode == "process":
                assert store._child is not None and store._child.seq >= 2  # the batches went through it
        finally:
            store.close()
        stored[mode] = rows(store.path)
    return stored


def test_the_writer_process_stores_exactly_what_the_writer_thread_stores(tmp_path):
    stored = stored_by_thread_and_process(tmp_path, record_everything)
    assert stored["process"] == stored["thread"]
    # 20 user lines, 2 of no run, and the created line of the task run recorded in another flow run than its
    # line's: a packed state's line is read back in its task run's flow run, so that one is a log row
    assert len(stored["thread"]["task_runs"]) == 20 and len(stored["thread"]["logs"]) == 23


def record_subflow_and_strays(store: SQLiteStore) -> None:
    """A subflow run (parent flow and task run ids), a state pointing at it (child flow run details), a
    scheduled state, a task run with a parent task run, and a state whose run was never recorded."""
    parent, child, caller, nested = (uuid.UUID(int=n) for n in (7, 8, 9, 10))
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    parent_run = FlowRun(id=parent, name="big-owl", flow_name="parent", flow_version=None, parameters={},
                         tags=(), state=State(StateType.PENDING, ts=50.0))
    store.record_flow_run(parent_run, parent_run.state)
    for run_id, parent_task, ts in ((caller, None, 51.0), (nested, caller, 51.5)):
        run = TaskRun(id=run_id, name=f"t-{ts}", task_name="t", task_key="t-1", flow_run_id=parent,
                      parent_task_run_id=parent_task, parameters={"f": 1.5, "none": None}, tags=(),
                      state=State(StateType.SCHEDULED, state_details=StateDetails(scheduled_time=when), ts=ts))
        store.record_task_run(run, run.state)
    child_run = FlowRun(id=child, name="small-owl", flow_name="child", flow_version="2", parameters={"x": "y"},
                        tags=("t",), state=State(StateType.PENDING, ts=52.0), parent_flow_run_id=parent,
                        parent_task_run_id=caller)
    store.record_flow_run(child_run, child_run.state)
    store.record_state(caller, State(StateType.RUNNING, state_details=StateDetails(child_flow_run_id=child), ts=53.0))
    store.record_state(uuid.UUID(int=99), State(StateType.FAILED, message="lost", ts=54.0))
    assert store.flush()


def test_subflows_details_and_unknown_runs_are_stored_alike_by_the_writer_process_and_thread(tmp_path):
    stored = stored_by_thread_and_process(tmp_path, record_subflow_and_strays)
    assert stored["process"] == stored["thread"]
    assert len(stored["thread"]["flow_runs"]) == 2 and len(stored["thread"]["task_runs"]) == 2


def test_a_batch_goes_to_the_writer_process_as_plain_values(tmp_path):
    """Ids as ints, a state's type as its name, details as their JSON or None: nothing for the writer
    process to rebuild with Python code (UUID, Enum, StateDetails)."""
    import pickle

    from asyncflow._store.writer_pipe import dumps_wired

    store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")
    batch: list[tuple[Any, ...]] = []
    store._write = batch.extend  # type: ignore[method-assign]  # what the writer thread would ship
    try:
        record_everything(store)
        record_subflow_and_strays(store)
    finally:
        store.close()
    plain = (int, float, str, type(None), tuple, list, dict, bool)

    def values(value: Any) -> list[Any]:
        if isinstance(value, (tuple, list)):
            return [v for item in value for v in values(item)]
        if isinstance(value, dict):
            return [v for item in value.items() for v in values(item)]
        return [value]

    shipped = pickle.loads(dumps_wired(("batch", 1, batch)))[2]
    assert all(type(value) in plain for value in values(shipped))
    done = [record for record in shipped if record[0] == 2 and record[3] == "Done"]  # (STATE, id, type, name, ...)
    assert len(done) == 20
    assert all(100 <= r[1] < 120 and r[2] == "COMPLETED" and '"cache_key": "key-' in r[6] for r in done)
    assert next(r for r in shipped if r[0] == 2 and r[1] == 7)[6] is None  # a Pending with no details


def record_two_logs(store: SQLiteStore) -> None:
    for message, ts in (("first", 1.0), ("second", 2.0)):
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=message, ts=ts)
        assert store.flush()


def test_the_runs_written_by_the_writer_process_are_owned_by_this_process(tmp_path):
    """The owner of the runs (marked Crashed if it dies, owners.py) is this process, never the writer."""
    for mode, starts in (("thread", False), ("process", True)):
        store = SQLiteStore(tmp_path / mode / "asyncflow.db", writer=mode)
        try:
            with isolated_store(store):
                assert doubling(5) == [0, 2, 4, 6, 8]
                assert doubling(5) == [0, 2, 4, 6, 8]
            assert (store._child is not None) is starts
            assert len(store.read_task_runs()) == 10
        finally:
            store.close()
        assert count(store.path, "SELECT pid FROM owners") == os.getpid()
        assert count(store.path, "SELECT count(DISTINCT owner) FROM task_runs") == 1


@pytest.mark.anyio
async def test_an_async_flow_records_every_run_through_the_writer_process(tmp_path):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        with isolated_store(store):
            assert await adoubling(300) == [2 * i for i in range(300)]
        runs = store.read_task_runs()
        assert len(runs) == 300 and all(run.state.is_completed() for run in runs)
        assert store._child is not None and store._child.seq > 1
    finally:
        store.close()


@pytest.mark.parametrize("after", [1, 3, 8])
def test_killing_the_writer_process_mid_flow_loses_and_duplicates_nothing(tmp_path, capfd, after):
    """SIGKILL while batches are in flight: the thread learns whether the batch it waited for was committed
    (its number, written in the same transaction), writes it itself if not, and goes on in its thread."""
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process", linger=0.0, batch_size=50))
    child = store._child
    assert child is not None
    first = child.seq

    def kill() -> None:
        while child.seq < first + after and child.proc.poll() is None:
            time.sleep(0.0005)
        child.proc.kill()

    killer = threading.Thread(target=kill)
    try:
        killer.start()
        with isolated_store(store):
            assert doubling(1500) == [2 * i for i in range(1500)]
        killer.join()
        assert store.flush()
        assert store._child is None  # written in the thread from then on
    finally:
        store.close()
    assert count(store.path, "SELECT count(*) FROM task_runs") == 1500
    assert count(store.path, "SELECT count(*) FROM task_runs WHERE state_type = 'COMPLETED'") == 1500
    # three states per task run and three for the flow run, none twice
    states = all_states(store.path)  # the states rows and the packed histories
    assert len(states) == 3 * 1500 + 3
    assert len({(state[1], state[2]) for state in states}) == 3 * 1500 + 3
    assert count(store.path, "SELECT count(*) FROM counters WHERE name LIKE 'writer %'") == 0
    assert capfd.readouterr().err.count("ended (exit code -9) before it answered") == 1


def test_a_batch_the_killed_writer_process_committed_but_did_not_answer_is_not_written_again(tmp_path, capfd):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        with isolated_store(store):
            doubling(10)
        child = store._child
        assert child is not None
        child.proc.kill()  # it committed batch number `child.seq` and died: as if before its answer
        child.proc.wait()
        assert store._child_gone(child) is True
        assert "was committed" in capfd.readouterr().err
        with isolated_store(store):
            doubling(10)  # written in the thread
    finally:
        store.close()
    assert count(store.path, "SELECT count(*) FROM task_runs") == 20
    assert len(all_states(store.path)) == 3 * 22


def test_a_bad_record_is_left_out_alone_through_the_writer_process(tmp_path, capfd):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="before", ts=3.0)
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=object(), ts=3.0)  # type: ignore[arg-type]
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="after", ts=3.0)
        assert store.flush()
        assert store.lost == 1 and store._child is not None  # the writer process refused it, and goes on
        assert "it is left out, the rest of its batch is written" in capfd.readouterr().err
        assert [log.message for log in store.read_logs()] == ["first", "second", "before", "after"]
    finally:
        store.close()


def test_a_value_that_does_not_pickle_is_written_by_the_thread(tmp_path):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="with a lock",
                         ts=threading.Lock())  # type: ignore[arg-type]
        assert store.flush()
        assert store.lost == 1 and store._child is not None
    finally:
        store.close()


def test_a_store_that_becomes_unusable_under_the_writer_process_degrades_once(tmp_path, capfd):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        conn = sqlite3.connect(store.path)
        conn.execute("DROP TABLE states")  # the file's schema broken under the writer process
        conn.close()
        with isolated_store(store):
            assert doubling(20) == [2 * i for i in range(20)]
            runs = store.read_task_runs()
        assert store.fallback is not None and len(runs) == 20
        err = capfd.readouterr().err
        assert err.count("kept in memory only") == 1 and "no such table: states" in err and "move" in err
    finally:
        store.close()


def test_runs_deleted_under_the_writer_process_are_looked_up_again(tmp_path):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        run = FlowRun(id=uuid.uuid4(), name="long", flow_name="f", flow_version=None, parameters={}, tags=(),
                      state=State(StateType.RUNNING))
        store.record_flow_run(run, run.state)
        assert store.flush()
        assert store.delete_flow_runs([run.id])["flow_runs"] == 1
        store.record_state(run.id, State(StateType.COMPLETED))  # its run's number is forgotten: no row to update
        assert store.flush() and store.lost == 0
        assert count(store.path, "SELECT count(*) FROM flow_runs") == 0
        # kept with its run's id, as a state whose run is not in the file (not under the deleted number)
        assert count(store.path, "SELECT run_id FROM states ORDER BY seq DESC LIMIT 1") == str(run.id)
    finally:
        store.close()


SCRIPT = """
import os, sys, time
from asyncflow import flow, task
from asyncflow._store import get_store

@task
def double(x):
    return 2 * x

@flow
def doubling(n):
    return sum(double(i) for i in range(n))

doubling(1)
get_store().flush()
doubling(200)
get_store().flush()
child = get_store()._child
print("writer", child.proc.pid, flush=True)
"""


def run_script(code: str, home: Path, **kwargs: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), ASYNCFLOW_STORE_WRITER="process", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as file:
                if file.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_exit_writes_everything_through_the_writer_process_and_it_ends(tmp_path):
    proc = run_script(SCRIPT + """
for i in range(3000):
    double(i)  # outside flows, not flushed by a flow's end: written at exit
""", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    writer = int(out.split()[1])
    assert gone(writer)
    db = tmp_path / "asyncflow.db"
    assert count(db, "SELECT count(*) FROM task_runs") == 3201
    assert count(db, "SELECT count(*) FROM task_runs WHERE state_type = 'COMPLETED'") == 3201
    assert count(db, "SELECT closed FROM owners") == 1
    assert count(db, "SELECT count(*) FROM counters WHERE name LIKE 'writer %'") == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_writes_its_own_records_and_the_parent_keeps_its_writer_process(tmp_path):
    proc = run_script(SCRIPT + """
pid = os.fork()
if pid == 0:
    store = get_store()
    ok = store._child is None and doubling(50) == 2450 and store.flush()
    os._exit(0 if ok else 1)
doubling(50)
assert os.waitpid(pid, 0)[1] == 0
store = get_store()
assert store._child is child
print("ok", flush=True)
""", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "ok" in out, err
    assert count(tmp_path / "asyncflow.db", "SELECT count(*) FROM task_runs") == 1 + 200 + 50 + 50
    assert count(tmp_path / "asyncflow.db", "SELECT count(*) FROM task_runs WHERE end_time IS NULL") == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_killed_parent_leaves_no_writer_process_and_its_runs_read_crashed(tmp_path):
    """SIGKILL: the writer process sees its input end (a forked child of the parent, still alive, does not
    hold the pipe open) and exits; the next open marks the runs left open Crashed."""
    proc = run_script(SCRIPT + """
if os.fork() == 0:
    time.sleep(60)  # a forked child outlives its parent
    os._exit(0)

@task
def slow():
    time.sleep(60)

@flow
def stuck():
    slow()

import threading
threading.Thread(target=stuck, daemon=True).start()
while get_store().pending() or len(get_store().read_task_runs()) < 202:
    time.sleep(0.05)
print("running", flush=True)
time.sleep(60)
""", tmp_path, start_new_session=True)
    try:
        assert proc.stdout is not None
        writer = int(proc.stdout.readline().split()[1])
        assert proc.stdout.readline().strip() == "running"
        proc.kill()
        proc.wait()
        assert gone(writer), "the writer process outlived its parent"
        store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")
        try:
            states = {run.task_name: run.state.type for run in store.read_task_runs()} | {
                run.flow_name: run.state.type for run in store.read_flow_runs()}
            assert states["slow"] == StateType.CRASHED and states["stuck"] == StateType.CRASHED
        finally:
            store.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked child (the writer process is in a group of its own)


def test_ctrl_c_while_a_flush_waits_for_the_writer_process_loses_and_duplicates_nothing(tmp_path):
    """SIGINT reaches the main thread while it waits for the writer process's answer (the database held by
    another connection meanwhile, then released: the batch is committed, its answer never read). The next
    write reads the batch's fate back: written once."""
    proc = run_script("""
import os, signal, sqlite3, threading, time, uuid
from asyncflow._states import State, StateType
from asyncflow._store.sqlite import SQLiteStore

store = SQLiteStore(os.environ["ASYNCFLOW_HOME"] + "/asyncflow.db", linger=3.0, busy_timeout=5.0)
for _ in range(2):
    store.record_state(uuid.uuid4(), State(StateType.RUNNING))
    store.flush()
assert store._child is not None
holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
holder.execute("BEGIN IMMEDIATE")
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
threading.Timer(0.8, holder.execute, ("COMMIT",)).start()
for _ in range(100):
    store.record_state(uuid.uuid4(), State(StateType.COMPLETED))
try:
    store.flush()
    print("not interrupted")
except KeyboardInterrupt:
    time.sleep(1.0)  # the writer process commits the batch meanwhile
    assert store.flush()
    print("interrupted", store._child is None)
store.close()
""", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["interrupted", "True"], out + err
    assert "was committed" in err and "stayed busy" not in err
    assert len(all_states(tmp_path / "asyncflow.db")) == 102


@pytest.mark.parametrize(("load", "idle_share", "starts"), [(0.0, 0.0, True), (64.0, 0.0, False), (64.0, 0.8, True)])
def test_auto_starts_a_writer_process_after_a_few_thousand_records_when_a_cpu_is_idle(tmp_path, monkeypatch, load,
                                                                                       idle_share, starts):
    # (a load average of 64 on 2 CPUs says busy; the CPUs' counters then say whether they are busy now)
    from asyncflow._store import process_writer

    ticks = iter(range(0, 10**9, 100))

    def sample() -> tuple[float, int, int]:
        total = next(ticks)
        return time.monotonic(), int(total * idle_share), total

    monkeypatch.setattr(process_writer.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(process_writer.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(process_writer.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(process_writer, "cpu_sample", sample)
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="auto")
    try:
        with isolated_store(store):
            doubling(100)  # 600 records: a short script never starts one
            assert store._child is None and not store._no_child
            deadline = time.monotonic() + 60
            while not (store._no_child or (store._child and store._child.seq)) and time.monotonic() < deadline:
                doubling(200)  # the thread writes while the writer process starts in the background
        assert (store._child is not None) is starts and store._no_child is not starts
        assert all(run.state.is_completed() for run in store.read_task_runs())
    finally:
        store.close()


def test_auto_starts_the_writer_process_after_a_thousand_records_and_the_thread_takes_small_batches_meanwhile(
        tmp_path, monkeypatch):
    """A benchmark-sized flow (a few thousand task runs, a fraction of a second) gets the writer process
    for most of its run: it starts after ~170 task runs, and while it starts (a Python start, ~0.1-0.4 s)
    the thread writes in batches small enough for it to take over soon after it is ready."""
    from asyncflow._store import process_writer

    monkeypatch.setattr(process_writer, "_idle_cpu", lambda since=None: True)
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="auto")
    sizes: list[tuple[int, bool]] = []
    write = SQLiteStore._write_batch

    def spy(self: SQLiteStore, conn: Any, batch: list[Any]) -> None:
        sizes.append((len(batch), self._child is not None))
        write(self, conn, batch)

    monkeypatch.setattr(SQLiteStore, "_write_batch", spy)
    try:
        calls = 0
        with isolated_store(store):
            doubling(200)  # ~1,200 records, then ~1,200 more: it starts with the first batch past START_AFTER
            doubling(200)
            calls += 400
            assert store.flush()
            assert store._child is not None and not store._no_child
            deadline = time.monotonic() + 60
            while not store._child.ready and time.monotonic() < deadline:
                doubling(200)  # the thread writes while the writer process starts in the background
                calls += 200
            doubling(50)
            calls += 50
            assert store.flush()
            assert store._child is not None and store._child.seq  # the rest went through it
        starting = [size for size, child in sizes if child][1:]  # (the first: the batch that started it)
        # (a new run and its first state are one record on the queue: up to two rows' records each)
        assert starting and max(starting) <= 2 * process_writer.STARTING_BATCH
        runs = store.read_task_runs(limit=1_000_000)
        assert len(runs) == calls and all(run.state.is_completed() for run in runs)
    finally:
        store.close()


def test_while_the_writer_process_starts_the_writer_thread_leaves_the_records_to_it_and_a_flush_writes_at_once(
        tmp_path, monkeypatch):
    """`auto`: the writer thread would compete with the engine for the GIL to write records the writer
    process is about to take over; it leaves them queued (a bounded time and queue) and the writer process
    writes them once ready. A flush meanwhile writes in its own thread, at once: it never waits for it."""
    from asyncflow._store import process_writer

    monkeypatch.setattr(process_writer, "_idle_cpu", lambda since=None: True)
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="auto")
    writers: list[str] = []
    write = SQLiteStore._write_batch

    def spy(self: SQLiteStore, conn: Any, batch: list[Any]) -> None:
        if self._child is not None and not self._child.ready:
            writers.append(threading.current_thread().name)
        write(self, conn, batch)

    monkeypatch.setattr(SQLiteStore, "_write_batch", spy)
    try:
        with isolated_store(store):
            doubling(200)
            doubling(200)  # past START_AFTER: the writer process starts
            assert store.flush()
            assert store._child is not None
            writers.clear()
            calls = 400
            if not store._child.ready:
                doubling(30)
                calls += 30
                time.sleep(0.05)  # the writer thread would have written them by now
                held = not store._child.ready
                assert store.flush()  # written here, at once
                if held:
                    assert writers and set(writers) == {threading.current_thread().name}
            deadline = time.monotonic() + 60
            while not store._child.ready and time.monotonic() < deadline:
                doubling(20)
                calls += 20
                time.sleep(0.01)
            doubling(20)
            calls += 20
            assert store.flush() and store._child.seq
        runs = store.read_task_runs(limit=1_000_000)
        assert len(runs) == calls and all(run.state.is_completed() for run in runs)
    finally:
        store.close()


def test_a_value_the_writer_process_cannot_unpickle_is_written_by_the_thread(tmp_path):
    """A str subclass of the script's own `__main__` pickles here but not in the writer process: the
    writer process says so and the thread writes the batch, nothing left out."""
    proc = run_script("""
import os, uuid
from asyncflow._store.sqlite import SQLiteStore

class Text(str):
    pass

store = SQLiteStore(os.environ["ASYNCFLOW_HOME"] + "/asyncflow.db")
for message in ("first", "second"):
    store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=message, ts=1.0)
    assert store.flush()
assert store._child is not None
store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=Text("mine"), ts=2.0)
assert store.flush() and store.lost == 0 and store._child is not None
print([log.message for log in store.read_logs()])
store.close()
""", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "['first', 'second', 'mine']"


def test_the_writer_process_outlives_ctrl_c_and_sigterm_and_is_not_in_the_callers_process_group(tmp_path):
    store = started(SQLiteStore(tmp_path / "asyncflow.db", writer="process"))
    try:
        child = store._child
        assert child is not None
        assert os.getpgid(child.proc.pid) != os.getpgid(0)  # a Ctrl-C at the terminal does not reach it
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(child.proc.pid, signum)
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="after", ts=3.0)
        assert store.flush() and store._child is child and child.proc.poll() is None
    finally:
        store.close()
    assert child.proc.returncode == 0  # it ended when its input did


class TestAutoLooksAtTheCpus:
    """`auto` starts the writer process when a CPU is idle: the 1-minute load average says so at once;
    when it says the CPUs are busy (it still counts what ran up to a minute ago), the idle share is
    measured over the last tenth of a second from the kernel's counters."""

    @pytest.fixture
    def cpus(self, monkeypatch):
        from asyncflow._store import process_writer

        state = {"load": 0.0, "samples": [], "slept": []}
        monkeypatch.setattr(process_writer.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        monkeypatch.setattr(process_writer.os, "cpu_count", lambda: 2)
        monkeypatch.setattr(process_writer.os, "getloadavg", lambda: (state["load"], 0.0, 0.0))
        monkeypatch.setattr(process_writer, "cpu_sample", lambda: state["samples"].pop(0))
        monkeypatch.setattr(process_writer.time, "sleep", lambda seconds: state["slept"].append(seconds))
        return state

    def test_a_low_load_average_is_enough(self, cpus):
        from asyncflow._store.process_writer import _idle_cpu

        cpus["load"] = 1.2
        assert _idle_cpu(None) and cpus["slept"] == []  # (no sample read: none was given)

    def test_a_high_load_average_from_earlier_work_is_measured_again_now(self, cpus):
        from asyncflow._store.process_writer import _idle_cpu

        cpus["load"] = 1.9
        # 0.1 s on 2 CPUs (20 ticks), 12 of them idle: 1.2 CPUs idle
        cpus["samples"] = [(10.0, 500, 1000), (10.1, 512, 1020)]
        assert _idle_cpu(None) and cpus["slept"] == [0.1]
        cpus["samples"] = [(10.0, 500, 1000), (10.1, 504, 1020)]  # 0.4 CPUs idle: busy
        assert not _idle_cpu(None)

    def test_the_time_since_the_store_opened_is_the_window_when_it_is_recent_enough(self, cpus):
        from asyncflow._store.process_writer import _idle_cpu

        cpus["load"] = 1.9
        opened = (10.0, 500, 1000)
        cpus["samples"] = [(10.5, 560, 1100)]  # half a second: 60 of 100 ticks idle, 1.2 CPUs
        assert _idle_cpu(opened) and cpus["slept"] == []
        cpus["samples"] = [(60.0, 5000, 11000), (60.1, 5001, 11020)]  # opened long ago: a fresh window, busy
        assert not _idle_cpu(opened) and cpus["slept"] == [0.1]

    def test_one_cpu_never_has_one_to_spare(self, cpus, monkeypatch):
        from asyncflow._store import process_writer

        monkeypatch.setattr(process_writer.os, "sched_getaffinity", lambda pid: {0}, raising=False)
        assert not process_writer._idle_cpu(None)


def test_the_kernels_cpu_counters_are_read_and_move_forward():
    from asyncflow._store.process_writer import cpu_sample, idle_cpus

    first = cpu_sample()
    if first is None:
        pytest.skip("no /proc/stat here: auto uses the load average alone")
    deadline = time.monotonic() + 5
    second = cpu_sample()
    while second is not None and second[2] == first[2] and time.monotonic() < deadline:
        time.sleep(0.01)
        second = cpu_sample()
    assert second is not None and second[2] > first[2] and second[1] >= first[1]
    idle = idle_cpus(first, second, os.cpu_count() or 1)
    assert idle is not None and 0 <= idle <= (os.cpu_count() or 1)


def _writer_thread_beside_a_slow_flush(tmp_path: Any, monkeypatch: Any, hold_begins_in_the_flush: bool
                                       ) -> list[str]:
    """A flush in the main thread writes ten records for 0.3 s while five more arrive; the writer thread is
    holding all along, or from the moment the flush has written (as when that flush starts the writer
    process). Returns the threads that wrote, until the hold ends; then everything must be stored."""
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")
    writers: list[str] = []
    holding = [not hold_begins_in_the_flush]
    write = SQLiteStore._write_batch

    def slow_in_the_flushing_thread(self: SQLiteStore, conn: Any, batch: list[Any]) -> None:
        writers.append(threading.current_thread().name)
        write(self, conn, batch)
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.3)  # the writer thread, woken by the records arriving meanwhile, looks on
            holding[0] = True

    def log(message: str) -> None:
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=message, ts=1.0)

    try:
        log("first")
        assert store.flush()  # (the first batch registers this process: written before any hold)
        deadline = time.monotonic() + 10
        while not store._sleeping and time.monotonic() < deadline:  # its next turn will see the hold
            time.sleep(0.001)
        assert store._sleeping
        monkeypatch.setattr(store, "_hold", lambda: holding[0] and (time.sleep(0.005) or True))
        monkeypatch.setattr(store, "_held", lambda: holding[0], raising=False)
        monkeypatch.setattr(SQLiteStore, "_write_batch", slow_in_the_flushing_thread)
        writers.clear()
        for i in range(10):
            log(f"before {i}")
        later = threading.Timer(0.1, lambda: [log(f"during {i}") for i in range(5)])
        later.start()
        assert store.flush()
        later.join()
        time.sleep(0.1)  # the writer thread, holding, writes nothing
        seen = list(writers)
        monkeypatch.setattr(store, "_hold", lambda: False)
        monkeypatch.setattr(store, "_held", lambda: False, raising=False)
        assert store.flush()
        assert len(store.read_logs()) == 16
        return seen
    finally:
        store.close()


def test_a_holding_writer_thread_does_not_take_over_when_a_flush_is_writing(tmp_path, monkeypatch):
    """While the writer process starts, the writer thread leaves the queue alone (`_hold`). It saw a
    flush's batch in flight, took it for its own batch to retry, skipped its hold and, once the flush was
    done, wrote what had been recorded since (a flake of the test above, about one run in ten)."""
    assert _writer_thread_beside_a_slow_flush(tmp_path, monkeypatch, hold_begins_in_the_flush=False) == [
        "MainThread"]


def test_a_writer_thread_waiting_behind_a_flush_that_starts_the_hold_leaves_the_queue(tmp_path, monkeypatch):
    """The writer thread looked at its hold (none yet), then waited for the write lock behind a flush; the
    flush started the writer process (the hold began), and the writer thread, once it had the lock, wrote
    what had been recorded meanwhile itself (the same test's other flake). It looks again under the lock."""
    assert _writer_thread_beside_a_slow_flush(tmp_path, monkeypatch, hold_begins_in_the_flush=True) == [
        "MainThread"]
