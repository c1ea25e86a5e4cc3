"""The PostgreSQL store (issue 14): `ASYNCFLOW_STORE=postgresql://…` records what the SQLite store records,
in one database for every machine. A real PostgreSQL server (tests/pg_server.py), real subprocesses with
their own homes, a server killed mid-flow. The read API's tests run on it too (test_store_reads.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from asyncflow import flow, get_run_logger, task
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._states import State, StateType
from asyncflow._store import StoreError, StoreNotFoundError
from asyncflow._store.postgres import SCHEMA_VERSION, PostgresStore
from asyncflow.testing import isolated_store


@pytest.fixture
def pg(postgres_url):
    store = PostgresStore(postgres_url)
    with isolated_store(store):
        yield store
    store.close()


def env_for(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), ASYNCFLOW_STORE=url, PYTHONUNBUFFERED="1", **extra)
    return env


def sql(url: str, statement: str, *params):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else cur.rowcount


@task
def square(i: int) -> int:
    get_run_logger().info("squaring %s", i)
    return i * i


@flow
def squares(n: int) -> int:
    return sum(square(i) for i in range(n))


# -- the store --------------------------------------------------------------------------------------------
def test_the_setting_chooses_the_postgres_store_and_a_flow_is_recorded_whole(postgres_url, monkeypatch):
    from asyncflow import _settings
    from asyncflow._store import default_store

    monkeypatch.setenv("ASYNCFLOW_STORE", postgres_url)
    _settings.reload()
    store = default_store()
    try:
        assert isinstance(store, PostgresStore)
        with isolated_store(store):
            state = squares(20, return_state=True)
        assert state.result() == sum(i * i for i in range(20))
        [run] = store.read_flow_runs()
        assert run.state.is_completed() and run.run_count == 1 and run.parameters == {"n": 20}
        task_runs = store.read_task_runs(flow_run_id=run.id)
        assert [t.name for t in task_runs] == [f"square-{i}" for i in range(20)]
        assert all(t.state.is_completed() for t in task_runs)
        assert [s.name for s in store.read_states(task_runs[3].id)] == ["Pending", "Running", "Completed"]
        assert "squaring 3" in [line.message for line in store.read_logs(task_run_id=str(task_runs[3].id))]
        assert store.counts()["task_runs"] == 20
    finally:
        store.close()


@pytest.mark.parametrize("value, error", [
    ("postgresql://", "names no host"),
    ("postgresql://db:notaport/x", "expected postgresql://"),
    ("postgres://db:5432/x#frag", "fragment"),
    ("mysql://db/x", "expected one of sqlite, memory, or a PostgreSQL URL"),
])
def test_a_bad_store_url_fails_at_start_naming_the_setting(value, error, monkeypatch):
    from asyncflow import _settings

    monkeypatch.setenv("ASYNCFLOW_STORE", value)
    _settings.reload()
    with pytest.raises(_settings.SettingError, match="ASYNCFLOW_STORE") as info:
        _settings.STORE.value()
    assert error in str(info.value)


def test_a_password_in_the_store_url_is_never_shown(monkeypatch, capsys):
    from asyncflow import _settings
    from asyncflow.cli import main

    monkeypatch.setenv("ASYNCFLOW_STORE", "postgresql://bob:hunter2@db.example:5432/runs")
    _settings.reload()
    assert main(["config", "view"]) == 0
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "postgresql://bob:***@db.example:5432/runs" in out
    monkeypatch.setenv("ASYNCFLOW_STORE", "postgresql://bob:hunter2@db.example:notaport/runs")
    _settings.reload()
    with pytest.raises(_settings.SettingError) as info:
        _settings.STORE.value()
    assert "hunter2" not in str(info.value)


def test_a_database_that_cannot_be_reached_runs_the_flow_in_memory_with_one_warning(monkeypatch, capfd):
    from pg_server import free_port

    from asyncflow import _settings
    from asyncflow._store import MemoryStore, _create_default, set_store

    monkeypatch.setenv("ASYNCFLOW_STORE", f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none")
    _settings.reload()
    previous = set_store(None)
    try:
        store = _create_default()
        assert isinstance(store, MemoryStore)
        assert squares(3) == 5
    finally:
        set_store(previous)
    err = capfd.readouterr().err
    assert err.count("WARNING | asyncflow.store") == 1 and "cannot be reached" in err and "secret" not in err


def test_the_newest_state_by_time_wins_whatever_order_the_batches_arrive_in(pg):
    run = TaskRun(id=uuid.uuid4(), name="t-0", task_name="t", task_key="k", flow_run_id=None, parent_task_run_id=None,
                  tags=("a",), parameters={}, state=State(StateType.PENDING, "Pending", ts=100.0))
    pg.record_task_run(run)
    pg.record_state(run.id, State(StateType.PENDING, "Pending", ts=100.0))
    pg.record_state(run.id, State(StateType.COMPLETED, "Completed", ts=300.0))
    pg.flush()
    pg.record_state(run.id, State(StateType.RUNNING, "Running", ts=200.0))  # late: an earlier state
    pg.flush()
    stored = pg.read_task_run(run.id)
    assert stored.state.name == "Completed" and stored.run_count == 1 and stored.end_time == 300.0
    assert [s.name for s in pg.read_states(run.id)] == ["Pending", "Running", "Completed"]


def test_a_run_recorded_by_two_processes_keeps_one_row_with_every_state(postgres_url):
    """`.delay()` records a run Scheduled in one process; the worker that runs it records it again."""
    caller, worker = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        run = TaskRun(id=uuid.uuid4(), name="send-0", task_name="send", task_key="k", flow_run_id=None,
                      parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.SCHEDULED, "Scheduled",
                                                                                   ts=10.0))
        caller.record_task_run(run)
        caller.record_state(run.id, run.state)
        caller.flush()
        again = TaskRun(id=run.id, name="send-renamed", task_name="send", task_key="k", flow_run_id=None,
                        parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.PENDING, "Pending",
                                                                                     ts=11.0))
        worker.record_task_run(again)
        for i, (kind, name) in enumerate([(StateType.PENDING, "Pending"), (StateType.RUNNING, "Running"),
                                          (StateType.COMPLETED, "Completed")]):
            worker.record_state(run.id, State(kind, name, ts=11.0 + i))
        worker.flush()
        [stored] = caller.read_task_runs()
        assert stored.name == "send-renamed" and stored.state.name == "Completed" and stored.run_count == 1
        assert [s.name for s in caller.read_states(run.id)] == ["Scheduled", "Pending", "Running", "Completed"]
    finally:
        caller.close()
        worker.close()


def test_a_record_the_database_refuses_is_left_out_alone_and_the_rest_is_written(pg, capfd):
    flow_run_id = str(uuid.uuid4())
    for i in range(10):
        pg.record_log(flow_run_id=flow_run_id, task_run_id=None, level="INFO",
                      message="bad \ud800 line" if i == 4 else f"line {i}\x00", ts=time.time())
    pg.flush()
    lines = pg.read_logs(flow_run_id=flow_run_id)
    assert [line.message for line in lines] == [f"line {i}\ufffd" for i in range(10) if i != 4]
    assert pg.lost == 1 and pg.fallback is None
    assert "could not write a record" in capfd.readouterr().err


def test_the_change_feed_misses_no_state_while_two_processes_write_at_once(postgres_url):
    writers = [PostgresStore(postgres_url, linger=0.0, batch_size=7) for _ in range(2)]
    reader = PostgresStore(postgres_url)
    total, seen, since = 2 * 600, [], 0

    def write(store: PostgresStore) -> None:
        for _ in range(300):
            run = FlowRun(id=uuid.uuid4(), name="r", flow_name="f", flow_version=None, parameters={}, tags=(),
                          state=State(StateType.PENDING, "Pending", ts=time.time()))
            store.record_flow_run(run)
            store.record_state(run.id, run.state)
            store.record_state(run.id, State(StateType.COMPLETED, "Completed", ts=time.time()))
        store.flush()

    threads = [threading.Thread(target=write, args=(store,)) for store in writers]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(seen) < total and time.monotonic() < deadline:
            changes, since = reader.read_changes(since, limit=97)
            seen.extend(change.seq for change in changes)
        for thread in threads:
            thread.join(30)
        assert len(seen) == total and len(set(seen)) == total and seen == sorted(seen)
    finally:
        for store in [*writers, reader]:
            store.close()


# -- schema -------------------------------------------------------------------------------------------------
def test_a_reader_of_an_empty_database_says_no_store_is_there(postgres_url):
    with pytest.raises(StoreNotFoundError, match="No asyncflow store in"):
        PostgresStore(postgres_url, create=False)


def test_a_schema_newer_than_this_asyncflow_is_a_clear_error(postgres_url):
    PostgresStore(postgres_url).close()
    sql(postgres_url, "UPDATE schema_version SET version = %s", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this asyncflow"):
        PostgresStore(postgres_url)


def test_store_upgrade_creates_the_schema_and_says_which_version(postgres_url, monkeypatch, capsys):
    from asyncflow import _settings
    from asyncflow.cli import main

    monkeypatch.setenv("ASYNCFLOW_STORE", postgresql := postgres_url)
    _settings.reload()
    assert main(["store", "upgrade"]) == 0
    assert f"from version 0 to {SCHEMA_VERSION}" in capsys.readouterr().out
    assert sql(postgresql, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert main(["store", "upgrade"]) == 0
    assert f"already at version {SCHEMA_VERSION}" in capsys.readouterr().out


# -- retention ------------------------------------------------------------------------------------------------
def test_delete_and_prune_remove_runs_with_everything_under_them(pg):
    kept = squares(3, return_state=True).state_details.flow_run_id
    gone = squares(4, return_state=True).state_details.flow_run_id
    counts = pg.delete_flow_runs([gone])
    assert counts["flow_runs"] == 1 and counts["task_runs"] == 4 and counts["states"] == 3 + 12 and counts["logs"] > 0
    assert [run.id for run in pg.read_flow_runs()] == [kept]
    assert pg.prune(3600)["flow_runs"] == 0  # recent: kept
    dry = pg.prune(0, dry_run=True)
    assert dry["flow_runs"] == 1 and pg.read_flow_runs()
    assert pg.prune(0) == dry
    assert pg.counts() == {"flows": 0, "flow_runs": 0, "task_runs": 0, "states": 0, "logs": 0}
    squares(2)  # the store goes on after a prune
    assert pg.read_flow_runs()[0].state.is_completed()


# -- many processes, crashes -------------------------------------------------------------------------------
RECORDER = textwrap.dedent("""
    import json, sys, time
    from asyncflow import flow
    from asyncflow._store import get_store

    @flow
    def tiny(i: int) -> int:
        return i

    n, expected = int(sys.argv[1]), int(sys.argv[2])
    for i in range(n):
        tiny(i)
    store = get_store()
    deadline = time.monotonic() + 90
    while True:
        seen = store.counts()["flow_runs"]
        if seen >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print(json.dumps({"seen": seen, "store": type(store).__name__}))
