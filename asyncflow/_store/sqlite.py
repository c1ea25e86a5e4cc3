"""The SQLite store: runs, states and logs in `ASYNCFLOW_HOME/asyncflow.db`, shared by processes.

The hot path only appends a tuple to a bounded in-memory queue (about a microsecond per record). One
writer thread per store takes records off the queue and writes them in batches, each batch one
transaction, so a run's records are stored whole or not at all. Several processes may write to the
same file: the database runs in WAL mode (readers never wait for writers), and a writer that finds
the database busy waits (busy_timeout) and retries with backoff, so "database is locked" never
reaches the user.

Guarantees:

- Eventual consistency: a record is in the database a few milliseconds after it was recorded, and at
  the latest when `flush()` returns True. The engine flushes when an outermost flow run ends, and the
  store flushes at interpreter exit. A read through this store flushes first (read-your-writes).
- A process that dies (even SIGKILL) loses at most what it had not written yet; what was written
  (every flushed record) stays, and the file stays readable (WAL, one transaction per batch).
- When the queue is full (the database is unavailable for long, or recording outruns the writer),
  recording waits up to `full_wait` seconds for room, then drops records, counts them, and warns
  on stderr. It never blocks forever and never raises into the engine.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import _fork
from .._runs import FlowRun, TaskRun
from .._states import FINAL_TYPES, State, StateDetails, StateType
from .base import (
    LogRecord,
    ObjectNotFound,
    StoreError,
    StoreNotFoundError,
    as_uuid,
    check_limit,
    state_filter,
)

DB_FILE_NAME = "asyncflow.db"
_FLOW, _TASK, _STATE, _LOG, _MARK = range(5)  # record kinds, the first item of each queued tuple
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (extended codes keep them in the low byte)

_V2_FLOW_RUN_COLUMNS = ("id, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id, "
                        "created, state_type, state_name, state_message, state_ts, run_count, start_time, end_time")
_V2_TASK_RUN_COLUMNS = ("id, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, "
                        "tags, created, state_type, state_name, state_message, state_ts, run_count, start_time, "
                        "end_time")

# -- the schema: one list of statements per version; a database at version n runs MIGRATIONS[n:] ---
MIGRATIONS: list[list[str]] = [
    [  # version 1
        """CREATE TABLE flows (
            name TEXT PRIMARY KEY,
            version TEXT,
            created REAL NOT NULL)""",
        """CREATE TABLE flow_runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            flow_version TEXT,
            parameters TEXT NOT NULL,
            tags TEXT NOT NULL,
            parent_flow_run_id TEXT,
            parent_task_run_id TEXT,
            created REAL NOT NULL,
            state_type TEXT,
            state_name TEXT,
            state_message TEXT,
            state_ts REAL,
            run_count INTEGER NOT NULL DEFAULT 0,
            start_time REAL,
            end_time REAL)""",
        "CREATE INDEX flow_runs_by_created ON flow_runs (created)",
        "CREATE INDEX flow_runs_by_flow ON flow_runs (flow_name, created)",
        """CREATE TABLE task_runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            task_name TEXT NOT NULL,
            task_key TEXT NOT NULL,
            task_version TEXT,
            flow_run_id TEXT,
            parent_task_run_id TEXT,
            parameters TEXT NOT NULL,
            tags TEXT NOT NULL,
            created REAL NOT NULL,
            state_type TEXT,
            state_name TEXT,
            state_message TEXT,
            state_ts REAL,
            run_count INTEGER NOT NULL DEFAULT 0,
            start_time REAL,
            end_time REAL)""",
        "CREATE INDEX task_runs_by_flow_run ON task_runs (flow_run_id, created)",
        "CREATE INDEX task_runs_by_created ON task_runs (created)",
        """CREATE TABLE states (
            seq INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            type TEXT NOT NULL,
            name TEXT NOT NULL,
            message TEXT,
            ts REAL NOT NULL,
            details TEXT)""",
        "CREATE INDEX states_by_run ON states (run_id, seq)",
        """CREATE TABLE logs (
            seq INTEGER PRIMARY KEY,
            flow_run_id TEXT,
            task_run_id TEXT,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            ts REAL NOT NULL)""",
        "CREATE INDEX logs_by_flow_run ON logs (flow_run_id, seq)",
        "CREATE INDEX logs_by_task_run ON logs (task_run_id, seq)",
    ],
    [  # version 2: cheaper writes. An index on random ids costs a random B-tree insert per row: logs are
       # found by their flow run (task runs' lines through it), and only root task runs' lines by task
       # run; the newest task runs are found by insertion order.
        "DROP INDEX logs_by_task_run",
        "CREATE INDEX logs_by_root_task_run ON logs (task_run_id, seq) WHERE flow_run_id IS NULL",
        "DROP INDEX task_runs_by_created",
    ],
    [  # version 3: runs get a number (`ref`, shared by flow runs and task runs, increasing) and states point
       # at it: their index grows at its end instead of taking a random insert per state (a random id).
        "ALTER TABLE task_runs RENAME TO task_runs_v2",
        "ALTER TABLE flow_runs RENAME TO flow_runs_v2",
        "ALTER TABLE states RENAME TO states_v2",
        """CREATE TABLE task_runs (
            ref INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            task_name TEXT NOT NULL,
            task_key TEXT NOT NULL,
            task_version TEXT,
            flow_run_id TEXT,
            parent_task_run_id TEXT,
            parameters TEXT NOT NULL,
            tags TEXT NOT NULL,
            created REAL NOT NULL,
            state_type TEXT,
            state_name TEXT,
            state_message TEXT,
            state_ts REAL,
            run_count INTEGER NOT NULL DEFAULT 0,
            start_time REAL,
            end_time REAL)""",
        """CREATE TABLE flow_runs (
            ref INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            flow_version TEXT,
            parameters TEXT NOT NULL,
            tags TEXT NOT NULL,
            parent_flow_run_id TEXT,
            parent_task_run_id TEXT,
            created REAL NOT NULL,
            state_type TEXT,
            state_name TEXT,
            state_message TEXT,
            state_ts REAL,
            run_count INTEGER NOT NULL DEFAULT 0,
            start_time REAL,
            end_time REAL)""",
        f"INSERT INTO task_runs (ref, {_V2_TASK_RUN_COLUMNS}) SELECT rowid, {_V2_TASK_RUN_COLUMNS} FROM task_runs_v2",
        f"""INSERT INTO flow_runs (ref, {_V2_FLOW_RUN_COLUMNS})
            SELECT rowid + (SELECT coalesce(max(ref), 0) FROM task_runs), {_V2_FLOW_RUN_COLUMNS} FROM flow_runs_v2""",
        """CREATE TABLE states (
            seq INTEGER PRIMARY KEY,
            run_ref INTEGER,
            run_id TEXT NOT NULL,
            type TEXT NOT NULL,
            name TEXT NOT NULL,
            message TEXT,
            ts REAL NOT NULL,
            details TEXT)""",
        """INSERT INTO states (seq, run_ref, run_id, type, name, message, ts, details)
            SELECT s.seq, coalesce(t.ref, f.ref), s.run_id, s.type, s.name, s.message, s.ts, s.details
            FROM states_v2 s LEFT JOIN task_runs t ON t.id = s.run_id LEFT JOIN flow_runs f ON f.id = s.run_id""",
        "DROP TABLE states_v2",
        "DROP TABLE task_runs_v2",
        "DROP TABLE flow_runs_v2",
        "CREATE INDEX states_by_run ON states (run_ref, seq)",
        "CREATE INDEX task_runs_by_flow_run ON task_runs (flow_run_id, created)",
        "CREATE INDEX flow_runs_by_created ON flow_runs (created)",
        "CREATE INDEX flow_runs_by_flow ON flow_runs (flow_name, created)",
    ],
    [  # version 4: subflows by their parent (a flow run's timeline, the read API's parent filter); partial:
       # top-level runs, most of them, cost the writer nothing
        "CREATE INDEX flow_runs_by_parent ON flow_runs (parent_flow_run_id, created) "
        "WHERE parent_flow_run_id IS NOT NULL",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_FLOW_RUN_COLUMNS = "ref, " + _V2_FLOW_RUN_COLUMNS  # in the order of a run row the writer builds
_TASK_RUN_COLUMNS = "ref, " + _V2_TASK_RUN_COLUMNS
_FINAL_IDS = frozenset(id(t) for t in FINAL_TYPES)  # identity checks: an Enum's hash runs Python code
_FLOW_STATE_COLUMN, _TASK_STATE_COLUMN = 10, 11  # where the state columns start in a run row
_MAX_REF = ("SELECT max(coalesce((SELECT max(ref) FROM flow_runs), 0), "
            "coalesce((SELECT max(ref) FROM task_runs), 0))")
_OPEN_RUNS_KEPT = 100_000  # runs the writer remembers (their ref) until their final state


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds the database; retry later."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _report(message: str) -> None:
    """A warning on stderr, in the shape of asyncflow's log lines (never through the store itself)."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    try:
        sys.stderr.write(f"{stamp} | WARNING | asyncflow.store - {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # stderr closed at exit
        pass


# -- values as the store keeps them --------------------------------------------------------------
_PLAIN = (int, float, bool, type(None))
_MAX_STR = 200
_MAX_ITEMS = 20


def _summary(value: Any, depth: int = 0) -> Any:
    """A JSON-safe summary of a parameter that runs no user code: plain values (long strings cut),
    small lists/tuples/dicts of them, else `<TypeName>`. Exact types only: a subclass could run code."""
    kind = type(value)
    if kind in _PLAIN:
        return value if kind is not float or math.isfinite(value) else repr(value)
    if kind is str:
        return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
    if depth < 2 and kind in (list, tuple) and len(value) <= _MAX_ITEMS:
        return [_summary(v, depth + 1) for v in list(value)]
    if depth < 2 and kind is dict and len(value) <= _MAX_ITEMS:
        items = list(value.items())
        if all(type(k) is str for k, _ in items):
            return {k: _summary(v, depth + 1) for k, v in items}
    if kind in (list, tuple, dict, set, frozenset):
        return f"<{kind.__name__} of {len(value)} items>"
    return f"<{kind.__name__}>"


_encode = json.JSONEncoder(ensure_ascii=False).encode
_SIMPLE = frozenset({int, bool, type(None)})


def summarise_parameters(parameters: Any) -> str:
    if not parameters:
        return "{}"
    try:
        items = list(parameters.items())
        if all(type(value) in _SIMPLE for _, value in items):  # the common case, kept as is
            return _encode(dict(items))
        return _encode({str(name): _summary(value) for name, value in items})
    except Exception:  # a dict changed while we read it
        return _encode({"<parameters>": f"<{type(parameters).__name__}>"})


def _details_json(details: StateDetails) -> str | None:
    if (details.cache_key is None and details.scheduled_time is None and details.cache_expiration is None
            and details.child_flow_run_id is None):
        return None
    out: dict[str, Any] = {}
    if details.cache_key is not None:
        out["cache_key"] = details.cache_key
    if details.cache_expiration is not None:
        out["cache_expiration"] = details.cache_expiration.isoformat()
    if details.scheduled_time is not None:
        out["scheduled_time"] = details.scheduled_time.isoformat()
    if details.child_flow_run_id is not None:
        out["child_flow_run_id"] = str(details.child_flow_run_id)
    return json.dumps(out)


def _details_from(text: str | None, flow_run_id: uuid.UUID | None, task_run_id: uuid.UUID | None) -> StateDetails:
    if not text:
        return StateDetails(flow_run_id=flow_run_id, task_run_id=task_run_id)
    import datetime as dt

    data = json.loads(text)
    return StateDetails(
        flow_run_id=flow_run_id, task_run_id=task_run_id,
        child_flow_run_id=uuid.UUID(data["child_flow_run_id"]) if data.get("child_flow_run_id") else None,
        cache_key=data.get("cache_key"),
        cache_expiration=dt.datetime.fromisoformat(data["cache_expiration"]) if data.get("cache_expiration") else None,
        scheduled_time=dt.datetime.fromisoformat(data["scheduled_time"]) if data.get("scheduled_time") else None)


def _uuid_or_none(text: str | None) -> uuid.UUID | None:
    return uuid.UUID(text) if text else None


# -- the store -----------------------------------------------------------------------------------------
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


_FORK_HELD: list[threading.Lock] = []
_INHERITED: list[sqlite3.Connection] = []  # a forked child's copies of its parent's connections


def _before_fork() -> None:
    """A thread inside SQLite at the moment of a fork leaves SQLite's own mutexes locked in the child,
    which then hangs at its first SQLite call: wait until no thread of ours is inside SQLite. The wait
    shares the fork's budget (`_fork.FORK_WAIT_SECONDS` for all of asyncflow, not per store or lock):
    when it is spent, the fork goes on (and a child forked mid-write may hang at its first write)."""
    for store in list(_STORES):
        for lock in (store._lock, store._read_lock):
            if lock.acquire(timeout=_fork.remaining()):  # a batch being written, a busy database
                _FORK_HELD.append(lock)


def _after_fork_in_parent() -> None:
    while _FORK_HELD:
        _FORK_HELD.pop().release()


def _reset_after_fork() -> None:
    _FORK_HELD.clear()  # the child's copies of these locks are replaced
    for store in list(_STORES):
        store._reset_in_child()


def _flush_all_at_exit() -> None:
    for store in list(_STORES):
        store._at_exit()


_fork.register("store", reset_in_child=_reset_after_fork, before=_before_fork,
               after_in_parent=_after_fork_in_parent)
# atexit runs handlers last-registered first: this one runs before the engine's, which records the runs
# still open as Crashed and then flushes again.
atexit.register(_flush_all_at_exit)


class SQLiteStore:
    """Runs, states and logs in one SQLite file, written in batches by one writer thread.

    `create=False` opens an existing store only (for readers such as the CLI): a missing file raises
    `StoreNotFoundError`. `queue_size` bounds the records waiting for the writer; `full_wait` is how
    long recording waits for room when the queue is full before it drops; `flush_timeout` bounds a
    flush; `linger` is how long the writer lets a burst gather before it writes."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, queue_size: int = 100_000,
                 full_wait: float = 0.5, flush_timeout: float = 10.0, linger: float = 0.005,
                 batch_size: int = 5000, busy_timeout: float = 1.0) -> None:
        self.path = Path(path).expanduser().absolute()
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1; got {queue_size!r}.")
        self.queue_size = queue_size
        self.full_wait = full_wait
        self.flush_timeout = flush_timeout
        self.linger = linger
        self.batch_size = batch_size
        self.busy_timeout = busy_timeout
        self.dropped = 0  # records dropped because the queue was full (warned on stderr)
        self.lost = 0  # records that could not be written (an error other than "busy"; warned on stderr)
        self._closed = False
        self._init_runtime()
        self._open(create)
        _STORES.add(self)

    def _init_runtime(self) -> None:
        self._queue: deque[tuple[Any, ...]] = deque()
        self._batch: list[tuple[Any, ...]] = []  # taken off the queue, not yet committed
        self._writing = False
        self._lock = threading.Lock()  # held while a batch is taken and written (writer thread or a flush)
        self._event = threading.Event()
        self._sleeping = True  # the writer waits for the event (or has not started)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._dropping = False
        self._last_report = 0.0
        # runs written and not yet final: run id -> [ref, is a flow run, name watch or None]
        self._open_runs: dict[uuid.UUID, list[Any]] = {}

    def _reset_in_child(self) -> None:
        """After fork: the parent's writer thread does not exist here, its queue is the parent's to
        write, and its connections are the parent's: SQLite says a child must not use them, not even
        to close them, so they are kept (never closed) and new ones are opened on demand."""
        _INHERITED.extend(c for c in (self._conn, self._reader) if c is not None)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- opening, the schema ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable against a process crash
        conn.execute("PRAGMA cache_size = -16000")  # 16 MB: index pages stay in memory between batches
        conn.execute("PRAGMA wal_autocheckpoint = 8000")  # 32 MB of WAL between checkpoints (each syncs)
        return conn

    def _open(self, create: bool) -> None:
        if not self.path.exists():
            if not create:
                raise StoreNotFoundError(
                    f"No asyncflow store at {self.path} yet: it is created when the first flow or task runs "
                    f"with ASYNCFLOW_HOME={self.path.parent}. Check that ASYNCFLOW_HOME points at the home "
                    f"your runs use.")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"Cannot create the store's directory {self.path.parent}: {exc}. Set ASYNCFLOW_HOME to a "
                    f"writable directory, or ASYNCFLOW_STORE=memory to keep runs in memory.") from None
        try:
            conn = self._connect()
            try:
                self._with_retry(lambda: self._prepare(conn), deadline=time.monotonic() + 30)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot open the asyncflow store {self.path}: {exc}. If the file is not an asyncflow store, "
                f"move it away or set ASYNCFLOW_HOME to another directory.") from None

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode, and the schema at this version (forward migrations, one transaction)."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        version = _schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(self._newer_message(version))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = _schema_version(conn)  # another process may have migrated meanwhile
            if version > SCHEMA_VERSION:
                raise StoreError(self._newer_message(version))
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _newer_message(self, version: int) -> str:
        return (f"The asyncflow store {self.path} has schema version {version}, newer than this asyncflow "
                f"understands ({SCHEMA_VERSION}). Upgrade asyncflow, or set ASYNCFLOW_HOME to another directory.")

    def _with_retry(self, fn: Any, deadline: float | None) -> Any:
        """Call fn; while the database is busy, back off (with jitter) and retry until the deadline."""
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or (deadline is not None and time.monotonic() >= deadline):
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)

    # -- recording: the hot path ------------------------------------------------------------------
    def record_flow_run(self, run: FlowRun) -> None:
        record = (_FLOW, run, run.state.ts, run.parameters)  # the engine later swaps parameters for a summary
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_task_run(self, run: TaskRun) -> None:
        record = (_TASK, run, run.state.ts, run.parameters)
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None:
        record = (_STATE, run_id, state.type, state.name, state.message, state.ts, state.state_details)
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None:
        record = (_LOG, flow_run_id, task_run_id, level, message, ts)
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def _wake(self) -> None:
        self._sleeping = False
        if self._thread is None and not self._closed:
            self._start_writer()
        self._event.set()

    def _overflow(self, record: tuple[Any, ...]) -> None:
        """The queue is full: help write (a batch in this thread, when the writer is not already on
        one) until there is room, for at most `full_wait` seconds; then drop (counted, warned)."""
        if not self._dropping:
            self._wake()
            deadline = time.monotonic() + self.full_wait
            while len(self._queue) >= self.queue_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._dropping = True  # until the writer catches up, drop at once: never block again
                    break
                if self._write_once(blocking=False, busy_timeout=left) is not True:
                    time.sleep(0.001)  # the writer holds the batch, or the database is busy
            else:
                self._queue.append(record)
                return
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_report >= 5.0:
            self._last_report = now
            _report(f"the store's queue is full ({self.queue_size} records waiting for {self.path}); "
                    f"{self.dropped} record(s) dropped so far. The database may be held by another process, "
                    f"or runs are recorded faster than it can write; ASYNCFLOW_STORE_QUEUE_SIZE sets the bound.")

    # -- the writer ------------------------------------------------------------------------------------
    def _start_writer(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._writer_main, name="asyncflow-store-writer", daemon=True)
            self._thread = thread
        thread.start()

    def _writer_main(self) -> None:
        delay = 0.005
        while not self._closed:
            if not self._queue and not self._batch:
                self._sleeping = True
                if not self._queue:  # re-check: a producer that saw _sleeping False did not wake us
                    self._event.wait()
                self._event.clear()
                self._sleeping = False
                if self._closed:
                    break
                time.sleep(self.linger)  # let a burst gather into one transaction
            try:
                written = self._write_once()
            except Exception as exc:  # never let the writer die: report and go on
                _report(f"the store writer hit an unexpected error: {type(exc).__name__}: {exc}")
                written = True
            if written:
                delay = 0.005
                if self._dropping and len(self._queue) < self.queue_size // 2:
                    self._dropping = False
            else:  # busy: another process holds the database; back off, keep the batch
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)

    def _write_once(self, blocking: bool = True, busy_timeout: float | None = None) -> bool | None:
        """Write one batch (the one in flight, else the next off the queue). False if the database was
        busy (the batch stays in flight, in order, for the next attempt); None if `blocking` is False
        and another thread is writing. `busy_timeout` shortens the wait for a busy database."""
        if not self._lock.acquire(blocking):
            return None
        self._writing = True
        try:
            batch = self._batch
            if not batch:
                queue = self._queue
                take = min(len(queue), self.batch_size)
                if not take:
                    return True
                popleft = queue.popleft
                batch = self._batch = [popleft() for _ in range(take)]
            try:
                if busy_timeout is not None:
                    self._writer_conn().execute(f"PRAGMA busy_timeout = {max(1, int(busy_timeout * 1000))}")
                try:
                    self._write(batch)
                finally:
                    if busy_timeout is not None and self._conn is not None:
                        self._conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    return False
                self._give_up(batch, exc)
            except Exception as exc:  # any other error: this batch can never be written
                self._give_up(batch, exc)
            self._batch = []
            return True
        finally:
            self._writing = False
            self._lock.release()

    def _give_up(self, batch: list[tuple[Any, ...]], exc: BaseException) -> None:
        for record in batch:
            if record[0] == _MARK:
                record[1][0] = True  # the flush waiting on it must not wait forever
        self.lost += len(batch)
        _report(f"could not write {len(batch)} record(s) to {self.path} ({type(exc).__name__}: {exc}); "
                f"{self.lost} record(s) lost so far.")
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # reconnect (and re-create the schema if the file was removed) next time

    def _writer_conn(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._connect()
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """One transaction. New runs are numbered (`ref`) under the write lock, so processes never
        collide; a run's current state, attempt count and timing are folded from its states here:
        into the run's row when the run is new in this batch, else into one UPDATE per run."""
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_in_transaction(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._open_runs.clear()  # it may hold refs of runs that were not committed: look them up again
            raise
        for record in batch:
            if record[0] == _MARK:
                record[1][0] = True

    def _write_in_transaction(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        flows: list[tuple[Any, ...]] = []
        flow_runs: list[list[Any]] = []
        task_runs: list[list[Any]] = []
        renames: list[tuple[str, int]] = []
        states: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        flow_updates: list[list[Any]] = []  # runs of earlier batches: [state..., run_count delta, start, end, ref]
        task_updates: list[list[Any]] = []
        open_runs = self._open_runs
        # per run seen in this batch: [ref, id text, row holding its state columns, where they start, open entry]
        seen: dict[uuid.UUID, list[Any]] = {}
        next_ref = conn.execute(_MAX_REF).fetchone()[0]
        running, final_ids = StateType.RUNNING, _FINAL_IDS
        for record in batch:
            kind = record[0]
            if kind == _STATE:
                _, run_id, type_, name, message, ts, details = record
                entry = seen.get(run_id)
                if entry is None:  # a run written by an earlier batch
                    known = open_runs.get(run_id)
                    if known is None:
                        known = self._find_ref(conn, run_id)
                    key = str(run_id)
                    if known is None:  # its run record never arrived (dropped): keep the state anyway
                        entry = seen[run_id] = [None, key, [None, None, None, None, 0, None, None, None], 0, None]
                    else:
                        row = [None, None, None, None, 0, None, None, known[0]]
                        (flow_updates if known[1] else task_updates).append(row)
                        entry = seen[run_id] = [known[0], key, row, 0, known]
                ref, key, row, offset, known = entry
                states.append((ref, key, type_, name, message, ts, _details_json(details)))  # type_ binds as str
                row[offset] = type_
                row[offset + 1] = name
                row[offset + 2] = message
                row[offset + 3] = ts
                if type_ is running:
                    row[offset + 4] += 1
                    if row[offset + 5] is None:
                        row[offset + 5] = ts
                elif id(type_) in final_ids:
                    row[offset + 6] = ts
                    open_runs.pop(run_id, None)
                if known is not None and known[2] is not None:
                    watched = known[2]
                    if watched[2]:  # a second state: the run's name is final now (task_run_name rendered)
                        known[2] = None
                        current = watched[0].name
                        if current != watched[1]:
                            if offset:
                                row[2] = current
                            else:
                                renames.append((current, ref))
                    else:
                        watched[2] = True
            elif kind == _LOG:
                logs.append(record[1:])
            elif kind == _TASK:
                _, run, created, parameters = record
                next_ref += 1
                key = str(run.id)
                row = [next_ref, key, run.name, run.task_name, run.task_key, run.task_version,
                       str(run.flow_run_id) if run.flow_run_id is not None else None,
                       str(run.parent_task_run_id) if run.parent_task_run_id is not None else None,
                       summarise_parameters(parameters), json.dumps(list(run.tags)) if run.tags else "[]", created,
                       None, None, None, None, 0, None, None]
                task_runs.append(row)
                known = open_runs[run.id] = [next_ref, False, [run, run.name, False]]
                seen[run.id] = [next_ref, key, row, _TASK_STATE_COLUMN, known]
            elif kind == _FLOW:
                _, run, created, parameters = record
                next_ref += 1
                key = str(run.id)
                flows.append((run.flow_name, run.flow_version, created))
                row = [next_ref, key, run.name, run.flow_name, run.flow_version, summarise_parameters(parameters),
                       json.dumps(list(run.tags)) if run.tags else "[]",
                       str(run.parent_flow_run_id) if run.parent_flow_run_id is not None else None,
                       str(run.parent_task_run_id) if run.parent_task_run_id is not None else None, created,
                       None, None, None, None, 0, None, None]
                flow_runs.append(row)
                known = open_runs[run.id] = [next_ref, True, None]
                seen[run.id] = [next_ref, key, row, _FLOW_STATE_COLUMN, known]
        while len(open_runs) > _OPEN_RUNS_KEPT:  # runs that never end (NotReady...) are looked up if needed
            del open_runs[next(iter(open_runs))]
        if flows:
            _insert(conn, "INSERT INTO flows (name, version, created)", 3, flows,
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version")
        if flow_runs:
            _insert(conn, f"INSERT INTO flow_runs ({_FLOW_RUN_COLUMNS})", 17, flow_runs)
        if task_runs:
            before = conn.total_changes
            _insert(conn, f"INSERT INTO task_runs ({_TASK_RUN_COLUMNS})", 18, task_runs, " ON CONFLICT (id) DO NOTHING")
            if conn.total_changes - before < len(task_runs):  # some were written already (below)
                remap = self._merge_known_task_runs(conn, task_runs, task_updates)
                states = [(remap.get(state[0], state[0]), *state[1:]) for state in states]
                renames = [(name, remap.get(ref, ref)) for name, ref in renames]
        if renames:
            conn.executemany("UPDATE task_runs SET name = ? WHERE ref = ?", renames)
        for table, updates in (("task_runs", task_updates), ("flow_runs", flow_updates)):
            if updates:
                conn.executemany(
                    f"UPDATE {table} SET state_type = ?, state_name = ?, state_message = ?, state_ts = ?, "
                    f"run_count = run_count + ?, start_time = coalesce(start_time, ?), "
                    f"end_time = coalesce(?, end_time) WHERE ref = ?", updates)
        if states:
            _insert(conn, "INSERT INTO states (run_ref, run_id, type, name, message, ts, details)", 7, states)
        if logs:
            _insert(conn, "INSERT INTO logs (flow_run_id, task_run_id, level, message, ts)", 5, logs)

    def _merge_known_task_runs(self, conn: sqlite3.Connection, task_runs: list[list[Any]],
                               task_updates: list[list[Any]]) -> dict[int, int]:
        """Task runs of this batch that another writer recorded first (a background run: `.delay()`
        records it Scheduled in the caller's process, the worker records it again when it runs it, B5)
        keep the row that exists: the batch's states for them go to that row, and its current state is
        updated. Returns {ref this batch gave them: ref of the existing row}."""
        remap: dict[int, int] = {}
        keys = [row[1] for row in task_runs]
        existing: dict[str, int] = {}
        step = _MAX_VARIABLES
        for start in range(0, len(keys), step):
            chunk = keys[start:start + step]
            existing.update(conn.execute(
                f"SELECT id, ref FROM task_runs WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        for row in task_runs:
            ref = existing.get(row[1])
            if ref is None or ref == row[0]:
                continue
            remap[row[0]] = ref
            known = self._open_runs.get(uuid.UUID(row[1]))
            if known is not None:
                known[0] = ref  # later batches' states for this run go to the existing row
            state = row[_TASK_STATE_COLUMN:_TASK_STATE_COLUMN + 7]
            if state[0] is not None:  # [type, name, message, ts, run_count, start, end]: written below
                task_updates.append([*state, ref])
        return remap

    def _find_ref(self, conn: sqlite3.Connection, run_id: uuid.UUID) -> list[Any] | None:
        """[ref, is a flow run, None] of a run written earlier, or None if it is not in the database."""
        row = conn.execute("SELECT ref, 0 FROM task_runs WHERE id = ?1 UNION ALL SELECT ref, 1 FROM flow_runs "
                           "WHERE id = ?1", (str(run_id),)).fetchone()
        return None if row is None else [row[0], bool(row[1]), None]

    # -- durability ----------------------------------------------------------------------------------
    def pending(self) -> bool:
        return bool(self._queue) or bool(self._batch) or self._writing

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything recorded before this call, in this thread if the writer is not on it.
        Waits for a busy database at most `timeout` seconds (default: the store's flush_timeout);
        returns False (with a warning) if that ran out: the records stay queued for the writer."""
        if not self.pending():
            return True
        mark = [False]
        self._queue.append((_MARK, mark))  # past the bound on purpose: a flush never drops
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        delay = 0.002
        while not mark[0]:
            if self._write_once():
                delay = 0.002
                continue
            if time.monotonic() >= deadline:
                _report(f"the store {self.path} stayed busy for {self.flush_timeout if timeout is None else timeout:g} s "
                        f"(another process holds it); {len(self._queue) + len(self._batch)} record(s) are not written "
                        f"yet and stay queued.")
                if self._sleeping:
                    self._wake()
                return False
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)
        return True

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the connections. Records that arrive
        later are written by the next flush (in the flushing thread)."""
        self.flush()
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._event.set()
            if thread is not threading.current_thread():
                thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _at_exit(self) -> None:
        if not self._closed or self.pending():
            try:
                self.close()
            except Exception as exc:  # exit goes on
                _report(f"could not write the last records to {self.path}: {type(exc).__name__}: {exc}")

    # -- reading -------------------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[Any] = (), flush: bool = True) -> list[tuple[Any, ...]]:
        if flush:
            self.flush()  # read-your-writes (the read API passes False: it reads what is stored)

        def run() -> list[tuple[Any, ...]]:
            with self._read_lock:
                if self._reader is None:
                    self._reader = self._connect()
                return self._reader.execute(sql, tuple(params)).fetchall()

        try:
            return self._with_retry(run, deadline=time.monotonic() + 30)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"Cannot read the asyncflow store {self.path}: {exc}.") from None

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        key = as_uuid(run_id, "flow_run_id")
        rows = self._query(f"SELECT {_FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?", (str(key),))
        if not rows:
            raise ObjectNotFound(f"No flow run with id {key} in the store {self.path}.")
        return _flow_run(rows[0])

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun:
        key = as_uuid(run_id, "task_run_id")
        rows = self._query(f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?", (str(key),))
        if not rows:
            raise ObjectNotFound(f"No task run with id {key} in the store {self.path}.")
        return _task_run(rows[0])

    def read_flow_runs(self, *, flow_name: str | None = None, state: Any = None,
                       limit: int | None = None) -> list[FlowRun]:
        """Newest first."""
        wanted, limit = state_filter(state), check_limit(limit)
        where, params = [], []
        if flow_name is not None:
            where.append("flow_name = ?")
            params.append(flow_name)
        if wanted is not None:
            marks = ", ".join("?" * len(wanted))
            where.append(f"(lower(state_name) IN ({marks}) OR lower(state_type) IN ({marks}))")
            params.extend([*wanted, *wanted])
        sql = f"SELECT {_FLOW_RUN_COLUMNS} FROM flow_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_flow_run(row) for row in self._query(sql, params)]

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None, limit: int | None = None,
                       newest_first: bool = False) -> list[TaskRun]:
        """In the order they were created (or the newest first)."""
        limit = check_limit(limit)
        sql, params = f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs", []
        if flow_run_id is not None:
            sql += " WHERE flow_run_id = ?"
            params.append(str(as_uuid(flow_run_id, "flow_run_id")))
        if flow_run_id is not None:  # the index on (flow_run_id, created)
            sql += " ORDER BY created DESC, rowid DESC" if newest_first else " ORDER BY created, rowid"
        else:  # insertion order: no index to keep up to date
            sql += " ORDER BY rowid DESC" if newest_first else " ORDER BY rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_task_run(row) for row in self._query(sql, params)]

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]:
        key = str(as_uuid(run_id))
        owner = self._query("SELECT ref, flow_run_id, 0 FROM task_runs WHERE id = ?1 UNION ALL "
                            "SELECT ref, NULL, 1 FROM flow_runs WHERE id = ?1", (key,))
        if not owner:
            return []
        ref, flow_run_text, is_flow = owner[0]
        if is_flow:
            flow_run_id, task_run_id = uuid.UUID(key), None
        else:
            flow_run_id, task_run_id = _uuid_or_none(flow_run_text), uuid.UUID(key)
        rows = self._query("SELECT type, name, message, ts, details FROM states WHERE run_ref = ? ORDER BY seq", (ref,))
        return [State(StateType(type_), name, message, None, _details_from(details, flow_run_id, task_run_id), ts)
                for type_, name, message, ts, details in rows]

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]:
        where, params = [], []
        flow_key = str(as_uuid(flow_run_id, "flow_run_id")) if flow_run_id is not None else None
        task_key = str(as_uuid(task_run_id, "task_run_id")) if task_run_id is not None else None
        if task_key is not None and flow_key is None:
            # a task run's lines are found through its flow run's (indexed), or, for a task run called
            # outside any flow, through the index of such runs' lines
            owner = self._query("SELECT flow_run_id FROM task_runs WHERE id = ?", (task_key,))
            if owner and owner[0][0] is not None:
                flow_key = owner[0][0]
            elif owner:
                where.append("flow_run_id IS NULL")
        if flow_key is not None:
            where.append("flow_run_id = ?")
            params.append(flow_key)
        if task_key is not None:
            where.append("task_run_id = ?")
            params.append(task_key)
        sql = "SELECT flow_run_id, task_run_id, level, message, ts FROM logs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [LogRecord(*row) for row in self._query(sql + " ORDER BY seq", params)]

    def find_run_ids(self, prefix: str, table: str) -> list[str]:
        """Ids in `flow_runs` or `task_runs` that start with `prefix` (for the CLI's short ids)."""
        if table not in ("flow_runs", "task_runs"):
            raise ValueError(f"table must be 'flow_runs' or 'task_runs'; got {table!r}.")
        prefix = prefix.strip().lower()
        if not prefix or any(c not in "0123456789abcdef-" for c in prefix):
            return []
        return [row[0] for row in self._query(
            f"SELECT id FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT 10", (prefix, prefix + "g"))]

    def counts(self) -> dict[str, int]:
        """How many rows each table holds (for `asyncflow version` and the tests)."""
        return {table: self._query(f"SELECT count(*) FROM {table}")[0][0]
                for table in ("flows", "flow_runs", "task_runs", "states", "logs")}

    # -- the read API (reads.py; SQL in sqlite_reads.py): never flushes the writer, a UI polls ---------
    def _stored(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(sql, params, flush=False)

    def read_flow_runs_page(self, filter: Any = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> Any:
        from . import sqlite_reads
        return sqlite_reads.flow_runs_page(self._stored, filter, limit, cursor, newest_first)

    def read_task_runs_page(self, filter: Any = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> Any:
        from . import sqlite_reads
        return sqlite_reads.task_runs_page(self._stored, filter, limit, cursor, newest_first)

    def read_changes(self, since: int = 0, limit: int = 1000) -> Any:
        from . import sqlite_reads
        return sqlite_reads.changes(self._stored, since, limit)

    def read_logs_since(self, since: int = 0, *, flow_run_id: Any = None, task_run_id: Any = None, level: Any = None,
                        limit: int = 1000) -> Any:
        from . import sqlite_reads
        return sqlite_reads.logs_since(self._stored, since, flow_run_id, task_run_id, level, limit)

    def read_timeline(self, flow_run_id: Any) -> Any:
        from . import sqlite_reads
        return sqlite_reads.timeline(self._stored, flow_run_id, f"the store {self.path}")

    def count_flow_runs_by_state(self, filter: Any = None, bucket_seconds: float = 3600) -> Any:
        from . import sqlite_reads
        return sqlite_reads.count_by_state(self._stored, filter, bucket_seconds)


_STATEMENTS: dict[tuple[str, int, int, str], str] = {}
_MAX_VARIABLES = 32766  # SQLite's default limit since 3.32 (checked per connection where Python can)


def _insert(conn: sqlite3.Connection, head: str, width: int, rows: list[Any], tail: str = "") -> None:
    """Insert many rows with few statements (multi-row VALUES, a few cached sizes).

    `executemany` releases and retakes the GIL for every row, and a thread that wants the GIL back
    waits up to the switch interval (5 ms) while the engine's thread runs: row by row, the writer
    hardly moves while runs keep the GIL busy. One statement per few thousand rows lets it keep up."""
    limit = _MAX_VARIABLES // width
    biggest = 1 << (limit.bit_length() - 1)  # the largest power of two that fits
    start, total = 0, len(rows)
    while start < total:
        size = biggest
        while size > total - start:
            size >>= 3 if size >= 8 else 1
        key = (head, width, size, tail)
        sql = _STATEMENTS.get(key)
        if sql is None:
            one = "(" + ", ".join("?" * width) + ")"
            sql = _STATEMENTS[key] = f"{head} VALUES {', '.join([one] * size)}{tail}"
        conn.execute(sql, [value for row in rows[start:start + size] for value in row])
        start += size


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return row[0] if row else 0


def _state_of(type_: str | None, name: str | None, message: str | None, ts: float | None, created: float,
              flow_run_id: uuid.UUID | None, task_run_id: uuid.UUID | None) -> State[Any]:
    details = StateDetails(flow_run_id=flow_run_id, task_run_id=task_run_id)
    if type_ is None:  # the run's states are not written yet (or were dropped)
        return State(StateType.PENDING, "Pending", None, None, details, created)
    return State(StateType(type_), name or type_.capitalize(), message, None, details, ts if ts is not None else created)


def _flow_run(row: tuple[Any, ...]) -> FlowRun:
    (_, id_, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id, created,
     state_type, state_name, state_message, state_ts, run_count, start_time, end_time) = row
    run_id = uuid.UUID(id_)
    return FlowRun(
        id=run_id, name=name, flow_name=flow_name, flow_version=flow_version, parameters=json.loads(parameters),
        tags=tuple(json.loads(tags)),
        state=_state_of(state_type, state_name, state_message, state_ts, created, run_id, None),
        parent_flow_run_id=_uuid_or_none(parent_flow_run_id), parent_task_run_id=_uuid_or_none(parent_task_run_id),
        run_count=run_count, start_time=start_time, end_time=end_time)


def _task_run(row: tuple[Any, ...]) -> TaskRun:
    (_, id_, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, tags, created,
     state_type, state_name, state_message, state_ts, run_count, start_time, end_time) = row
    run_id = uuid.UUID(id_)
    flow_id = _uuid_or_none(flow_run_id)
    return TaskRun(
        id=run_id, name=name, task_name=task_name, task_key=task_key, flow_run_id=flow_id,
        parent_task_run_id=_uuid_or_none(parent_task_run_id), tags=tuple(json.loads(tags)),
        parameters=json.loads(parameters),
        state=_state_of(state_type, state_name, state_message, state_ts, created, flow_id, run_id),
        task_version=task_version, run_count=run_count, start_time=start_time, end_time=end_time)
