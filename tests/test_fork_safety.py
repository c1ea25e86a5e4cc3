"""Fork safety: a forked child gets fresh locks, threads and run registries from `asyncflow._fork`
(every component registers there), and never touches its parent's runs. Real forks; every child
ends with `os._exit` and the parent waits for it with a generous bound, so a hang fails the test
instead of hanging it. Also the log sink's own locking (L5)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from asyncflow import _fork, flow, task
from asyncflow._engine import open_runs, threads
from asyncflow._logging import Sink, get_logger, sink
from asyncflow._states import State, StateType
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_BOUND = 20.0  # seconds a child may take before it counts as hung (they take milliseconds)


def wait_child(pid: int, bound: float = CHILD_BOUND) -> int | None:
    """The child's exit code, or None if it was still running after `bound` seconds (then killed)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def in_child(body) -> int | None:
    """Fork; the child runs `body()` and exits 0 if it returns True, 1 otherwise (2 if it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = 0 if body() else 1
        finally:
            os._exit(code)
    return wait_child(pid)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def run_script(home: Path, source: str) -> dict:
    script = home / "script.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=env_for(home), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the registry --------------------------------------------------------------------------------
def test_every_component_with_process_state_is_registered_in_the_reset_order():
    import asyncflow._store.sqlite
    import asyncflow._workers.redis_broker
    import asyncflow._workers.sqlite_broker  # noqa: F401

    assert _fork.names()[:8] == ["ids", "store factory", "store", "thread pool", "log sink", "open runs",
                                 "sqlite broker", "redis broker"]


def test_a_child_resets_components_in_order_and_a_failing_hook_does_not_stop_the_others(tmp_path):
    log = tmp_path / "order"
    saved = list(_fork._entries)

    def note(what):
        def hook():
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {what}\n")
        return hook

    def fails():
        raise RuntimeError("boom")

    try:
        _fork.register("test-a", note("child a"), before=note("before a"), after_in_parent=note("parent a"))
        _fork.register("test-b", fails, before=fails, after_in_parent=fails)
        _fork.register("test-c", note("child c"), before=note("before c"), after_in_parent=note("parent c"))
        code = in_child(lambda: True)
    finally:
        _fork._entries[:] = saved
    assert code == 0
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    parent = str(os.getpid())
    assert [what for pid, what in lines if pid == parent] == ["before c", "before a", "parent a", "parent c"]
    assert [what for pid, what in lines if pid != parent] == ["child a", "child c"]


# -- open runs (B6) ------------------------------------------------------------------------------
def test_a_forked_child_that_exits_normally_leaves_its_parents_runs_as_they_ended(tmp_path):
    out = run_script(tmp_path, """
        import json, os, sys, time
        from asyncflow import flow, task
        from asyncflow._store import get_store

        @task
        def spawn_helper():
            pid = os.fork()
            if pid == 0:        # a library forks a helper that exits normally later
                time.sleep(0.2)
                sys.exit(0)     # atexit handlers run in the child
            return pid

        @flow
        def f():
            return spawn_helper()

        pid = f()
        os.waitpid(pid, 0)
        store = get_store()
        [flow_run] = store.read_flow_runs()
        [task_run] = store.read_task_runs()
        print(json.dumps({"flow": [s.name for s in store.read_states(flow_run.id)],
                          "task": [s.name for s in store.read_states(task_run.id)]}))
    """)
    assert out == {"flow": ["Pending", "Running", "Completed"], "task": ["Pending", "Running", "Completed"]}


def test_a_forked_child_has_no_open_runs_and_records_its_own_runs(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    started, release = threading.Event(), threading.Event()

    @task
    def wait_here():
        started.set()
        release.wait(30)

    @flow
    def parent_flow():
        wait_here()

    @flow
    def child_flow():
        return 1

    with isolated_store(store):
        parent = threading.Thread(target=parent_flow, daemon=True)
        parent.start()
        assert started.wait(30)
        assert len(open_runs.OPEN) == 2  # the parent's flow run and task run

        def child():
            if open_runs.OPEN:
                return False
            state = child_flow(return_state=True)
            return state.is_completed() and store.flush(timeout=10)

        code = in_child(child)
        release.set()
        parent.join(30)
    assert code == 0
    names = sorted((r.flow_name, r.state.name) for r in store.read_flow_runs())
    assert names == [("child-flow", "Completed"), ("parent-flow", "Completed")]
    store.close()


def test_parent_and_child_draw_different_run_ids(tmp_path):
    from asyncflow._ids import new_id

    new_id()
    path = tmp_path / "child-id"

    def child():
        path.write_text(str(new_id()))
        return True

    assert in_child(child) == 0
    assert uuid.UUID(path.read_text()) != new_id()


# -- the thread pool (B7) ------------------------------------------------------------------------
def test_a_forked_child_runs_its_first_sync_task_on_a_thread_of_its_own():
    @task
    def one():
        return 1

    @flow
    def f():
        return one.submit().result(timeout=10)

    assert f() == 1  # leaves an idle pool thread behind (idle threads live 30 s)
    assert threads.POOL._idle
    assert in_child(lambda: f() == 1) == 0


# -- the log sink (B8) ---------------------------------------------------------------------------
def hold_sink_lock(seconds: float) -> threading.Event:
    """Another thread takes the sink's lock (as its writer does while it writes a batch) for
    `seconds`; returns once it holds it."""
    held = threading.Event()
    the_sink = sink()

    def holder():
        with the_sink._lock:
            held.set()
            time.sleep(seconds)

    threading.Thread(target=holder, daemon=True).start()
    assert held.wait(10)
    return held


def child_logs_a_warning() -> bool:
    get_logger("child").warning("hello from the child")  # urgent: takes the sink's lock at once
    return True


def test_a_child_forked_while_the_log_sink_writes_a_batch_can_log():
    hold_sink_lock(0.3)
    assert in_child(child_logs_a_warning) == 0


def test_a_child_forked_when_the_sink_cannot_be_waited_for_still_gets_a_fresh_lock(monkeypatch):
    monkeypatch.setattr(_fork, "FORK_WAIT_SECONDS", 0.0)  # the fork does not wait for the writer
    hold_sink_lock(1.0)
    assert in_child(child_logs_a_warning) == 0


def test_a_child_starts_its_own_log_writer_and_leaves_its_parents_queued_lines_to_the_parent(monkeypatch):
    stream = io.StringIO()  # not a terminal: lines are queued for the writer thread
    monkeypatch.setattr(sys, "stderr", stream)
    s = Sink()
    s.write("from the parent", False)  # starts the parent's writer thread
    deadline = time.monotonic() + 10
    while "from the parent" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.005)
    s._lines.append("queued in the parent")  # not yet written when the fork comes

    def child():
        s.write("from the child", False)
        deadline = time.monotonic() + 10
        while "from the child" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.005)  # written by the child's own writer thread, or never
        return "from the child" in stream.getvalue() and "queued in the parent" not in stream.getvalue()

    assert in_child(child) == 0
    s.flush()
    assert stream.getvalue().splitlines() == ["from the parent", "queued in the parent"]


# -- the log sink's own locking (L5) -------------------------------------------------------------
def test_no_log_line_is_lost_while_other_threads_flush(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        s = Sink()
        stop = threading.Event()

        def flusher():
            while not stop.is_set():
                s.flush()

        def writer(n):
            for i in range(2000):
                s.write(f"{n}-{i}", False)

        flushers = [threading.Thread(target=flusher) for _ in range(2)]
        writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in flushers + writers:
            t.start()
        for t in writers:
            t.join(60)
        stop.set()
        for t in flushers:
            t.join(60)
        s.flush()
    finally:
        sys.setswitchinterval(previous)
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{n}-{i}" for n in range(4) for i in range(2000))


def test_a_sink_starts_one_writer_thread_however_many_threads_log_first(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    started = []
    original = threading.Thread.start

    def counting_start(self):
        if self.name == "asyncflow-log-writer":
            started.append(self)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    try:
        for _ in range(20):
            s = Sink()
            barrier = threading.Barrier(8)

            def first_line(s=s, barrier=barrier):
                barrier.wait(10)
                s.write("hello", False)

            before = len(started)
            ts = [threading.Thread(target=first_line) for _ in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            assert len(started) - before == 1
    finally:
        sys.setswitchinterval(previous)


# -- the store (L9): one budget for the whole fork -----------------------------------------------
def test_a_fork_waits_for_busy_stores_at_most_the_fork_budget_in_total(tmp_path, monkeypatch):
    monkeypatch.setattr(_fork, "FORK_WAIT_SECONDS", 0.3)
    stores = [SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db")]
    held, forked, released = threading.Event(), threading.Event(), threading.Event()

    def busy_writer():  # holds every lock a fork waits for, until the fork has happened (or 15 s)
        locks = [lock for s in stores for lock in (s._lock, s._read_lock)]
        for lock in locks:
            lock.acquire()
        held.set()
        forked.wait(15)
        released.set()
        for lock in locks:
            lock.release()

    threading.Thread(target=busy_writer, daemon=True).start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    went_ahead = not released.is_set()  # the fork did not wait for the busy writer to let go
    forked.set()
    assert wait_child(pid) == 0
    assert went_ahead
    for s in stores:
        s.close()


def test_a_child_forked_while_the_store_is_busy_writes_its_own_records(tmp_path, monkeypatch):
    monkeypatch.setattr(_fork, "FORK_WAIT_SECONDS", 0.0)
    store = SQLiteStore(tmp_path / "asyncflow.db")
    release = threading.Event()

    def reader():  # a read in progress in the parent at the fork
        with store._read_lock:
            release.wait(15)

    threading.Thread(target=reader, daemon=True).start()
    time.sleep(0.05)

    def child():
        store.record_state(uuid.uuid4(), State(StateType.COMPLETED))
        return store.flush(timeout=10) and len(store.read_flow_runs()) == 0

    code = in_child(child)
    release.set()
    assert code == 0
    store.close()


# -- the brokers ---------------------------------------------------------------------------------
def test_a_forked_child_enqueues_on_the_sqlite_broker_with_a_connection_of_its_own(tmp_path):
    from asyncflow._workers.broker import QueuedRun
    from asyncflow._workers.sqlite_broker import SQLiteBroker

    broker = SQLiteBroker(tmp_path / "queue.db")
    broker.enqueue(QueuedRun("parent", "k", "t", b"p", 0))
    parent_db = broker._local.db

    def child():
        broker.enqueue(QueuedRun("child", "k", "t", b"c", 0))
        return broker._local.db is not parent_db

    assert in_child(child) == 0
    claimed = broker.claim(["k"], "w", 60, 10)
    assert sorted(r.id for r in claimed) == ["child", "parent"]
    broker.close()


def test_the_fork_gate_waits_for_threads_inside_and_holds_new_ones_until_the_fork_is_done(monkeypatch):
    monkeypatch.setattr(_fork, "_deadline", time.monotonic() + 10)  # the budget of a fork under way
    gate = _fork.Gate()
    inside, leave, left, arrived, passed = (threading.Event() for _ in range(5))

    def occupant():
        with gate:
            inside.set()
            leave.wait(10)
        left.set()

    def latecomer():
        arrived.set()
        with gate:
            passed.set()

    threading.Thread(target=occupant, daemon=True).start()
    assert inside.wait(10)
    threading.Timer(0.05, leave.set).start()
    gate.close()
    assert left.is_set()  # close() returned once the occupant was out, not before
    threading.Thread(target=latecomer, daemon=True).start()
    assert arrived.wait(10)
    assert not passed.wait(0.1)  # kept at the door while the fork is under way
    gate.open()
    assert passed.wait(10)


def test_the_fork_gate_lets_a_fork_go_on_when_the_budget_is_spent(monkeypatch):
    monkeypatch.setattr(_fork, "_deadline", 0.0)  # the fork's budget is spent
    gate, release = _fork.Gate(), threading.Event()
    inside = threading.Event()

    def occupant():
        with gate:
            inside.set()
            release.wait(10)

    threading.Thread(target=occupant, daemon=True).start()
    assert inside.wait(10)
    gate.close()  # returns at once with the occupant still inside
    assert gate._inside == 1
    gate.open()
    release.set()


def test_a_thread_waiting_for_the_sqlite_brokers_lock_waits_outside_sqlite_so_a_fork_can_go_on(tmp_path,
                                                                                                monkeypatch):
    """A fork that copies a thread halfway through SQLite leaves SQLite's process-wide mutexes locked in
    the child, which then hangs at its first SQLite call (a CI hang: a child asked a delayed run's state
    while the parent's hand-off thread waited for the queue's lock). A thread waiting for another
    connection's lock is outside SQLite between short attempts, so the fork gate closes with none inside."""
    import sqlite3

    from asyncflow._workers import sqlite_broker
    from asyncflow._workers.broker import QueuedRun

    monkeypatch.setattr(_fork, "_deadline", time.monotonic() + 10)
    broker = sqlite_broker.SQLiteBroker(tmp_path / "queue.db")
    holder = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    done = threading.Event()
    thread = threading.Thread(target=lambda: (broker.enqueue(QueuedRun("r", "k", "t", b"p", 0)), done.set()),
                              daemon=True)
    thread.start()
    time.sleep(0.3)  # the enqueue is trying, again and again
    assert not done.is_set()
    sqlite_broker._gate.close()
    try:
        assert sqlite_broker._gate._inside == 0  # the waiting thread is not inside SQLite
    finally:
        sqlite_broker._gate.open()
    code = in_child(lambda: sqlite_broker.SQLiteBroker(tmp_path / "queue.db").outcome("r") is None)
    holder.execute("COMMIT")
    holder.close()
    assert code == 0
    assert done.wait(10)
    assert broker.outcome("r") is not None
    broker.close()


def test_a_forked_child_does_not_inherit_the_redis_brokers_claims_or_lock():
    pytest.importorskip("redis")
    from asyncflow._workers.redis_broker import RedisBroker

    broker = RedisBroker("redis://127.0.0.1:1/0")  # never connected: the pool connects on first use
    broker._claimed["run"] = ("stream", b"1-0")
    release = threading.Event()

    def holder():
        with broker._lock:
            release.wait(15)

    threading.Thread(target=holder, daemon=True).start()
    time.sleep(0.05)

    def child():
        return broker._claimed == {} and broker._lock.acquire(timeout=5)

    code = in_child(child)
    release.set()
    assert code == 0
    assert broker._claimed == {"run": ("stream", b"1-0")}
