"""The embedded broker: the queue lives in a table of the SQLite database under ASYNCFLOW_HOME, so
every process on the machine shares it. Claims take a write lock (BEGIN IMMEDIATE) so two workers
never claim the same run at once; leases make delivery at least once."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from .. import _fork
from .broker import QueuedRun, RunOutcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS asyncflow_task_queue (
    id TEXT PRIMARY KEY,
    task_key TEXT NOT NULL,
    task_name TEXT NOT NULL,
    payload BLOB NOT NULL,
    state_type TEXT NOT NULL,
    state_name TEXT NOT NULL,
    message TEXT,
    result BLOB,
    lease_owner TEXT,
    lease_expires REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS asyncflow_task_queue_ready ON asyncflow_task_queue (task_key, finished, created);
"""


_BROKERS: weakref.WeakSet[SQLiteBroker] = weakref.WeakSet()
_INHERITED: list[sqlite3.Connection] = []  # a forked child's copies of its parent's connections


def _reset_after_fork() -> None:
    """A connection opened before a fork must not be used in the child, not even to close it (SQLite's
    rule; the store follows it too): the forking thread's connection is kept here, never closed, and
    the child opens its own on first use (`_connect` also checks the pid). The parent's other threads'
    connections went away with their threads' state at the fork (CPython clears it), which is out of
    our hands."""
    for broker in list(_BROKERS):
        db = getattr(broker._local, "db", None)
        if db is not None:
            _INHERITED.append(db)
        broker._local = threading.local()


_fork.register("sqlite broker", reset_in_child=_reset_after_fork)


class SQLiteBroker:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        _BROKERS.add(self)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _write(self, sql: str, args: tuple = ()) -> int:
        db = self._connect()
        for attempt in range(50):  # busy_timeout covers most waits; retry what slips through
            try:
                return db.execute(sql, args).rowcount
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(min(0.005 * 2**attempt, 0.5))
        raise sqlite3.OperationalError(f"the task queue in {self.path} stayed locked")

    def enqueue(self, run: QueuedRun) -> None:
        self._write("INSERT INTO asyncflow_task_queue (id, task_key, task_name, payload, state_type, state_name, "
                    "created) VALUES (?, ?, ?, ?, 'SCHEDULED', 'Scheduled', ?)",
                    (run.id, run.task_key, run.task_name, run.payload, time.time()))

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
        if not task_keys or limit <= 0:
            return []
        db = self._connect()
        now = time.time()
        marks = ",".join("?" * len(task_keys))
        for attempt in range(50):
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(min(0.005 * 2**attempt, 0.5))
        try:
            rows = db.execute(
                f"SELECT id, task_key, task_name, payload, attempts FROM asyncflow_task_queue "
                f"WHERE task_key IN ({marks}) AND finished IS NULL AND (lease_expires IS NULL OR lease_expires < ?) "
                f"ORDER BY created LIMIT ?", (*task_keys, now, limit)).fetchall()
            for row in rows:
                db.execute("UPDATE asyncflow_task_queue SET lease_owner = ?, lease_expires = ?, attempts = attempts + 1 "
                           "WHERE id = ?", (worker_id, now + lease_seconds, row[0]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [QueuedRun(r[0], r[1], r[2], r[3], r[4] + 1) for r in rows]

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None:
        expires = time.time() + lease_seconds
        for run_id in run_ids:
            self._write("UPDATE asyncflow_task_queue SET lease_expires = ? WHERE id = ? AND lease_owner = ? "
                        "AND finished IS NULL", (expires, run_id, worker_id))

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None:
        self._write("UPDATE asyncflow_task_queue SET state_type = ?, state_name = ? WHERE id = ? AND lease_owner = ? "
                    "AND finished IS NULL", (state_type, state_name, run_id, worker_id))

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool:
        return self._write(
            "UPDATE asyncflow_task_queue SET state_type = ?, state_name = ?, message = ?, result = ?, finished = ?, "
            "lease_owner = ?, lease_expires = NULL WHERE id = ? AND finished IS NULL",
            (state_type, state_name, message, result, time.time(), worker_id, run_id)) == 1

    def release(self, run_id: str, worker_id: str) -> None:
        self._write("UPDATE asyncflow_task_queue SET lease_owner = NULL, lease_expires = NULL, state_type = 'SCHEDULED', "
                    "state_name = 'Scheduled' WHERE id = ? AND lease_owner = ? AND finished IS NULL", (run_id, worker_id))

    def outcome(self, run_id: str) -> RunOutcome | None:
        row = self._connect().execute(
            "SELECT state_type, state_name, message, result, finished FROM asyncflow_task_queue WHERE id = ?",
            (run_id,)).fetchone()
        if row is None:
            return None
        return RunOutcome(row[0], row[1], row[2], row[3], row[4] is not None)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
