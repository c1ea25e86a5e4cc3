"""The embedded broker: the queue lives in a table of the SQLite database under ASYNCFLOW_HOME, so
every process on the machine shares it. Claims take a write lock (BEGIN IMMEDIATE) so two workers
never claim the same run at once; leases make delivery at least once.

An unusable file (a bad path, a directory, no permission, a full or damaged disk, a lock held too long)
raises BrokerUnavailableError naming the file and where its path came from.

Fork safety: every call into SQLite passes the fork gate (`_fork.Gate`), and a lock held by another
connection is waited for between short attempts, outside the gate, so a fork waits at most one short
attempt and never copies a thread halfway through SQLite (whose process-wide mutexes would stay locked
in the child)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .. import _fork
from .._exceptions import BrokerUnavailableError
from .broker import QueuedRun, RunOutcome, check_age

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
CREATE INDEX IF NOT EXISTS asyncflow_task_queue_finished ON asyncflow_task_queue (finished);
"""


T = TypeVar("T")
BUSY_MS = 50  # one attempt waits this long for another connection's lock, inside SQLite (and the gate)
LOCK_WAIT_SECONDS = 30.0  # all attempts together, the rest of the wait outside SQLite

_BROKERS: weakref.WeakSet[SQLiteBroker] = weakref.WeakSet()
_gate = _fork.Gate()
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
    _gate.reset()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


_fork.register("sqlite broker", reset_in_child=_reset_after_fork, before=_gate.close, after_in_parent=_gate.open)


class SQLiteBroker:
    expires_finished = False  # finished rows stay until prune() (workers call it, see worker.py)

    def __init__(self, path: Path | str, origin: str = "the SQLite broker") -> None:
        self.path = Path(path).absolute()
        self.origin = origin  # where the path came from, for messages
        self._local = threading.local()
        _BROKERS.add(self)
        with self._errors():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._unavailable(exc) from None
            self._attempts(lambda db: db.executescript(_SCHEMA))

    def __repr__(self) -> str:
        return f"SQLiteBroker({str(self.path)!r})"

    def _unavailable(self, exc: BaseException) -> BrokerUnavailableError:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            fix = "another process holds the database's write lock; try again, or find the process that holds it"
        else:
            fix = ("check that the path is a file in a directory that exists and that this user can write, "
                   "that the disk is not full, or point ASYNCFLOW_BROKER_URL at another file "
                   "(sqlite:////absolute/path.db)")
        return BrokerUnavailableError(f"Cannot use the SQLite broker at {self.path} ({self.origin}): {detail}. "
                                      f"Fix: {fix}.")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (called inside the gate)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _attempts(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` on this thread's connection inside the fork gate; while another connection holds
        the lock, try again (for up to LOCK_WAIT_SECONDS), waiting between attempts outside the gate."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        attempt = 0
        while True:
            try:
                with _gate:
                    return op(self._connect())
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(min(0.002 * 2**attempt, 0.1))
            attempt += 1

    def _write(self, sql: str, args: tuple = ()) -> int:
        return self._attempts(lambda db: db.execute(sql, args).rowcount)

    def _read_one(self, sql: str, args: tuple = ()) -> tuple | None:
        return self._attempts(lambda db: db.execute(sql, args).fetchone())

    def enqueue(self, run: QueuedRun) -> None:
        with self._errors():
            self._write("INSERT INTO asyncflow_task_queue (id, task_key, task_name, payload, state_type, state_name, "
                        "created) VALUES (?, ?, ?, ?, 'SCHEDULED', 'Scheduled', ?)",
                        (run.id, run.task_key, run.task_name, run.payload, time.time()))

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
        if not task_keys or limit <= 0:
            return []
        with self._errors():
            return self._attempts(lambda db: self._claim_in(db, task_keys, worker_id, lease_seconds, limit))

    @staticmethod
    def _claim_in(db: sqlite3.Connection, task_keys: list[str], worker_id: str, lease_seconds: float,
                  limit: int) -> list[QueuedRun]:
        now = time.time()
        marks = ",".join("?" * len(task_keys))
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT id, task_key, task_name, payload, attempts FROM asyncflow_task_queue "
                f"WHERE task_key IN ({marks}) AND finished IS NULL AND (lease_expires IS NULL OR lease_expires < ?) "
                f"ORDER BY created LIMIT ?", (*task_keys, now, limit)).fetchall()
            for row in rows:
                db.execute("UPDATE asyncflow_task_queue SET lease_owner = ?, lease_expires = ?, "
                           "attempts = attempts + 1 WHERE id = ?", (worker_id, now + lease_seconds, row[0]))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return [QueuedRun(r[0], r[1], r[2], r[3], r[4] + 1) for r in rows]

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None:
        expires = time.time() + lease_seconds
        with self._errors():
            for run_id in run_ids:
                self._write("UPDATE asyncflow_task_queue SET lease_expires = ? WHERE id = ? AND lease_owner = ? "
                            "AND finished IS NULL", (expires, run_id, worker_id))

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None:
        with self._errors():
            self._write("UPDATE asyncflow_task_queue SET state_type = ?, state_name = ? WHERE id = ? "
                        "AND lease_owner = ? AND finished IS NULL", (state_type, state_name, run_id, worker_id))

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool:
        """Record the outcome unless another worker did first. True if this call recorded it, or if an
        earlier attempt of the same worker did (a retried call after an error must not read as lost)."""
        with self._errors():
            if self._write(
                    "UPDATE asyncflow_task_queue SET state_type = ?, state_name = ?, message = ?, result = ?, "
                    "finished = ?, lease_owner = ?, lease_expires = NULL WHERE id = ? AND finished IS NULL",
                    (state_type, state_name, message, result, time.time(), worker_id, run_id)) == 1:
                return True
            row = self._read_one("SELECT lease_owner FROM asyncflow_task_queue WHERE id = ?", (run_id,))
            return row is not None and row[0] == worker_id

    def release(self, run_id: str, worker_id: str) -> None:
        with self._errors():
            self._write("UPDATE asyncflow_task_queue SET lease_owner = NULL, lease_expires = NULL, "
                        "state_type = 'SCHEDULED', state_name = 'Scheduled' WHERE id = ? AND lease_owner = ? "
                        "AND finished IS NULL", (run_id, worker_id))

    def outcome(self, run_id: str) -> RunOutcome | None:
        with self._errors():
            row = self._read_one(
                "SELECT state_type, state_name, message, result, finished, task_name FROM asyncflow_task_queue "
                "WHERE id = ?", (run_id,))
        if row is None:
            return None
        return RunOutcome(row[0], row[1], row[2], row[3], row[4] is not None, row[5])

    def prune(self, older_than_seconds: float) -> int:
        """Delete the rows of runs that finished more than `older_than_seconds` ago (their pickled
        arguments and results with them); return how many. Space is reused by later rows (no VACUUM)."""
        cutoff = time.time() - check_age(older_than_seconds)
        removed = 0
        with self._errors():
            while True:  # in batches: the write lock is held briefly, and .delay() is not kept waiting
                count = self._write("DELETE FROM asyncflow_task_queue WHERE rowid IN (SELECT rowid FROM "
                                    "asyncflow_task_queue WHERE finished < ? LIMIT 5000)", (cutoff,))
                removed += count
                if count < 5000:
                    return removed

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            with _gate:
                db.close()
            self._local.db = None
