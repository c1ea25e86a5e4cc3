"""Concurrency limits across real processes sharing one store (ASYNCFLOW_HOME's SQLite file, or a
PostgreSQL database on a real server): a limit of 1 is never held by two processes at once, a SIGKILLed
holder's slot is freed, and the CLI manages the limits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow._store import history
from asyncflow._store.fold import STATE_CODES
from asyncflow.cli import main
from asyncflow.testing import isolated_home, isolated_store

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from asyncflow.concurrency.sync import concurrency

    log, rounds, hold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    for _ in range(rounds):
        with concurrency("shared", timeout_seconds=60, lease_duration=5):
            with log.open("a") as f:
                f.write(f"enter {time.time()!r}\\n")
            time.sleep(hold)
            with log.open("a") as f:
                f.write(f"exit {time.time()!r}\\n")
""")

KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from asyncflow.concurrency.sync import concurrency

    with concurrency("shared", lease_duration=3600):
        Path(sys.argv[1]).write_text("holding\\n")
        time.sleep(600)
""")

TAGGED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from asyncflow import flow, task

    log = Path(sys.argv[1])

    @task(tags=["io"])
    def work(i):
        with log.open("a") as f:
            f.write(f"enter {time.time()!r}\\n")
        time.sleep(0.05)
        with log.open("a") as f:
            f.write(f"exit {time.time()!r}\\n")
        return i

    @flow
    def pipeline():
        return work.map(range(3)).result()

    assert pipeline() == [0, 1, 2]
""")


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), PYTHONUNBUFFERED="1")
    if os.environ.get("ASYNCFLOW_STORE"):  # the PostgreSQL store the test runs on (`shared`)
        env["ASYNCFLOW_STORE"] = os.environ["ASYNCFLOW_STORE"]
    return env


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ASYNCFLOW_HOME", str(home))
    monkeypatch.delenv("ASYNCFLOW_STORE", raising=False)
    return home


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request, home):
    """The store every process of the test shares: ASYNCFLOW_HOME's SQLite file, or a PostgreSQL database
    (ASYNCFLOW_STORE) on a real server. Yields its URL (None: SQLite)."""
    from asyncflow import _settings

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    if url is not None:
        os.environ["ASYNCFLOW_STORE"] = url
    _settings.reload()
    try:
        yield url
    finally:
        os.environ.pop("ASYNCFLOW_STORE", None)
        _settings.reload()
        if url is not None:
            from asyncflow._limits import db as limits_db

            db = limits_db._databases.pop(url, None)
            if db is not None:
                db.close()


@contextlib.contextmanager
def this_process_on(home: Path, url: str | None) -> Iterator[Any]:
    """This process recording into the shared store (as the subprocesses do)."""
    if url is None:
        with isolated_home(home) as store:
            yield store
        return
    from asyncflow._store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with isolated_store(store):
            yield store
    finally:
        store.close()


def waiting_states(home: Path, url: str | None) -> int:
    """How many `AwaitingConcurrencySlot` states for the tag limit `io` the shared store recorded (rows of
    `states`, and task runs' states packed in their rows: `_store/history.py`)."""
    query = (f"SELECT count(*) FROM states WHERE type = {STATE_CODES['PENDING']} AND name = 'AwaitingConcurrencySlot' "
             "AND message LIKE '%tag:io%'")
    packed = "SELECT history, created FROM task_runs WHERE history IS NOT NULL"
    if url is None:
        with sqlite3.connect(home / "asyncflow.db") as conn:
            rows, histories = int(conn.execute(query).fetchone()[0]), conn.execute(packed).fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            rows = int(conn.execute(query.replace("%", "%%"), ()).fetchone()[0])
            histories = conn.execute(packed).fetchall()
    waiting = [state for text, created in histories for state in history.decode(text, created)
               if state[1] == STATE_CODES["PENDING"] and state[2] == "AwaitingConcurrencySlot"]
    return rows + sum(1 for state in waiting if "tag:io" in (state[3] or ""))


