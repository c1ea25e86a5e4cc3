"""The run store keeps every record when something goes wrong (issue 11): backpressure instead of
drops, states ordered by time, crash recovery by owner, a store that degrades to memory instead of
stopping a flow, a deleted home noticed, private files. Real SQLite files, real processes and signals."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from asyncflow import flow, task
from asyncflow._runs import FlowRun
from asyncflow._states import State, StateType
from asyncflow._store import MemoryStore, get_store, set_store
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubling(n: int = 3) -> list[int]:
    return [double(i) for i in range(n)]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def run_script(code: str, home: Path, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env_for(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


FLOW_DEFINITIONS = """
import os
from asyncflow import _settings, flow, task
from asyncflow._store import get_store, set_store

@task
def double(x):
    return 2 * x

@flow
def doubling(n):
    return sum(double(i) for i in range(n))
"""
RUN_AND_READ = """
print("result", doubling(10))
print("runs", len(get_store().read_task_runs()))
"""
FLOW_SCRIPT = FLOW_DEFINITIONS + RUN_AND_READ

# The same flow, run as an ordinary user when started as root (root ignores file modes): every module is
# imported (a warm-up flow in memory) before the process gives up root, as the interpreter itself lives
# where that user cannot read.
UNPRIVILEGED_FLOW_SCRIPT = FLOW_DEFINITIONS + """
import asyncflow._store.sqlite, asyncflow._store.memory
os.environ["ASYNCFLOW_STORE"] = "memory"
_settings.reload()
doubling(2)
set_store(None)
os.environ["ASYNCFLOW_STORE"] = "sqlite"
_settings.reload()
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
""" + RUN_AND_READ + """
try:  # what the CLI reads
    reader = asyncflow._store.sqlite.SQLiteStore(_settings.HOME.value() / "asyncflow.db", create=False)
    print("on disk", len(reader.read_task_runs()))
except asyncflow._store.StoreError as exc:
    print("reader:", exc)
"""


# -- backpressure: nothing is dropped --------------------------------------------------------------
def test_a_flow_of_many_submitted_tasks_leaves_every_run_in_the_store_through_a_small_queue(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db", queue_size=50)

    @flow
    def many(n: int) -> int:
        return sum(f.result() for f in double.map(range(n)))

    with isolated_store(store):
        assert many(2_000) == 2 * sum(range(2_000))
        counts = store.counts()
    store.close()
    assert counts["task_runs"] == 2_000 and counts["flow_runs"] == 1
    assert counts["states"] == 3 * 2_001  # Pending, Running, Completed for every run
    assert store.waited > 0 and store.lost == 0  # the queue was full: recording waited, lost nothing


# -- states in time order, not arrival order ---------------------------------------------------------
def test_a_state_that_arrives_late_does_not_replace_a_newer_one(tmp_path):
    from asyncflow._runs import TaskRun

    store = SQLiteStore(tmp_path / "asyncflow.db")
    run_id = uuid.uuid4()
    run = TaskRun(id=run_id, name="r", task_name="t", task_key="k", flow_run_id=None, parent_task_run_id=None,
                  tags=(), parameters={}, state=State(StateType.SCHEDULED, "Scheduled", ts=1.0))
    try:
        store.record_task_run(run)
        store.record_state(run_id, State(StateType.RUNNING, "Running", ts=2.0))
        store.record_state(run_id, State(StateType.COMPLETED, "Completed", ts=3.0))
        assert store.flush()
        store.record_state(run_id, State(StateType.SCHEDULED, "Scheduled", ts=1.0))  # another writer, late
        assert store.flush()
        assert store.read_task_run(run_id).state.name == "Completed"
        assert [s.name for s in store.read_states(run_id)] == ["Scheduled", "Running", "Completed"]
    finally:
        store.close()


# -- crash recovery ----------------------------------------------------------------------------------
KILLED = """
import sys, time
from asyncflow import flow, task

@task
def stuck():
    print("started", flush=True)
    time.sleep(60)

@flow
def endless():
    stuck()