""")


def test_two_processes_with_different_homes_record_1000_runs_each_and_both_see_2000(postgres_url, tmp_path):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    procs = []
    for name in ("machine-a", "machine-b"):
        (tmp_path / name).mkdir()
        procs.append(subprocess.Popen([sys.executable, str(script), "1000", "2000"], cwd=tmp_path,
                                      env=env_for(tmp_path / name, postgres_url, ASYNCFLOW_LOGGING_LEVEL="WARNING"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out) == {"seen": 2000, "store": "PostgresStore"}, err
        assert "WARNING" not in err, err
    assert not (tmp_path / "machine-a" / "asyncflow.db").exists()  # nothing recorded on the machine itself
    store = PostgresStore(postgres_url, create=False)
    try:
        assert len(store.read_flow_runs()) == 2000
        assert all(run.state.is_completed() for run in store.read_flow_runs())
    finally:
        store.close()


STUCK = textwrap.dedent("""
    import time
    from asyncflow import flow, task

    @task
    def stuck():
        print("started", flush=True)
        time.sleep(600)

    @flow
    def endless():
        stuck()

    endless()
""")


def test_runs_of_a_killed_process_are_marked_crashed_when_a_process_opens_the_store(postgres_url, tmp_path,
                                                                                    monkeypatch, capsys):
    proc = subprocess.Popen([sys.executable, "-c", STUCK], env=env_for(tmp_path, postgres_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        deadline = time.monotonic() + 60  # until the Running states reach the database (the writer lingers)
        while sql(postgres_url, "SELECT count(*) FROM flow_runs WHERE state_name = 'Running'")[0][0] == 0 \
                or sql(postgres_url, "SELECT count(*) FROM task_runs WHERE state_name = 'Running'")[0][0] == 0:
            assert time.monotonic() < deadline, "the runs did not reach the database within 60 s"
            time.sleep(0.01)
        live = PostgresStore(postgres_url, create=False)  # its owner is alive: nothing is marked
        assert live.recovered == 0 and live.read_flow_runs()[0].state.is_running()
        live.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    from asyncflow import _settings
    from asyncflow.cli import main

    monkeypatch.setenv("ASYNCFLOW_STORE", postgres_url)
    _settings.reload()
    assert main(["flow-run", "ls", "--json"]) == 0  # the CLI opens the store: it recovers
    out = capsys.readouterr().out
    assert '"Crashed"' in out and '"Running"' not in out
    store = PostgresStore(postgres_url, create=False)
    try:
        [run], [task_run] = store.read_flow_runs(), store.read_task_runs()
        assert run.state.is_crashed() and task_run.state.is_crashed() and f"pid {proc.pid} " in run.state.message
        assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Crashed"]
    finally:
        store.close()


FORKING = textwrap.dedent("""
    import os, sys
    from asyncflow import flow
    from asyncflow._store import get_store

    @flow
    def tiny(n: int) -> int:
        return n

    tiny(2)
    pid = os.fork()
    if pid == 0:  # the child records on connections of its own, then exits normally (finalizing everything)
        tiny(3)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    tiny(4)  # the parent's connections were not closed by the child
    store = get_store()
    print(sorted(run.parameters["n"] for run in store.read_flow_runs()), type(store).__name__)
