"""Retention: deleting flow runs (with everything under them), pruning old finished runs (in bounded
batches, keeping open and recent runs), the retention setting applied automatically, and the duration
parser. Real SQLite files in tmp_path; the memory store must agree with SQLite."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncflow import _settings, flow, get_run_logger, task
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._settings import SettingError, parse_duration
from asyncflow._states import State, StateType
from asyncflow._store import MemoryStore, retention
from asyncflow._store.sqlite import SQLiteStore

DAY = 86400.0
NOW = time.time()
OLD = NOW - 40 * DAY  # older than the cutoff used below (30 days)
RECENT = NOW - 1 * DAY


def raw(store: SQLiteStore, sql: str, *params):
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def ids_in(store: SQLiteStore) -> set[str]:
    """Every run id the file mentions anywhere (runs, states, logs)."""
    found = set()
    for sql in ("SELECT id FROM flow_runs", "SELECT id FROM task_runs", "SELECT run_id FROM states",
                "SELECT flow_run_id FROM logs", "SELECT task_run_id FROM logs"):
        found |= {row[0] for row in raw(store, sql) if row[0] is not None}
    return found


# -- a store's worth of runs with chosen times and states ----------------------------------------------
class Scenario:
    """Builds runs directly through the recording interface, at chosen times."""

    def __init__(self, store) -> None:
        self.store = store

    def flow_run(self, final: tuple[StateType, str] | None, at: float, parent: uuid.UUID | None = None,
                 flow_name: str = "etl", logs: int = 2) -> uuid.UUID:
        run_id = uuid.uuid4()
        pending = State(StateType.PENDING, "Pending", ts=at)
        run = FlowRun(id=run_id, name=f"run-{run_id.hex[:6]}", flow_name=flow_name, flow_version=None,
                      parameters={}, tags=(), state=pending, parent_flow_run_id=parent)
        self.store.record_flow_run(run)
        self._history(run, final, at)
        for i in range(logs):
            self.store.record_log(flow_run_id=str(run_id), task_run_id=None, level="INFO", message=f"line {i}",
                                  ts=at + 0.5)
        return run_id

    def task_run(self, flow_run_id: uuid.UUID | None, final: tuple[StateType, str] | None, at: float,
                 logs: int = 1) -> uuid.UUID:
        run_id = uuid.uuid4()
        pending = State(StateType.PENDING, "Pending", ts=at)
        run = TaskRun(id=run_id, name="t-0", task_name="t", task_key="t-k", flow_run_id=flow_run_id,
                      parent_task_run_id=None, tags=(), parameters={}, state=pending)
        self.store.record_task_run(run)
        self._history(run, final, at)
        for i in range(logs):
            self.store.record_log(flow_run_id=str(flow_run_id) if flow_run_id else None, task_run_id=str(run_id),
                                  level="INFO", message=f"task line {i}", ts=at + 0.5)
        return run_id

    def _history(self, run, final: tuple[StateType, str] | None, at: float) -> None:
        """States as the engine records them: each also becomes the live record's state (which is what
        the memory store reads)."""
        states = [State(StateType.PENDING, "Pending", ts=at), State(StateType.RUNNING, "Running", ts=at + 1)]
        if final is not None:
            states.append(State(final[0], final[1], ts=at + 2))
        for state in states:
            run.state = state
            self.store.record_state(run.id, state)
        run.start_time, run.end_time = at + 1, (at + 2 if final is not None else None)


COMPLETED, FAILED = (StateType.COMPLETED, "Completed"), (StateType.FAILED, "Failed")
CACHED, TIMED_OUT = (StateType.COMPLETED, "Cached"), (StateType.FAILED, "TimedOut")
CRASHED, CANCELLED = (StateType.CRASHED, "Crashed"), (StateType.CANCELLED, "Cancelled")


def build(store) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Runs that a 30-day prune must remove, and runs it must keep."""
    s = Scenario(store)
    gone, kept = set(), set()
    for final in (COMPLETED, FAILED, CACHED, TIMED_OUT, CRASHED, CANCELLED):
        flow_run = s.flow_run(final, OLD)
        gone |= {flow_run, s.task_run(flow_run, COMPLETED, OLD), s.task_run(flow_run, None, OLD)}  # open: goes too
    old_parent = s.flow_run(COMPLETED, OLD, flow_name="parent")
    gone.add(old_parent)
    open_subflow = s.flow_run(None, OLD, parent=old_parent, flow_name="child")  # open: kept, whoever its parent
    kept.add(open_subflow)
    open_flow = s.flow_run(None, OLD, flow_name="open")
    kept |= {open_flow, s.task_run(open_flow, COMPLETED, OLD)}  # a finished task of a kept flow stays with it
    gone.add(s.task_run(None, COMPLETED, OLD))  # called outside any flow
    kept.add(s.task_run(None, None, OLD))  # open outside any flow
    recent = s.flow_run(COMPLETED, RECENT, flow_name="recent")  # (recorded in time order, as a writer does)
    kept |= {recent, s.task_run(recent, COMPLETED, RECENT)}
    kept.add(s.task_run(None, FAILED, RECENT))
    return gone, kept