endless()
"""


def until_running_on_disk(path: Path) -> None:
    """Until another process's writer has put its flow run and its task run, Running, in the file (a hang
    guard of 60 s; a fixed sleep for the writer's linger is a race on a loaded machine)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = sqlite3.connect(path)
            try:
                running = conn.execute("SELECT (SELECT count(*) FROM flow_runs WHERE state_name = 'Running') + "
                                       "(SELECT count(*) FROM task_runs WHERE state_name = 'Running')").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:  # not created yet
            running = 0
        if running == 2:
            return
        assert time.monotonic() < deadline, "the runs did not reach the file within 60 s"
        time.sleep(0.01)


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_runs_of_a_killed_process_show_crashed_in_the_next_cli_command(tmp_path, signame, monkeypatch, capsys):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED)], env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        until_running_on_disk(tmp_path / "asyncflow.db")  # (the writer lingers a few ms)
    finally:
        proc.send_signal(getattr(signal, signame))
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    from asyncflow import _settings
    from asyncflow.cli import main

    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("ASYNCFLOW_STORE", raising=False)
    _settings.reload()
    assert main(["flow-run", "ls", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"Crashed"' in out and '"Running"' not in out
    store = SQLiteStore(tmp_path / "asyncflow.db", create=False)
    try:
        [run] = store.read_flow_runs()
        [task_run] = store.read_task_runs()
        assert run.state.is_crashed() and task_run.state.is_crashed()
        wanted = "received SIGTERM" if signame == "SIGTERM" else f"pid {proc.pid} "
        assert wanted in run.state.message
    finally:
        store.close()


def test_runs_of_a_live_process_are_never_marked_crashed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED)], env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        time.sleep(0.1)
        for _ in range(3):
            store = SQLiteStore(tmp_path / "asyncflow.db", create=False)
            try:
                assert store.recovered == 0
                assert store.read_flow_runs()[0].state.is_running()
            finally:
                store.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


# -- an unusable home degrades to memory -------------------------------------------------------------
def test_a_home_that_cannot_be_created_runs_the_flow_in_memory_with_one_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_script(FLOW_SCRIPT, blocker / "home")
    assert result.returncode == 0, result.stderr
    assert "result 90" in result.stdout and "runs 10" in result.stdout  # read back from memory
    assert result.stderr.count("asyncflow.store") == 1
    assert "Not a directory" in result.stderr and "kept in memory only" in result.stderr