""")


def test_a_forked_child_writes_on_its_own_connection_and_the_parent_goes_on(postgres_url, tmp_path):
    done = subprocess.run([sys.executable, "-c", FORKING], env=env_for(tmp_path, postgres_url), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 3, 4] PostgresStore", done.stderr
    assert "WARNING" not in done.stderr, done.stderr


# -- the CLI --------------------------------------------------------------------------------------------
CLI_FLOW = textwrap.dedent("""
    from asyncflow import flow, task, get_run_logger

    @task
    def greet(name):
        get_run_logger().info("hello %s", name)
        return name

    @flow(name="greetings")
    def greetings():
        return [greet(n) for n in ("ada", "grace")]

    greetings()
""")


def test_the_cli_reads_runs_states_and_logs_from_postgres(postgres_url, tmp_path):
    env = env_for(tmp_path / "elsewhere", postgres_url)
    subprocess.run([sys.executable, "-c", CLI_FLOW], env=env, check=True, capture_output=True, timeout=60)
    cli_env = env_for(tmp_path / "cli-home", postgres_url)

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "asyncflow", *args], env=cli_env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    [run] = json.loads(cli("flow-run", "ls", "--json"))
    assert run["flow_name"] == "greetings" and run["state"]["name"] == "Completed"
    short = run["id"][:8]
    inspected = cli("flow-run", "inspect", short)
    assert "greet-0" in inspected and "Completed" in inspected
    assert "hello ada" in cli("flow-run", "logs", short)
    tasks = json.loads(cli("task-run", "ls", "--json"))
    assert sorted(t["name"] for t in tasks) == ["greet-0", "greet-1"]
    assert "hello grace" in cli("task-run", "logs", next(t for t in tasks if t["name"] == "greet-1")["id"])
    dry = json.loads(cli("store", "prune", "--older-than", "0", "--dry-run", "--json"))
    assert dry["counts"]["flow_runs"] == 1 and dry["store"].startswith("postgresql://")
    assert "postgresql" in cli("version")
    cli("flow-run", "delete", short, "--yes")
    assert json.loads(cli("flow-run", "ls", "--json")) == []


# -- the database dies --------------------------------------------------------------------------------------
def test_killing_the_database_mid_flow_degrades_to_memory_with_a_warning_and_the_flow_completes(tmp_path, capfd):
    from pg_server import PostgresServer

    server = PostgresServer()  # a server of its own: this test kills it
    try:
        url = server.create_database()
        store = PostgresStore(url, flush_timeout=2.0)

        @task
        def step(i: int) -> int:
            if i == 10:
                server.kill()  # SIGKILL: every connection breaks at once
            return i

        @flow
        def long_flow() -> int:
            return sum(step(i) for i in range(30))

        with isolated_store(store):
            state = long_flow(return_state=True)
            assert state.is_completed() and state.result() == sum(range(30))
            assert store.fallback is not None
            run = store.read_flow_run(state.state_details.flow_run_id)  # this process reads its memory
            assert run.state.is_completed()
            names = {r.name for r in store.read_task_runs(flow_run_id=run.id)}  # every run after the kill (those
            assert {f"step-{i}" for i in range(11, 30)} <= names  # the database took before it are there only)
            assert long_flow() == sum(range(30))  # and goes on recording there
        store.close()
        err = capfd.readouterr().err
        assert err.count("cannot write to the PostgreSQL store") == 1, err
        assert "kept in memory only" in err and "could not be reached for 2 s" in err
    finally:
        server.cleanup()


def test_a_database_restarted_mid_flow_is_waited_for_and_nothing_is_lost(capfd):
    """A restart shorter than the flush timeout: records wait in the queue, the writer reconnects."""
    from pg_server import PostgresServer

    server = PostgresServer()
    try:
        url = server.create_database()
        store = PostgresStore(url, flush_timeout=30.0)

        @task
        def step(i: int) -> int:
            if i == 10:
                server.kill()
                threading.Timer(1.0, server.start).start()  # back in a second
            return i

        @flow
        def restarted() -> int:
            return sum(step(i) for i in range(30))

        with isolated_store(store):
            state = restarted(return_state=True)
        assert state.is_completed() and store.fallback is None
        reader = PostgresStore(url, create=False)
        try:
            [run] = reader.read_flow_runs()
            assert run.state.is_completed()
            task_runs = reader.read_task_runs(flow_run_id=run.id)
            assert len(task_runs) == 30 and all(t.state.is_completed() for t in task_runs)
        finally:
            reader.close()
            store.close()
        assert "cannot write" not in capfd.readouterr().err
    finally:
        server.cleanup()


def test_the_client_reads_a_postgres_store(pg):
    from asyncflow.client import RunFilter, get_client

    squares(3)
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs()
        assert run.state.is_completed()
        page = client.read_task_runs(filter=RunFilter(parent_flow_run_id=run.id), limit=2, cursor=None,
                                     newest_first=True)
        assert [t.name for t in page] == ["square-2", "square-1"] and page.next_cursor
        assert [s.name for s in client.read_flow_run_states(run.id)] == ["Pending", "Running", "Completed"]
        assert len(client.read_timeline(run.id).task_runs) == 3