def remaining_runs(store) -> set[uuid.UUID]:
    return {r.id for r in store.read_flow_runs()} | {r.id for r in store.read_task_runs()}


# -- deleting -----------------------------------------------------------------------------------------
@task
def step(i):
    get_run_logger().info("step %s", i)
    return i


@flow
def child():
    return step(100)


@flow
def parent(n=2):
    child()
    return [step(i) for i in range(n)]


def test_delete_removes_exactly_the_runs_asked_for_and_everything_under_them(db):
    doomed = parent(return_state=True).state_details.flow_run_id
    spared = parent(return_state=True).state_details.flow_run_id
    doomed_child = next(r.id for r in db.read_flow_runs(flow_name="child") if r.parent_flow_run_id == doomed)
    doomed_ids = {str(doomed), str(doomed_child)} | {
        str(t.id) for f in (doomed, doomed_child) for t in db.read_task_runs(flow_run_id=f)}
    before = db.counts()
    spared_ids = ids_in(db) - doomed_ids

    counts = db.delete_flow_runs([doomed])

    assert counts == {"flow_runs": 2, "task_runs": 3, "states": 15, "logs": before["logs"] // 2, "flows": 0}
    assert not ids_in(db) & doomed_ids  # nothing of it left anywhere
    assert ids_in(db) == spared_ids
    assert db.counts() == {name: before[name] - counts.get(name, 0) for name in before}
    assert [s.name for s in db.read_states(spared)] == ["Pending", "Running", "Completed"]


def test_delete_ignores_unknown_ids_and_drops_flows_left_without_runs(db):
    only = parent(return_state=True).state_details.flow_run_id
    assert db.delete_flow_runs([uuid.uuid4()]) == dict.fromkeys(retention.TABLES, 0)
    counts = db.delete_flow_runs([str(only), only])  # the same run twice, as text and as UUID
    assert counts["flow_runs"] == 2 and counts["flows"] == 2  # parent and child have no run left
    assert db.counts() == dict.fromkeys(("flows", "flow_runs", "task_runs", "states", "logs"), 0)
    with pytest.raises(ValueError, match="is not a valid id"):
        db.delete_flow_runs(["not-an-id"])


def test_records_of_a_deleted_open_run_never_land_on_another_run(db):
    s = Scenario(db)
    open_run = s.flow_run(None, NOW)  # this process's writer has it cached as open
    assert db.flush()
    db.delete_flow_runs([open_run])
    newer = s.flow_run(COMPLETED, NOW)  # may get the deleted run's number
    db.record_state(open_run, State(StateType.COMPLETED, "Completed"))  # the deleted run ends later
    assert db.flush()
    assert {r.id for r in db.read_flow_runs()} == {newer}
    assert [s.name for s in db.read_states(newer)] == ["Pending", "Running", "Completed"]
    assert raw(db, "SELECT count(*) FROM states WHERE run_ref IS NOT NULL AND run_ref NOT IN "
                   "(SELECT ref FROM flow_runs UNION SELECT ref FROM task_runs)") == [(0,)]


# -- pruning ------------------------------------------------------------------------------------------
def test_prune_removes_old_finished_runs_and_keeps_open_and_recent_runs(db):
    gone, kept = build(db)
    counts = db.prune(30 * DAY)
    assert remaining_runs(db) == kept
    assert not ids_in(db) & {str(run_id) for run_id in gone}  # their states and logs went with them
    assert counts["flow_runs"] == 7 and counts["task_runs"] == 13
    assert {row[0] for row in raw(db, "SELECT name FROM flows")} == {"child", "open", "recent"}
    assert db.prune(30 * DAY) == dict.fromkeys(retention.TABLES, 0)  # nothing left to do


def test_prune_removes_old_orphan_states_and_lines_and_keeps_recent_ones(db):
    lost_run, recent_lost_run = uuid.uuid4(), uuid.uuid4()  # their run records never arrived
    db.record_state(lost_run, State(StateType.RUNNING, "Running", ts=OLD))
    db.record_state(recent_lost_run, State(StateType.RUNNING, "Running", ts=RECENT))
    db.record_log(flow_run_id=str(lost_run), task_run_id=None, level="INFO", message="old", ts=OLD)
    db.record_log(flow_run_id=None, task_run_id=str(lost_run), level="INFO", message="old", ts=OLD)
    db.record_log(flow_run_id=str(recent_lost_run), task_run_id=None, level="INFO", message="new", ts=RECENT)
    counts = db.prune(30 * DAY)
    assert (counts["states"], counts["logs"]) == (1, 2)
    assert ids_in(db) == {str(recent_lost_run)}


def test_a_dry_run_counts_what_a_prune_deletes_and_deletes_nothing(db):
    build(db)
    before = db.counts()
    predicted = db.prune(30 * DAY, dry_run=True)
    assert db.counts() == before
    assert db.prune(30 * DAY) == predicted


@settings(max_examples=15, deadline=None)
@given(batch_runs=st.integers(1, 7), batch_rows=st.integers(1, 7))
def test_prune_in_small_batches_bounds_each_step_and_ends_as_one_prune(tmp_path_factory, batch_runs, batch_rows):
    store = SQLiteStore(tmp_path_factory.mktemp("batches") / "asyncflow.db")
    try:
        s = Scenario(store)
        big = s.flow_run(COMPLETED, OLD, logs=3 * batch_rows + 1)  # more lines than one step may take
        gone = {big, *(s.task_run(big, COMPLETED, OLD) for _ in range(2 * batch_runs + 1))}
        more_gone, kept = build(store)
        gone |= more_gone
        assert store.flush()
        conn = sqlite3.connect(store.path, isolation_level=None)
        cursor, steps = retention.START, 0
        while cursor is not None:
            conn.execute("BEGIN IMMEDIATE")
            counts, cursor = retention.prune_batch(conn, NOW - 30 * DAY, cursor, batch_runs=batch_runs,
                                                   batch_rows=batch_rows)
            conn.execute("COMMIT")
            steps += 1
            assert counts["flow_runs"] <= batch_runs and counts["task_runs"] <= batch_runs
            if counts["flow_runs"] == 0:
                assert counts["logs"] <= max(batch_rows, batch_runs)  # lines: a bounded number per step
        conn.close()
        assert steps > 3
        assert remaining_runs(store) == kept
        assert not ids_in(store) & {str(run_id) for run_id in gone}
    finally:
        store.close()


def test_the_memory_store_deletes_and_prunes_like_sqlite(db):
    memory = MemoryStore()
    results = []
    for store in (db, memory):
        _gone, kept = build(store)
        [to_delete] = [r.id for r in store.read_flow_runs(flow_name="recent")]
        with_it = {to_delete} | {t.id for t in store.read_task_runs(flow_run_id=to_delete)}
        deleted = store.delete_flow_runs([to_delete])
        dry = store.prune(30 * DAY, dry_run=True)
        pruned = store.prune(30 * DAY)
        assert remaining_runs(store) == kept - with_it
        results.append((deleted, dry, pruned))
    (sql_deleted, sql_dry, sql_pruned), (mem_deleted, mem_dry, mem_pruned) = results
    without_flows = lambda counts: {k: v for k, v in counts.items() if k != "flows"}  # noqa: E731
    assert without_flows(sql_deleted) == without_flows(mem_deleted)
    assert without_flows(sql_pruned) == without_flows(mem_pruned) == without_flows(mem_dry)
    assert sql_dry == sql_pruned


def test_prune_refuses_a_negative_or_infinite_age(db):
    for bad in (-1, math.inf, math.nan, "30d", True):
        with pytest.raises(ValueError, match="older_than_seconds must be a finite number of seconds >= 0"):
            db.prune(bad)  # type: ignore[arg-type]


# -- one entry point, other pruners --------------------------------------------------------------------
def test_prune_everything_prunes_the_store_then_each_registered_pruner(db, monkeypatch, capfd):
    build(db)
    calls = []

    def broker_like(older_than_seconds, *, dry_run):
        calls.append((older_than_seconds, dry_run))
        return {"broker_rows": 4}

    def broken(older_than_seconds, *, dry_run):
        raise OSError("disk on fire")

    monkeypatch.setattr(retention, "PRUNERS", [broken, broker_like, lambda s, *, dry_run: None])
    counts = retention.prune_everything(30 * DAY, store=db, dry_run=True)
    assert counts["flow_runs"] == 7 and counts["broker_rows"] == 4 and calls == [(30 * DAY, True)]
    err = capfd.readouterr().err
    assert "pruning with test_prune_everything" in err and "broken failed: OSError: disk on fire" in err
    counts = retention.prune_everything(30 * DAY)  # the process's store by default
    assert counts["flow_runs"] == 7 and db.prune(30 * DAY, dry_run=True)["flow_runs"] == 0


# -- automatic retention -------------------------------------------------------------------------------
def test_retention_runs_automatically_at_most_once_an_hour_per_home(db, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", "30d")
    _settings.reload()
    build(db)
    first = retention.run_automatic_once(db, home=tmp_path)
    assert first is not None and first["flow_runs"] == 7
    stamp = tmp_path / retention.STAMP_FILE_NAME
    assert abs(float(stamp.read_text()) - time.time()) < 3600
    build(db)
    assert retention.run_automatic_once(db, home=tmp_path) is None  # pruned less than an hour ago
    assert db.prune(30 * DAY, dry_run=True)["flow_runs"] == 7
    stamp.write_text(f"{time.time() - 3601}\n")  # an hour later
    assert retention.run_automatic_once(db, home=tmp_path)["flow_runs"] == 7
    stamp.write_text(f"{time.time() + 10 * DAY}\n")  # a stamp from the future (the clock went back) is stale
    assert retention.claim(tmp_path)
    monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", "off")
    _settings.reload()
    stamp.unlink()
    build(db)
    assert retention.run_automatic_once(db, home=tmp_path) is None and not stamp.exists()


def test_a_home_being_claimed_by_another_process_is_not_pruned_twice(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / retention.STAMP_FILE_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not retention.claim(tmp_path)
    assert retention.claim(tmp_path)
    assert not retention.claim(tmp_path)


def run_script(code: str, home, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "ASYNCFLOW_HOME": str(home), "ASYNCFLOW_STORE": "sqlite", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True,
                          timeout=120)


def test_the_process_store_applies_the_retention_setting_once_in_a_background_thread(tmp_path):
    home = tmp_path / "home"
    store = SQLiteStore(home / "asyncflow.db")
    _gone, kept = build(store)
    store.close()
    script = """
        import json, threading, time
        from asyncflow import flow
        from asyncflow._store import retention

        @flow
        def fresh():
            return 1

        fresh()
        deadline = time.monotonic() + 60
        while not retention.automatic_passes and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({"passes": retention.automatic_passes,
                          "threads": [t.name for t in threading.enumerate()]}))
    """
    first = run_script(script, home, ASYNCFLOW_STORE_RETENTION="30d")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["passes"][0]["flow_runs"] == 7 and "asyncflow-retention" in report["threads"]
    second = run_script(script, home, ASYNCFLOW_STORE_RETENTION="30d")  # within the hour: not again
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["passes"] == [None]
    store = SQLiteStore(home / "asyncflow.db", create=False)
    try:
        assert remaining_runs(store) - kept == {r.id for r in store.read_flow_runs(flow_name="fresh")}
        assert len(store.read_flow_runs(flow_name="fresh")) == 2
    finally:
        store.close()


# -- durations -----------------------------------------------------------------------------------------
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(n=st.integers(0, 10**12), unit=st.sampled_from(sorted(UNITS)), upper=st.booleans(),
       space=st.sampled_from(["", " ", "  "]))
def test_a_duration_is_a_number_and_an_optional_unit(n, unit, upper, space):
    text = f"{space}{n}{space if unit else ''}{unit.upper() if upper else unit}{space}"
    assert parse_duration(text) == n * UNITS[unit]


@given(st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False, allow_infinity=False),
       st.sampled_from(sorted(UNITS)))
def test_a_duration_may_have_a_fraction(number, unit):
    assert parse_duration(f"{number}{unit}") == pytest.approx(float(number) * UNITS[unit])


@given(st.text(max_size=30))
def test_any_text_is_a_duration_or_a_clear_error(text):
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert str(exc) == "expected a duration such as 30d, 12h, 90m, 45s or a number of seconds"
    else:
        assert 0 <= value < math.inf


@pytest.mark.parametrize("text", ["", " ", "-1", "-1d", "1e3", "nan", "inf", "1w", "1dd", "d", "1 2", "1.2.3",
                                  "1_000", "+5", "٣d", "9" * 400, "9" * 306 + "d", "30 days"])
def test_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="expected a duration such as 30d, 12h, 90m, 45s or a number of seconds"):
        parse_duration(text)


def test_the_retention_setting_takes_a_duration_or_off(monkeypatch):
    for raw, value in (("30d", 30 * DAY), ("12h", 43200.0), ("90", 90.0), ("0", None), ("0d", None), ("off", None),
                       ("OFF", None)):
        monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", raw)
        _settings.reload()
        assert _settings.STORE_RETENTION.value() == value
    monkeypatch.delenv("ASYNCFLOW_STORE_RETENTION")
    _settings.reload()
    assert _settings.STORE_RETENTION.value() == 30 * DAY
    monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", "a month")
    _settings.reload()
    with pytest.raises(SettingError, match=r"Setting ASYNCFLOW_STORE_RETENTION='a month' is invalid: expected a "
                                           r"duration such as 30d, 12h, 90m, 45s or a number of seconds, or 0/off"):
        _settings.STORE.value()
    monkeypatch.delenv("ASYNCFLOW_STORE_RETENTION")
    _settings.reload()