def test_a_damaged_store_runs_the_flow_and_says_to_move_the_file_away(tmp_path):
    (tmp_path / "asyncflow.db").write_bytes(b"not a database at all " * 200)
    result = run_script(FLOW_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "result 90" in result.stdout and "runs 10" in result.stdout
    assert "is not an asyncflow store: move" in result.stderr and "kept in memory only" in result.stderr


def test_a_store_missing_one_of_its_tables_degrades_once_and_says_so(tmp_path):
    """A file whose schema version is current but which lacks a table (made by a broken build, or
    edited by hand): one warning naming the problem, and the runs kept in memory — not one warning per
    record while every write fails."""
    import sqlite3

    assert run_script(FLOW_SCRIPT, tmp_path).returncode == 0  # a good store first
    db = sqlite3.connect(tmp_path / "asyncflow.db")
    db.execute("DROP TABLE counters")
    db.commit()
    db.close()
    result = run_script(FLOW_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "result 90" in result.stdout and "runs 10" in result.stdout
    assert result.stderr.count("WARNING") == 1, result.stderr
    assert "no such table: counters" in result.stderr and "kept in memory only" in result.stderr
    assert "move" in result.stderr  # the fix: move the file away (a new store is made there)


@pytest.fixture
def public_dir():
    """A directory every user can reach (pytest's tmp_path is private to its user)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="asyncflow-test-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


@pytest.mark.parametrize("where", ["read-only home", "home out of reach"])
def test_a_home_this_user_cannot_write_still_runs_the_flow(public_dir, where):
    home = public_dir / "home"
    home.mkdir()
    store = SQLiteStore(home / "asyncflow.db")
    with isolated_store(store):
        doubling()
    store.close()
    for path in home.iterdir():
        path.chmod(0o444)
    home.chmod(0o555 if where == "read-only home" else 0o700)
    try:
        result = run_script(UNPRIVILEGED_FLOW_SCRIPT, home)
    finally:
        home.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "result 90" in result.stdout and "runs 10" in result.stdout
    if where == "read-only home":
        assert "on disk 3" in result.stdout  # the runs of before: a reader still reads a store it cannot write
    else:
        assert "reader: Cannot open the asyncflow store" in result.stdout and "Permission denied" in result.stdout
    assert "writable" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("kept in memory only") == 1


def small_disk(store: SQLiteStore, spare_pages: int) -> Any:
    """The store's connect, made to give a real SQLITE_FULL: the database may not grow more than
    `spare_pages` past its size when connected."""
    connect = store._sqlite_connect

    def small() -> Any:
        conn = connect()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")
        return conn

    return small


def test_a_disk_that_fills_mid_run_degrades_to_memory_and_the_flow_completes(tmp_path, monkeypatch, capfd):
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")  # faults made in this process's connection
    monkeypatch.setattr(store, "_sqlite_connect", small_disk(store, 2))
    store._drop_connection()
    with isolated_store(store):
        assert doubling(500) == [2 * i for i in range(500)]
        runs = store.read_task_runs()  # this process still reads its runs (from memory)
    store.close()
    assert len(runs) >= 400 and all(run.state.is_completed() for run in runs[-100:])
    err = capfd.readouterr().err
    assert "full" in err and "free space" in err and err.count("kept in memory only") == 1


def read_only(store: SQLiteStore) -> Any:
    """The store's connect, made to refuse every write (SQLITE_READONLY, as a read-only file would)."""
    connect = store._sqlite_connect

    def refusing() -> Any:
        conn = connect()
        conn.execute("PRAGMA query_only = 1")
        return conn

    return refusing


def break_after_flush(store: SQLiteStore) -> None:
    """Commit what is queued, then make the store refuse its next batch."""
    assert store.flush()
    store._sqlite_connect = read_only(store)
    with store._lock:  # the writer is idle (flushed): its next batch opens a connection that refuses
        store._drop_connection()


def test_a_flow_run_already_in_the_file_when_the_store_breaks_is_still_read_whole_in_this_process(tmp_path, capfd):
    """The flow run and its first task runs were committed before the store became unusable: the memory
    store this process degrades to learns the runs then open, so the flow run reads back, Completed, with
    every task run that came after."""
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")  # faults made in this process's connection

    @task
    def step(i: int) -> int:
        if i == 3:
            break_after_flush(store)  # the flow run and steps 0-3 are in the file now
        return i

    @flow
    def steps() -> int:
        return sum(step(i) for i in range(300))

    with isolated_store(store):
        state = steps(return_state=True)
        assert state.is_completed() and state.result() == sum(range(300))
        assert store.fallback is not None
        run = store.read_flow_run(state.state_details.flow_run_id)
        assert run.state.is_completed() and run.end_time is not None
        names = {r.name for r in store.read_task_runs(flow_run_id=run.id)}
        assert {f"step-{i}" for i in range(4, 300)} <= names
    store.close()
    assert capfd.readouterr().err.count("kept in memory only") == 1


def test_a_flow_run_that_ended_just_before_the_store_broke_reads_back_with_its_last_state(tmp_path, capfd):
    """Its row is in the file, its final state was still queued when the store broke, and it is no longer
    open: the degraded store makes it from the snapshot the writer kept of it."""
    store = SQLiteStore(tmp_path / "asyncflow.db", writer="thread")  # faults made in this process's connection
    run = FlowRun(id=uuid.uuid4(), name="just-ended", flow_name="f", flow_version=None, parameters={}, tags=(),
                  state=State(StateType.PENDING))
    store.record_flow_run(run, run.state)
    store.record_state(run.id, State(StateType.RUNNING))
    break_after_flush(store)
    store.record_state(run.id, State(StateType.COMPLETED))
    store.flush()
    assert store.fallback is not None
    read = store.read_flow_run(run.id)
    assert read.name == "just-ended" and read.state.is_completed() and read.end_time is not None
    store.close()
    assert capfd.readouterr().err.count("kept in memory only") == 1


# -- a deleted home ------------------------------------------------------------------------------------
def test_a_store_deleted_under_a_running_process_is_noticed_and_started_again(tmp_path, capfd):
    import shutil

    home = tmp_path / "home"
    store = SQLiteStore(home / "asyncflow.db")
    with isolated_store(store):
        doubling()
        assert store.flush()
        shutil.rmtree(home)
        doubling()
        assert store.flush()
    store.close()
    assert "was deleted or replaced while this process was writing to it" in capfd.readouterr().err
    reader = SQLiteStore(home / "asyncflow.db", create=False)
    try:
        assert len(reader.read_flow_runs()) == 1 and len(reader.read_task_runs()) == 3
    finally:
        reader.close()


# -- private files -------------------------------------------------------------------------------------
def test_a_new_home_is_private_to_its_user(tmp_path):
    home = tmp_path / "home"
    store = SQLiteStore(home / "asyncflow.db")
    with isolated_store(store):
        doubling()
    store.close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("asyncflow.db", "asyncflow.db-wal", "asyncflow.db-shm"):
        path = home / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_the_process_store_falls_back_to_memory_once(tmp_path, monkeypatch, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ASYNCFLOW_HOME", str(blocker / "home"))
    monkeypatch.setenv("ASYNCFLOW_STORE", "sqlite")
    from asyncflow import _settings

    _settings.reload()
    previous = set_store(None)
    try:
        assert isinstance(get_store(), MemoryStore)
        assert get_store() is get_store()
        assert doubling() == [0, 2, 4]
        assert capfd.readouterr().err.count("kept in memory only") == 1
    finally:
        set_store(previous)


def test_sqlite_is_never_left_with_an_open_transaction_after_a_failed_batch(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        store.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=object(), ts=0.0)  # type: ignore[arg-type]
        assert store.flush()
        with sqlite3.connect(store.path, timeout=0.5) as conn:
            conn.execute("BEGIN IMMEDIATE")  # would fail with "database is locked" if a transaction hung
            conn.execute("ROLLBACK")
    finally:
        store.close()


# -- parameters kept out of the store --------------------------------------------------------------------
def _file_bytes(home: Path) -> bytes:
    return b"".join(path.read_bytes() for path in home.iterdir() if path.name.startswith("asyncflow.db"))


def test_parameters_named_like_secrets_are_never_written(tmp_path):
    @task
    def login(user: str, password: str, api_key: str) -> str:
        return user

    @flow
    def session(user: str, db_password: str) -> str:
        return login(user, "hunter2-task", api_key="key-123")

    store = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(store):
        assert session("alice", "hunter2-flow") == "alice"
        [run] = store.read_task_runs()
        [flow_run] = store.read_flow_runs()
    store.close()
    assert run.parameters == {"user": "alice", "password": "<redacted>", "api_key": "<redacted>"}
    assert flow_run.parameters == {"user": "alice", "db_password": "<redacted>"}
    data = _file_bytes(tmp_path)
    assert b"hunter2" not in data and b"key-123" not in data


def test_redact_parameters_keeps_named_parameters_out_of_runs_and_the_store(tmp_path):
    @task(redact_parameters=["card"])
    def charge(card: str, amount: int) -> int:
        return amount

    @flow(redact_parameters="customer")
    def checkout(customer: str) -> int:
        return charge("4111-1111", 10)

    store = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(store):
        assert checkout("Ada Lovelace") == 10
        [run] = store.read_task_runs()
        [flow_run] = store.read_flow_runs()
    store.close()
    assert run.parameters == {"card": "<redacted>", "amount": 10}
    assert flow_run.parameters == {"customer": "<redacted>"}
    data = _file_bytes(tmp_path)
    assert b"4111" not in data and b"Lovelace" not in data


def test_a_store_can_keep_no_parameters_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_STORE_PARAMETERS", "none")
    from asyncflow import _settings

    _settings.reload()
    store = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(store):
        doubling(2)
        runs = store.read_task_runs()
    store.close()
    assert [run.parameters for run in runs] == [{}, {}]


@pytest.mark.parametrize(("names", "error"), [(["nope"], ValueError), ([1], TypeError), (3, TypeError)])
def test_redact_parameters_naming_no_parameter_is_a_clear_error_at_definition(names, error):
    with pytest.raises(error, match="redact_parameters of task 'f'"):
        @task(redact_parameters=names)
        def f(x: int) -> int:
            return x


# -- background runs, workers killed: every run's final state right in the store ------------------------
BACKGROUND_TASKS = """
import os, time
from asyncflow import task

@task
def work(i: int, marker: str) -> int:
    with open(marker, "a") as f:
        f.write(f"{i}\\n")
    time.sleep(0.05)
    return i
"""


def test_delayed_runs_over_three_workers_with_a_sigkill_all_end_completed_in_the_sqlite_store(tmp_path, monkeypatch):
    runs_count = int(os.environ.get("ASYNCFLOW_TEST_DELAYED_RUNS", "150"))  # the review's size: 500
    home = tmp_path / "home"
    (tmp_path / "bg_store_app.py").write_text(BACKGROUND_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ASYNCFLOW_HOME", str(home))
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LEASE_SECONDS", "1")
    monkeypatch.delenv("ASYNCFLOW_BROKER_URL", raising=False)
    from asyncflow import _settings

    _settings.reload()
    sys.modules.pop("bg_store_app", None)
    import bg_store_app

    marker = tmp_path / "marker.txt"
    store = SQLiteStore(home / "asyncflow.db")
    workers: list[subprocess.Popen[bytes]] = []
    env = env_for(home, ASYNCFLOW_TASK_WORKER_LEASE_SECONDS="1")

    def start_worker() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(workers)}.log", "wb")  # noqa: SIM115 - closed with the test
        proc = subprocess.Popen([sys.executable, "-m", "asyncflow.task_worker", "bg_store_app:work", "--limit", "5"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        workers.append(proc)
        return proc

    try:
        with isolated_store(store):
            futures = [bg_store_app.work.delay(i, str(marker)) for i in range(runs_count)]
            for _ in range(3):
                start_worker()
            deadline = time.monotonic() + 60
            while (not marker.exists() or len(marker.read_text().split()) < 20) and time.monotonic() < deadline:
                time.sleep(0.02)
            workers[0].send_signal(signal.SIGKILL)  # mid-flight: up to 5 runs in its hands
            workers[0].wait(10)
            assert [f.result(timeout=120) for f in futures] == list(range(runs_count))
            for proc in workers[1:]:
                proc.send_signal(signal.SIGTERM)
            for proc in workers[1:]:
                proc.wait(30)
            reader = SQLiteStore(home / "asyncflow.db", create=False)
            try:
                runs = {run.id: run for run in reader.read_task_runs()}
                histories = {f.task_run_id: [s.name for s in reader.read_states(f.task_run_id)] for f in futures}
            finally:
                reader.close()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        store.close()
        sys.modules.pop("bg_store_app", None)
    assert len(runs) == runs_count
    assert all(runs[f.task_run_id].state.name == "Completed" for f in futures), \
        {run.state.name for run in runs.values()}
    for history in histories.values():
        assert history[0] == "Scheduled" and history[-1] == "Completed" and "Running" in history


def test_a_run_marked_crashed_and_then_finished_by_a_live_process_ends_finished(tmp_path):
    """A background run whose worker was killed is delivered again: the Crashed that recovery
    infers never hides the states the second worker records, whichever is written first."""
    from asyncflow._runs import TaskRun

    path = tmp_path / "asyncflow.db"
    run_id = uuid.uuid4()
    killed = SQLiteStore(path)
    run = TaskRun(id=run_id, name="r", task_name="t", task_key="k", flow_run_id=None, parent_task_run_id=None,
                  tags=(), parameters={}, state=State(StateType.PENDING, "Pending", ts=1.0))
    killed.record_task_run(run)
    killed.record_state(run_id, State(StateType.RUNNING, "Running", ts=2.0))
    assert killed.flush()
    with sqlite3.connect(path) as conn:  # its process is gone
        conn.execute("UPDATE owners SET pid = 999999999, started = 'x'")
    killed.close()
    second = SQLiteStore(path, recover=False)
    second._sleeping = False  # its writer thread stays asleep: the records wait for the flush below
    second.record_state(run_id, State(StateType.RUNNING, "Running", ts=3.0))
    second.record_state(run_id, State(StateType.COMPLETED, "Completed", ts=4.0))
    recovering = SQLiteStore(path)  # opens between the second worker's states and their write
    assert recovering.recovered == 1
    assert second.flush()
    try:
        done = recovering.read_task_run(run_id)
        assert done.state.name == "Completed" and done.end_time == 4.0
        assert [s.name for s in recovering.read_states(run_id)] == ["Running", "Crashed", "Running", "Completed"]
    finally:
        recovering.close()
        second.close()


def test_run_numbers_are_never_reused_after_the_newest_runs_are_deleted(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        with isolated_store(store):
            doubling(1)
            [first] = store.read_flow_runs()
            store.delete_flow_runs([first.id])
            doubling(1)
        with sqlite3.connect(store.path) as conn:
            refs = [ref for (ref,) in conn.execute("SELECT ref FROM flow_runs UNION ALL SELECT ref FROM task_runs")]
        assert min(refs) > 2  # the deleted flow run and its task run had 1 and 2
    finally:
        store.close()


def test_the_change_feed_never_gives_a_number_twice_after_the_newest_runs_are_deleted(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        with isolated_store(store):
            doubling(1)
            _changes, last = store.read_changes(0)
            [newest] = store.read_flow_runs()
            store.delete_flow_runs([newest.id])  # its states were the newest rows
            doubling(1)
            assert store.flush()
            later, _ = store.read_changes(last)
        assert len(later) == 6  # the new flow run's and task run's Pending, Running, Completed
        assert all(change.seq > last for change in later)
    finally:
        store.close()
