"""The PostgreSQL broker (`ASYNCFLOW_BROKER_URL=postgresql://…`, or the PostgreSQL store's database when
ASYNCFLOW_STORE names one): the queue of delayed runs in a table every machine reaches, with the SQLite
broker's semantics.

- enqueue: one statement inserts the run and NOTIFYs the channel `asyncflow_task_queue` (delivered when
  it commits): idle workers wake at once, without polling.
- claim: one statement picks the oldest claimable runs with `SELECT … FOR UPDATE SKIP LOCKED` (two
  workers never take the same run, and never wait for each other) and takes a lease on them.
- leases are timed by the database's clock, not the machines' (their clocks may disagree): a run whose
  worker stopped renewing is claimable again when its lease expires; an idle worker's wait ends then.
- complete: only the first completion is recorded (`finished IS NULL`), as with SQLite.

Every call is one statement on one connection per broker and process (autocommit); a connection the
server or the network broke is replaced once, at once; past that, BrokerUnavailableError names the URL
(without its password) and the fix, and workers and futures retry it with their backoff.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from .. import _fork
from .._exceptions import BrokerUnavailableError
from .._store.postgres_base import check_url, connect, describe, forget_in_child, is_connection_error, redact
from .broker import QueuedRun, RunOutcome, check_age

CHANNEL = "asyncflow_task_queue"
LISTENER_IDLE_SECONDS = 60.0  # a listener nobody waited on for this long closes its connection and ends
_NOW = "extract(epoch from clock_timestamp())"
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS asyncflow_task_queue (
        id TEXT PRIMARY KEY, task_key TEXT NOT NULL, task_name TEXT NOT NULL, payload BYTEA NOT NULL,
        state_type TEXT NOT NULL, state_name TEXT NOT NULL, message TEXT, result BYTEA, lease_owner TEXT,
        lease_expires DOUBLE PRECISION, attempts INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS asyncflow_task_queue_ready ON asyncflow_task_queue (task_key, created) "
    "WHERE finished IS NULL",
    "CREATE INDEX IF NOT EXISTS asyncflow_task_queue_finished ON asyncflow_task_queue (finished) "
    "WHERE finished IS NOT NULL",
]
_SCHEMA_LOCK = 0x6173796E63717565  # pg_advisory_xact_lock key while the table is created
_BROKERS: weakref.WeakSet[PostgresBroker] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """The parent's connections are the parent's (never used nor closed here); its listener thread does
    not exist in the child. The child connects again on first use."""
    for broker in list(_BROKERS):
        for conn in (broker._conn, broker._listen_conn):
            if conn is not None:
                forget_in_child(conn)
                _INHERITED.append(conn)
        broker._init_runtime()


_INHERITED: list[Any] = []
_fork.register("postgres broker", reset_in_child=_reset_after_fork)


class PostgresBroker:
    expires_finished = False  # finished rows stay until prune() (workers call it, see worker.py)

    def __init__(self, url: str, origin: str = "ASYNCFLOW_BROKER_URL") -> None:
        try:
            self.url = check_url(url)
        except ValueError as exc:
            raise BrokerUnavailableError(f"The PostgreSQL broker URL {redact(url)!r} ({origin}) is not valid: "
                                         f"{exc}.") from None
        self.safe_url = redact(self.url)
        self.origin = origin
        self._closed = False
        self._init_runtime()
        _BROKERS.add(self)
        with self._talking():
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._listen_conn: Any = None
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._wakes = threading.Condition()
        self._generation = 0  # notifications received (and interruptions)
        self._last_wait = 0.0  # time.monotonic() of the last wait_for_work: the listener stops when idle

    def __repr__(self) -> str:
        return f"PostgresBroker({self.safe_url!r})"

    # -- connections and errors ------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"The PostgreSQL broker at {self.safe_url} ({self.origin}) is unavailable ({describe(exc)}). Fix: start "
            f"the database server or make it reachable from this machine (`pg_isready -d URL`), check the user, "
            f"password and database in the URL, or set ASYNCFLOW_BROKER_URL to the right server. Task workers "
            f"retry with backoff; futures wait up to ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS.")

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        try:
            yield
        except BrokerUnavailableError:
            raise
        except ImportError:
            raise
        except Exception as exc:
            import psycopg

            if isinstance(exc, (psycopg.Error, OSError)):
                raise self._unavailable(exc) from exc
            raise

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = connect(self.url)
        return conn

    def _execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement (reconnecting once if the connection broke); the cursor."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return conn.execute(sql, params)
                except Exception as exc:
                    if attempt == 1 and is_connection_error(exc):
                        self._drop()
                        continue
                    raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- the broker interface --------------------------------------------------------------------------
    def enqueue(self, run: QueuedRun) -> None:
        key = run.task_key if len(run.task_key.encode()) < 7000 else ""  # NOTIFY payloads are < 8000 bytes
        with self._talking():
            self._execute(
                f"WITH queued AS (INSERT INTO asyncflow_task_queue (id, task_key, task_name, payload, state_type, "
                f"state_name, created) VALUES (%s, %s, %s, %s, 'SCHEDULED', 'Scheduled', {_NOW}) RETURNING id) "
                f"SELECT pg_notify(%s, %s) FROM queued",
                (run.id, run.task_key, run.task_name, run.payload, CHANNEL, key))

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
        if not task_keys or limit <= 0:
            return []
        with self._talking():
            rows = self._execute(
                f"WITH picked AS (SELECT id FROM asyncflow_task_queue WHERE task_key = ANY(%s) AND finished IS NULL "
                f"AND (lease_expires IS NULL OR lease_expires < {_NOW}) ORDER BY created LIMIT %s "
                f"FOR UPDATE SKIP LOCKED) "
                f"UPDATE asyncflow_task_queue q SET lease_owner = %s, lease_expires = {_NOW} + %s, "
                f"attempts = q.attempts + 1 FROM picked WHERE q.id = picked.id "
                f"RETURNING q.id, q.task_key, q.task_name, q.payload, q.attempts, q.created",
                (list(task_keys), limit, worker_id, float(lease_seconds))).fetchall()
        rows.sort(key=lambda row: row[5])
        return [QueuedRun(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None:
        if not run_ids:
            return
        with self._talking():
            self._execute(f"UPDATE asyncflow_task_queue SET lease_expires = {_NOW} + %s WHERE id = ANY(%s) "
                          f"AND lease_owner = %s AND finished IS NULL",
                          (float(lease_seconds), list(run_ids), worker_id))

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None:
        with self._talking():
            self._execute("UPDATE asyncflow_task_queue SET state_type = %s, state_name = %s WHERE id = %s "
                          "AND lease_owner = %s AND finished IS NULL", (state_type, state_name, run_id, worker_id))

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool:
        """Record the outcome unless another worker did first. True if this call recorded it, or if an
        earlier attempt of the same worker did (a retried call after an error must not read as lost)."""
        with self._talking():
            if self._execute(
                    f"UPDATE asyncflow_task_queue SET state_type = %s, state_name = %s, message = %s, result = %s, "
                    f"finished = {_NOW}, lease_owner = %s, lease_expires = NULL WHERE id = %s AND finished IS NULL",
                    (state_type, state_name, message, result, worker_id, run_id)).rowcount == 1:
                return True
            row = self._execute("SELECT lease_owner FROM asyncflow_task_queue WHERE id = %s", (run_id,)).fetchone()
            return row is not None and row[0] == worker_id

    def release(self, run_id: str, worker_id: str) -> None:
        """Hand a run back at once (graceful stop): claimable again, and idle workers are woken."""
        with self._talking():
            self._execute(
                "WITH released AS (UPDATE asyncflow_task_queue SET lease_owner = NULL, lease_expires = NULL, "
                "state_type = 'SCHEDULED', state_name = 'Scheduled' WHERE id = %s AND lease_owner = %s "
                "AND finished IS NULL RETURNING task_key) SELECT pg_notify(%s, task_key) FROM released",
                (run_id, worker_id, CHANNEL))

    def outcome(self, run_id: str) -> RunOutcome | None:
        with self._talking():
            row = self._execute("SELECT state_type, state_name, message, result, finished, task_name "
                                "FROM asyncflow_task_queue WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            return None
        return RunOutcome(row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None, row[4] is not None,
                          row[5])

    def prune(self, older_than_seconds: float) -> int:
        """Delete the rows of runs that finished more than `older_than_seconds` ago (in batches)."""
        age = check_age(older_than_seconds)
        removed = 0
        with self._talking():
            while True:
                count = self._execute(
                    f"DELETE FROM asyncflow_task_queue WHERE id IN (SELECT id FROM asyncflow_task_queue "
                    f"WHERE finished < {_NOW} - %s LIMIT 5000)", (age,)).rowcount
                removed += count
                if count < 5000:
                    return removed

    # -- waking idle workers (LISTEN/NOTIFY) -------------------------------------------------------------
    def wait_for_work(self, task_keys: list[str], timeout: float) -> None:
        """Block until a run of these tasks may be claimable: a NOTIFY (a run queued or handed back), the
        earliest lease of theirs expiring, `interrupt_waits()`, or `timeout` seconds. Returns at once if
        a run is claimable now. Raises BrokerUnavailableError if the database cannot be reached."""
        self._last_wait = time.monotonic()
        self._start_listener()
        with self._wakes:
            seen = self._generation
        with self._talking():
            row = self._execute(
                f"SELECT min(coalesce(lease_expires, 0)) - {_NOW} FROM asyncflow_task_queue "
                f"WHERE task_key = ANY(%s) AND finished IS NULL", (list(task_keys),)).fetchone()
        until_claimable = row[0] if row else None
        if until_claimable is not None:
            if until_claimable <= 0:
                return
            timeout = min(timeout, until_claimable + 0.01)
        if not self._listening.is_set():  # no listener (yet): wait less, as a poller would
            timeout = min(timeout, 0.25)
        with self._wakes:
            self._wakes.wait_for(lambda: self._generation != seen, timeout=max(0.0, timeout))

    def interrupt_waits(self) -> None:
        """End every `wait_for_work` of this broker now (a worker stopping)."""
        with self._wakes:
            self._generation += 1
            self._wakes.notify_all()

    def _start_listener(self) -> None:
        if self._listener is not None or self._closed:
            return
        with self._lock:
            if self._listener is not None:
                return
            thread = threading.Thread(target=self._listen_main, name="asyncflow-broker-listener", daemon=True)
            self._listener = thread
        thread.start()
        self._listening.wait(2.0)

    def _listen_main(self) -> None:
        """A connection of its own LISTENs to the channel; each notification wakes every waiter. A lost
        connection is opened again with backoff (waiters time out meanwhile, as pollers)."""
        delay = 0.05
        while not self._closed and not self._unused():
            try:
                conn = self._listen_conn = connect(self.url)
                conn.execute(f"LISTEN {CHANNEL}")
                self._listening.set()
                delay = 0.05
                self.interrupt_waits()  # what was queued while nobody listened: look again
                while not self._closed and not self._unused():
                    for _ in conn.notifies(timeout=1.0):
                        self.interrupt_waits()
                self._listen_conn = None
                with contextlib.suppress(Exception):
                    conn.close()
            except Exception:
                self._listening.clear()
                self.interrupt_waits()
                conn, self._listen_conn = self._listen_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        with self._lock:  # stopped (closed, or no worker waited for a minute): the next wait starts another
            self._listening.clear()
            self._listener = None

    def _unused(self) -> bool:
        return time.monotonic() - self._last_wait > LISTENER_IDLE_SECONDS

    def close(self) -> None:
        self._closed = True
        self.interrupt_waits()
        with self._lock:
            self._drop()
        conn = self._listen_conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel()  # wakes the listener out of its wait; it closes its connection