def spans(log: Path) -> list[tuple[float, float]]:
    """(enter, exit) intervals from the lines every process appended, in time order."""
    events = sorted((float(ts), kind) for kind, ts in (line.split() for line in log.read_text().splitlines()))
    intervals, open_at = [], None
    for ts, kind in events:
        if kind == "enter":
            assert open_at is None, f"two holders inside at {ts}: {events}"
            open_at = ts
        else:
            assert open_at is not None
            intervals.append((open_at, ts))
            open_at = None
    return intervals


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_two_processes_never_hold_a_limit_of_one_at_once(shared, home, tmp_path, capsys):
    assert cli("gcl", "create", "shared", "--limit", "1", capsys=capsys)[0] == 0
    script, log = tmp_path / "holder.py", tmp_path / "spans.log"
    script.write_text(HOLDER)
    procs = [subprocess.Popen([sys.executable, str(script), str(log), "5", "0.03"], env=env_for(home),
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(spans(log)) == 10  # every block ran, and no two overlapped (spans() checks)


def test_a_sigkilled_holder_frees_its_slot(shared, home, tmp_path, capsys):
    assert cli("gcl", "create", "shared", "--limit", "1", capsys=capsys)[0] == 0
    script, marker = tmp_path / "killed.py", tmp_path / "holding"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env_for(home))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text().endswith("\n"):
            assert proc.poll() is None and time.monotonic() < deadline, "the holder did not get the slot"
            time.sleep(0.02)
        code, out, _ = cli("gcl", "inspect", "shared", "--json", capsys=capsys)
        assert code == 0 and json.loads(out)["holders"][0]["pid"] == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    # its lease runs for an hour, but its process is gone: the next claim frees the slot
    from asyncflow.concurrency.sync import concurrency

    with this_process_on(home, shared), concurrency("shared", timeout_seconds=10):
        code, out, _ = cli("gcl", "inspect", "shared", "--json", capsys=capsys)
        assert [holder["pid"] for holder in json.loads(out)["holders"]] == [os.getpid()]


def test_tag_limit_holds_across_processes(shared, home, tmp_path, capsys):
    assert cli("concurrency-limit", "create", "io", "1", capsys=capsys)[0] == 0
    script, log = tmp_path / "tagged.py", tmp_path / "spans.log"
    script.write_text(TAGGED)
    procs = [subprocess.Popen([sys.executable, str(script), str(log)], env=env_for(home), stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(spans(log)) == 6
    waits = waiting_states(home, shared)  # waiting is recorded, for the CLI and the UI
    assert waits >= 2  # each process maps 3 runs at once: at least two of them wait


# -- the CLI ----------------------------------------------------------------------------------------------
def test_gcl_create_ls_inspect_update_delete(shared, home, capsys):
    code, out, _ = cli("gcl", "create", "db", "--limit", "3", "--slot-decay-per-second", "0.5", capsys=capsys)
    assert code == 0 and "Created concurrency limit 'db': 3 slot(s), 0.5 slot(s) freed per second." in out
    code, out, _ = cli("gcl", "ls", capsys=capsys)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["NAME", "LIMIT"] and out.splitlines()[1].split()[:2] == \
        ["db", "3"]
    code, out, _ = cli("gcl", "update", "db", "--limit", "5", "--disable", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["limit"] == 5 and json.loads(out)["active"] is False
    code, out, _ = cli("gcl", "inspect", "db", capsys=capsys)
    assert code == 0 and "Limit:" in out and "No slots held." in out
    assert cli("gcl", "delete", "db", capsys=capsys)[:2] == (0, "Deleted concurrency limit 'db'.\n")
    code, out, _ = cli("gcl", "ls", "--json", capsys=capsys)
    assert code == 0 and json.loads(out) == []
    assert (home / "asyncflow.db").exists() is (shared is None)  # on PostgreSQL, no file at all


def test_concurrency_limit_create_ls_inspect_reset_delete(shared, home, capsys):
    code, out, _ = cli("concurrency-limit", "create", "io", "2", capsys=capsys)
    assert code == 0 and "Created tag concurrency limit for tag 'io': 2 slot(s)." in out
    code, out, _ = cli("concurrency-limit", "ls", "--json", capsys=capsys)
    assert [(limit["tag"], limit["limit"]) for limit in json.loads(out)] == [("io", 2)]
    assert json.loads(cli("gcl", "ls", "--json", capsys=capsys)[1]) == []  # tag limits are listed apart
    code, out, _ = cli("concurrency-limit", "inspect", "io", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["name"] == "tag:io" and json.loads(out)["holders"] == []
    assert cli("concurrency-limit", "reset", "io", capsys=capsys)[0] == 0
    assert cli("concurrency-limit", "delete", "io", capsys=capsys)[0] == 0
    code, _, err = cli("concurrency-limit", "inspect", "io", capsys=capsys)
    assert code == 1 and "No tag concurrency limit for tag 'io'" in err


@pytest.mark.parametrize("argv", [["gcl", "create", "db", "--limit", "0"], ["gcl", "create", "db", "--limit", "x"],
                                  ["concurrency-limit", "create", "io", "-1"],
                                  ["gcl", "create", "db", "--limit", "1", "--slot-decay-per-second", "-2"]])
def test_cli_rejects_bad_limits(home, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_cli_errors_name_the_limit_and_the_fix(shared, home, capsys):
    assert cli("gcl", "create", "db", "--limit", "1", capsys=capsys)[0] == 0
    code, _, err = cli("gcl", "create", "db", "--limit", "1", capsys=capsys)
    assert code == 1 and "exists already: change it with `asyncflow gcl update db" in err
    code, _, err = cli("gcl", "delete", "nope", capsys=capsys)
    assert code == 1 and "No concurrency limit 'nope'" in err
    code, _, err = cli("gcl", "update", "db", capsys=capsys)
    assert code == 1 and "nothing to change" in err


def test_ls_before_anything_ran_lists_no_limits(home, capsys):
    assert cli("gcl", "ls", capsys=capsys)[:2] == (0, "No global concurrency limits.\n")
    assert cli("concurrency-limit", "ls", "--json", capsys=capsys)[:2] == (0, "[]\n")
    assert not (home / "asyncflow.db").exists()  # listing creates no store
