"""The SQLite store: runs, states and logs in `ASYNCFLOW_HOME/asyncflow.db`, shared by processes.

A dialect of the batching writer (`writer.py`: queue, backpressure, thread, flush, fork, exit,
isolation of bad records, degrading to memory): this module says how a batch becomes one SQLite
transaction, what an SQLite error means, and how runs are read back. Several processes may write to
the same file: the database runs in WAL mode (readers never wait for writers), and a writer that finds
the database busy waits (busy_timeout) and retries with backoff, so "database is locked" never
reaches the user.

Guarantees:

- Eventual consistency: a record is in the database a few milliseconds after it was recorded, and at
  the latest when `flush()` returns True. The engine flushes when an outermost flow run ends, and the
  store flushes at interpreter exit. A read through this store flushes first (read-your-writes).
- Nothing is dropped under load (backpressure); a record the database refuses is left out alone.
- A run's current state is its newest state by timestamp, whatever order the writes arrive in.
- A process that dies (even SIGKILL) loses at most what it had not written yet; what was written
  stays, and the file stays readable (WAL, one transaction per batch). Its runs still open are marked
  `Crashed` the next time any process on the machine opens the store (`owners.py`).
- A file deleted under a running process is noticed at the next batch, with a warning, and a new
  store is started at that path.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import functools
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._limits.schema import LIMITS_SCHEMA
from .._runs import FlowRun, TaskRun
from .._states import State, StateDetails, StateType
from . import owners as _owners
from .base import (
    StoreError,
    StoreNotFoundError,
)
from .fold import STATE_CODES, fold, merge_known, repack
from .history import TICKS
from .process_writer import ProcessWriting
from .records import Privacy, parameters_json, parameters_snapshot
from .sql_reads import SqlRunReads
from .writer import BAD_RECORD, BUSY, UNUSABLE, BatchWriter, describe_error, jitter, report

DB_FILE_NAME = "asyncflow.db"
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (extended codes keep them in the low byte)
# SQLITE_PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, AUTH, NOTADB: the database cannot be used
_UNUSABLE_CODES = frozenset({3, 8, 10, 11, 13, 14, 23, 26})

_V2_FLOW_RUN_COLUMNS = ("id, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id, "
                        "created, state_type, state_name, state_message, state_ts, run_count, start_time, end_time")
_V2_TASK_RUN_COLUMNS = ("id, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, "
                        "tags, created, state_type, state_name, state_message, state_ts, run_count, start_time, "
                        "end_time")

# a state type's name (`type`) as its number (fold.STATE_CODES), in SQL
CODE_OF_TYPE = f"CASE type {' '.join(f'WHEN {name!r} THEN {code}' for name, code in STATE_CODES.items())}"

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
    [  # version 4: runs know the process that last wrote them, so a run whose process died can be marked
       # Crashed (owners.py; their ids are never reused). Only open runs are in the partial indexes: a
       # run that starts and ends within one batch never enters them.
        """CREATE TABLE owners (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            host TEXT NOT NULL,
            boot TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started TEXT NOT NULL,
            created REAL NOT NULL,
            closed INTEGER NOT NULL DEFAULT 0)""",
        "ALTER TABLE flow_runs ADD COLUMN owner INTEGER",
        "ALTER TABLE task_runs ADD COLUMN owner INTEGER",
        "CREATE INDEX flow_runs_open ON flow_runs (owner) WHERE end_time IS NULL",
        "CREATE INDEX task_runs_open ON task_runs (owner) WHERE end_time IS NULL",
        # run numbers never go down, even when the newest runs are deleted: a process that still holds
        # a deleted run's number must never find another run under it
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters (name, value) SELECT 'ref', max(coalesce((SELECT max(ref) FROM flow_runs), 0), "
        "coalesce((SELECT max(ref) FROM task_runs), 0))",
    ],
    [  # version 5: subflows by their parent (a flow run's timeline, the read API's parent filter; partial:
       # top-level runs, most of them, cost the writer nothing). States and log lines are numbered with
       # AUTOINCREMENT: a number is never given twice, even after the newest rows are deleted, so a
       # reader of the change feed (`since` a number) never misses a row.
        "CREATE INDEX flow_runs_by_parent ON flow_runs (parent_flow_run_id, created) "
        "WHERE parent_flow_run_id IS NOT NULL",
        "ALTER TABLE states RENAME TO states_v4",
        """CREATE TABLE states (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_ref INTEGER,
            run_id TEXT NOT NULL,
            type TEXT NOT NULL,
            name TEXT NOT NULL,
            message TEXT,
            ts REAL NOT NULL,
            details TEXT)""",
        "INSERT INTO states SELECT seq, run_ref, run_id, type, name, message, ts, details FROM states_v4",
        "DROP TABLE states_v4",
        "CREATE INDEX states_by_run ON states (run_ref, seq)",
        "ALTER TABLE logs RENAME TO logs_v4",
        """CREATE TABLE logs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            flow_run_id TEXT,
            task_run_id TEXT,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            ts REAL NOT NULL)""",
        "INSERT INTO logs SELECT seq, flow_run_id, task_run_id, level, message, ts FROM logs_v4",
        "DROP TABLE logs_v4",
        "CREATE INDEX logs_by_flow_run ON logs (flow_run_id, seq)",
        "CREATE INDEX logs_by_root_task_run ON logs (task_run_id, seq) WHERE flow_run_id IS NULL",
    ],
    # version 6: concurrency limits and the slots their holders lease (asyncflow/_limits/)
    LIMITS_SCHEMA,
    [  # version 7: states and log lines are numbered from one counter (`seq`, in the order they were recorded),
       # so that the engine's lines a state already says are marked on it (`line`, with `flow_ref`, the flow
       # run the line belongs to; lines.py) instead of stored as log rows, and read back in their place; a
       # state keeps its run's id only when its run's number is not known (the run's row has it), and its
       # name only when it is not its type's own (`Completed` for COMPLETED: read back as such). The
       # counter never goes down: numbers are never reused.
        "ALTER TABLE states RENAME TO states_v6",
        "INSERT INTO counters (name, value) SELECT 'seq', max(coalesce((SELECT max(seq) FROM states_v6), 0), "
        "coalesce((SELECT max(seq) FROM logs), 0), "
        "coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name IN ('states_v6', 'logs')), 0))",
        """CREATE TABLE states (
            seq INTEGER PRIMARY KEY,
            run_ref INTEGER,
            run_id TEXT,
            type TEXT NOT NULL,
            name TEXT,
            message TEXT,
            ts REAL NOT NULL,
            details TEXT,
            line INTEGER,
            flow_ref INTEGER)""",
        "INSERT INTO states (seq, run_ref, run_id, type, name, message, ts, details) "
        "SELECT seq, run_ref, run_id, type, name, message, ts, details FROM states_v6",
        "DROP TABLE states_v6",
        "CREATE INDEX states_by_run ON states (run_ref)",  # ordered by (run_ref, rowid): the rowid is seq
        # a flow run's lines in order (the index holds the rowid, `seq`, after flow_ref)
        "CREATE INDEX states_lines_by_flow ON states (flow_ref) WHERE flow_ref IS NOT NULL",
    ],
    [  # version 8: a task run points at its flow run by number (`flow_ref`) instead of by
       # its 36-character id, in its row and in the index that finds a flow run's task runs (a third of the bytes
       # per task run). The id is kept as text (`flow_run_id`) only when its flow run was not stored when the task
       # run was written (a background run's caller in another process): the number is then given to the flow
       # run ahead of its row, and the flow run takes it when it arrives (fold.py).
        "ALTER TABLE task_runs ADD COLUMN flow_ref INTEGER",
        "UPDATE task_runs SET flow_ref = (SELECT f.ref FROM flow_runs f WHERE f.id = task_runs.flow_run_id) "
        "WHERE flow_run_id IS NOT NULL",
        "UPDATE task_runs SET flow_run_id = NULL WHERE flow_ref IS NOT NULL",
        # a flow run that was never stored: its task runs share one number, given now (the counter's next)
        "CREATE TEMPORARY TABLE asyncflow_orphan_flows AS SELECT flow_run_id AS id, "
        "(SELECT value FROM counters WHERE name = 'ref') + row_number() OVER (ORDER BY min(ref)) AS ref "
        "FROM task_runs WHERE flow_run_id IS NOT NULL GROUP BY flow_run_id",
        "UPDATE task_runs SET flow_ref = (SELECT o.ref FROM asyncflow_orphan_flows o "
        "WHERE o.id = task_runs.flow_run_id) WHERE flow_run_id IS NOT NULL",
        "UPDATE counters SET value = max(value, coalesce((SELECT max(ref) FROM asyncflow_orphan_flows), 0)) "
        "WHERE name = 'ref'",
        "DROP TABLE asyncflow_orphan_flows",
        "DROP INDEX task_runs_by_flow_run",
        "CREATE INDEX task_runs_by_flow ON task_runs (flow_ref, created)",
        "CREATE INDEX task_runs_by_flow_id ON task_runs (flow_run_id) WHERE flow_run_id IS NOT NULL",
        # and a state row's type is a number (fold.STATE_CODES: one byte instead of up to ten); the column has
        # no type, so that SQLite keeps the number as it is. The states are copied once.
        "ALTER TABLE states RENAME TO states_v7",
        """CREATE TABLE states (
            seq INTEGER PRIMARY KEY,
            run_ref INTEGER,
            run_id TEXT,
            type NOT NULL,
            name TEXT,
            message TEXT,
            ts REAL NOT NULL,
            details TEXT,
            line INTEGER,
            flow_ref INTEGER)""",
        f"INSERT INTO states SELECT seq, run_ref, run_id, {CODE_OF_TYPE} ELSE type END, name, message, ts, details, "
        "line, flow_ref FROM states_v7",
        "DROP TABLE states_v7",
        "CREATE INDEX states_by_run ON states (run_ref)",
        "CREATE INDEX states_lines_by_flow ON states (flow_ref) WHERE flow_ref IS NOT NULL",
    ],
    [  # version 9: a task run's states are packed in its row (`history`, history.py) instead of a row each
       # (~40 bytes instead of ~140 for three states), and `appends` numbers them for the change feeds. The
       # `states` table keeps flow runs' states, the Crashed states owners.py writes and states whose run was not
       # stored; readers merge both. Existing states move when their time packs exactly (else they stay), each
       # as an append of its own (its batch is itself).
        "ALTER TABLE task_runs ADD COLUMN history TEXT",
        "CREATE TABLE appends (seq INTEGER PRIMARY KEY, run_ref INTEGER NOT NULL, back INTEGER NOT NULL)",
        f"CREATE TEMPORARY TABLE asyncflow_moved AS SELECT s.seq, s.run_ref, '[' || s.seq || ',' || json_quote(s.type) "
        f"|| ',' || CAST(round((s.ts - t.created) * {TICKS}) AS INTEGER) || ',' || CASE WHEN s.name IS NULL AND "
        "s.message IS NULL AND s.details IS NULL THEN coalesce(s.line, 0) ELSE json_array(coalesce(s.line, 0), s.name, "
        "s.message, s.details) END || ']' AS packed FROM states s JOIN task_runs t ON t.ref = s.run_ref "
        f"WHERE t.created + round((s.ts - t.created) * {TICKS}) / {TICKS} = s.ts AND (s.line IS NULL OR s.flow_ref IS "
        "t.flow_ref)",
        # (indexed: the UPDATE below looks up each run's states; unindexed it scanned them all per run)
        "CREATE INDEX temp.asyncflow_moved_runs ON asyncflow_moved (run_ref, seq)",
        "UPDATE task_runs SET history = (SELECT '[' || group_concat(packed, ',') || ']' FROM (SELECT packed FROM "
        "asyncflow_moved m WHERE m.run_ref = task_runs.ref ORDER BY m.seq)) "
        "WHERE ref IN (SELECT run_ref FROM asyncflow_moved)",
        "INSERT INTO appends (seq, run_ref, back) SELECT seq, run_ref, 0 FROM asyncflow_moved",
        "DELETE FROM states WHERE seq IN (SELECT seq FROM asyncflow_moved)",
        "DROP TABLE asyncflow_moved",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_FLOW_RUN_COLUMNS = "ref, " + _V2_FLOW_RUN_COLUMNS  # what reads select (`_flow_run` unpacks it)
# a task run's flow run id: its flow run's (by number), else the text kept when that flow run was not stored
FLOW_ID_OF_TASK = ("coalesce((SELECT f.id FROM flow_runs f WHERE f.ref = {t}.flow_ref), {t}.flow_run_id)")
# the task runs of the flow run whose id is the parameter (twice): its number, or the one given ahead of its row
IN_FLOW = ("flow_ref = coalesce((SELECT f.ref FROM flow_runs f WHERE f.id = ?), "
           "(SELECT o.flow_ref FROM task_runs o WHERE o.flow_run_id = ? LIMIT 1))")
_TASK_RUN_COLUMNS = "ref, " + _V2_TASK_RUN_COLUMNS.replace(
    "flow_run_id,", FLOW_ID_OF_TASK.format(t="task_runs") + " AS flow_run_id,")
_FLOW_RUN_INSERT = _FLOW_RUN_COLUMNS + ", owner"  # the order of a run row the writer builds
TASK_RUN_INSERT = "ref, " + _V2_TASK_RUN_COLUMNS.replace("flow_run_id,", "flow_ref, flow_run_id,") + ", owner"
# a packed append to the history of a run written by an earlier batch (history.py)
_APPEND_HISTORY = ("UPDATE task_runs SET history = coalesce(substr(history, 1, length(history) - 1) || ',', '[') "
                   "|| ? || ']' WHERE ref = ?")
_COUNTERS = "SELECT (SELECT value FROM counters WHERE name = 'ref'), (SELECT value FROM counters WHERE name = 'seq')"
SET_COUNTERS = "UPDATE counters SET value = CASE name WHEN 'ref' THEN ? ELSE ? END WHERE name IN ('ref', 'seq')"
# a state written to a run of an earlier batch: the newest state by time is the run's current state
_UPDATE_RUN = """UPDATE {table} SET
    state_type = CASE WHEN state_ts IS NULL OR state_ts <= ?4 THEN ?1 ELSE state_type END,
    state_name = CASE WHEN state_ts IS NULL OR state_ts <= ?4 THEN ?2 ELSE state_name END,
    state_message = CASE WHEN state_ts IS NULL OR state_ts <= ?4 THEN ?3 ELSE state_message END,
    state_ts = CASE WHEN state_ts IS NULL OR state_ts <= ?4 THEN ?4 ELSE state_ts END,
    end_time = CASE WHEN state_ts IS NULL OR state_ts <= ?4 THEN ?7 ELSE end_time END,
    run_count = run_count + ?5, start_time = coalesce(start_time, ?6), owner = ?8 WHERE ref = ?9"""
# and a task run's: with its packed states appended (?10: the append's JSON, or NULL; history.py)
_UPDATE_TASK_RUN = _UPDATE_RUN.format(table="task_runs").replace(" WHERE ref = ?9", (
    ", history = CASE WHEN ?10 IS NULL THEN history ELSE coalesce(substr(history, 1, length(history) - 1) || ',', "
    "'[') || ?10 || ']' END WHERE ref = ?9"))


PLAIN_STATE_COLUMNS = "run_ref, type, name, line, flow_ref, ts, seq"  # the two shapes of a state row (fold.py)
STATE_COLUMNS = "run_ref, run_id, type, name, message, details, line, flow_ref, ts, seq"


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds the database; retry later."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_SCHEMA_PROBLEM = re.compile(r"no such (table|column)|has no column named")


def classify(exc: BaseException) -> str:
    """What an error while writing means: BUSY (retry later), UNUSABLE (the database or its file
    system cannot be used: degrade), or BAD_RECORD (something in the batch: isolate it)."""
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        return BUSY
    if isinstance(exc, (OSError, StoreError)):
        return UNUSABLE
    if isinstance(exc, sqlite3.OperationalError) and _SCHEMA_PROBLEM.search(str(exc)):
        return UNUSABLE  # a table or column missing: the file's schema, not a record, is at fault
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return UNUSABLE if (code & 0xFF) in _UNUSABLE_CODES else BAD_RECORD
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return UNUSABLE
    return BAD_RECORD


def advice(exc: BaseException, path: Path) -> str:
    """The fix for an error that makes the store unusable, by its cause."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    number = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code == 13 or number == _errno.ENOSPC or "full" in text:
        return "The disk is full: free space on it, or set ASYNCFLOW_HOME to a directory on another disk."
    if _SCHEMA_PROBLEM.search(text):
        return (f"The file's tables are not the ones its schema version says (made by another build of asyncflow, "
                f"or edited): move {path} away (a new store is created there), or set ASYNCFLOW_HOME to another "
                f"directory.")
    if code in (11, 26) or "malformed" in text or "not a database" in text:
        return (f"The file is damaged or is not an asyncflow store: move {path} away (a new store is created "
                f"there), or set ASYNCFLOW_HOME to another directory.")
    if code in (3, 8, 14, 23) or number in (_errno.EACCES, _errno.EPERM, _errno.EROFS) or "readonly" in text:
        return (f"This process cannot write there: make {path.parent} and {path.name} writable by this user (or "
                f"remount the file system read-write), or set ASYNCFLOW_HOME to a writable directory.")
    if code == 10 or number == _errno.EIO:
        return "The disk reported an I/O error: check it, or set ASYNCFLOW_HOME to a directory on another disk."
    return "Set ASYNCFLOW_HOME to a writable directory, or ASYNCFLOW_STORE=memory to keep runs in memory."


def summarise_parameters(parameters: Any) -> str:
    """Parameters as the store keeps them (JSON; see `records.parameters_snapshot`)."""
    try:
        return parameters_json(parameters_snapshot(parameters))
    except Exception:
        return json.dumps({"<parameters>": f"<{type(parameters).__name__}>"})


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
class SQLiteStore(SqlRunReads, ProcessWriting, BatchWriter):
    """Runs, states and logs in one SQLite file, written in batches by one writer thread (which may ship
    them to a writer process: process_writer.py).

    `create=False` opens an existing store only (for readers such as the CLI): a missing file raises
    `StoreNotFoundError`. `queue_size` bounds the records waiting for the writer (past it, recording
    waits: backpressure); `stall_seconds` is how long it waits for a writer that makes no progress
    before the queue grows past the bound; `flush_timeout` bounds a flush; `linger` is how long the
    writer lets a burst gather before it writes; `writer` is where batches are written ("auto", "thread" or
    "process", see process_writer.py; None: the setting ASYNCFLOW_STORE_WRITER)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, queue_size: int = 100_000,
                 stall_seconds: float = 10.0, flush_timeout: float = 10.0, linger: float = 0.005,
                 batch_size: int = 5000, busy_timeout: float = 1.0, recover: bool = True,
                 privacy: Privacy | None = None, writer: str | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        if writer not in (None, "auto", "thread", "process"):
            raise ValueError(f"writer must be 'auto', 'thread' or 'process'; got {writer!r}.")
        self.writer_mode = writer
        self.privacy = privacy or Privacy.from_settings()
        self.label = f"the store {self.path}"
        self.busy_timeout = busy_timeout
        self.recovered = 0  # runs this store marked Crashed when it opened (their process was gone)
        super().__init__(queue_size=queue_size, flush_timeout=flush_timeout, linger=linger,
                         batch_size=batch_size, stall_seconds=stall_seconds)
        self._open(create, recover)

    _wired = False  # its batches come in writer_pipe's wire form (the writer process's), else as recorded

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._reader: sqlite3.Connection | None = None
        self._owner: int | None = None  # this process's row in `owners` (registered with its first run)
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file the writer writes
        # runs written, not yet final: id (its int: UUID's hash runs Python code) -> [ref, is flow]
        self._open_runs: dict[int, list[Any]] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- opening, the schema ------------------------------------------------------------------------
    def _sqlite_connect(self) -> sqlite3.Connection:
        if self._read_only:
            return sqlite3.connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable against a process crash
        conn.execute("PRAGMA cache_size = -16000")  # 16 MB: index pages stay in memory between batches
        conn.execute("PRAGMA wal_autocheckpoint = 8000")  # 32 MB of WAL between checkpoints (each syncs)
        return conn

    def _create_file(self) -> None:
        """The home (0700) and an empty database file (0600: it holds parameters); SQLite gives its
        WAL and shared-memory files the database file's mode."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _open(self, create: bool, recover: bool) -> None:
        try:
            exists = self.path.exists()
        except OSError as exc:  # a directory on the way that this user cannot enter
            raise StoreError(f"Cannot open the asyncflow store {self.path}: {describe_error(exc)}. "
                             f"{advice(exc, self.path)}") from None
        if not exists:
            if not create:
                raise StoreNotFoundError(
                    f"No asyncflow store at {self.path} yet: it is created when the first flow or task runs "
                    f"with ASYNCFLOW_HOME={self.path.parent}. Check that ASYNCFLOW_HOME points at the home "
                    f"your runs use.")
            try:
                self._create_file()
            except OSError as exc:
                raise StoreError(f"Cannot create the asyncflow store {self.path}: {describe_error(exc)}. "
                                 f"{advice(exc, self.path)}") from None
        try:
            conn = self._sqlite_connect()
            try:
                self._with_retry(lambda: self._prepare(conn), deadline=time.monotonic() + 30)
                if recover:
                    self._recover(conn)
            except BaseException:
                conn.close()
                raise
            try:
                stat = os.stat(self.path)
            except OSError:  # gone already: the writer connects (and creates it) itself
                conn.close()
            else:  # kept as the writer's connection: its first batch neither connects nor checks the schema again
                self._conn, self._file_id = conn, (stat.st_dev, stat.st_ino)
        except sqlite3.DatabaseError as exc:
            if not create and classify(exc) == UNUSABLE and self._open_read_only():
                return  # a reader (the CLI) of a store it cannot write: it reads a snapshot of the file
            raise StoreError(f"Cannot open the asyncflow store {self.path}: {describe_error(exc)}. "
                             f"{advice(exc, self.path)}") from None

    def _open_read_only(self) -> bool:
        """Read a store this process cannot write (a read-only home: SQLite cannot even create the
        WAL's shared-memory file): as an immutable file. True if that works and the schema is ours."""
        self._read_only = True
        try:
            conn = self._sqlite_connect()
            try:
                version = _schema_version(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            self._read_only = False
            return False
        if version > SCHEMA_VERSION:
            raise StoreError(self._newer_message(version))
        return version == SCHEMA_VERSION

    _read_only = False

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode, and the schema at this version (forward migrations, one transaction).

        The version is kept twice: in the `schema_version` table (what earlier asyncflow versions read
        to refuse a newer store) and in the file header's `user_version`, which an up-to-date store is
        checked by: two pragmas, no table read, no statement that writes."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version == 0:  # a new file, or one whose header an earlier asyncflow did not stamp: the table says
            version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(self._newer_message(version))
        if version == SCHEMA_VERSION:  # up to date, written by an earlier asyncflow: stamp the header, once
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
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
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # (in the transaction: both or neither)
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
            time.sleep(delay * jitter())
            delay = min(delay * 2, 0.25)

    # -- crash recovery ----------------------------------------------------------------------------------
    def _recover(self, conn: sqlite3.Connection) -> int:
        """Mark `Crashed` the open runs whose process (on this host) is gone; forget closed owners.
        Best effort: a store this process cannot write (a read-only CLI) is left as it is."""
        try:
            owners = conn.execute("SELECT id, host, boot, pid, started, closed FROM owners").fetchall()
        except sqlite3.DatabaseError:
            return 0
        dead = [row for row in owners if _owners.is_gone(*row[1:5]) is True]
        if not dead:
            return 0
        crashed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for owner_id, host, boot, pid, started, _ in dead:
                    if not conn.execute("SELECT 1 FROM owners WHERE id = ? AND pid = ? AND started = ?",
                                        (owner_id, pid, started)).fetchone():
                        continue  # another process recovered it meanwhile (ids are never reused)
                    message = _owners.crashed_message((host, boot, pid, started))
                    crashed += _owners.crash_open_runs(conn, owner_id, message)
                    conn.execute("DELETE FROM owners WHERE id = ?", (owner_id,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError:  # read-only, busy for long: the next process to open it will
            return 0
        if crashed:
            report(f"marked {crashed} run(s) Crashed in {self.path}: the process that ran them is gone "
                   f"(killed or crashed before they ended).")
        self.recovered += crashed
        return crashed

    def _owner_id(self, conn: sqlite3.Connection) -> int:
        """This process's row in `owners` (in the caller's transaction), registered once per file."""
        if self._owner is None:
            host, boot, pid, started = _owners.this_process()
            cursor = conn.execute("INSERT INTO owners (host, boot, pid, started, created) VALUES (?, ?, ?, ?, ?)",
                                  (host, boot, pid, started, time.time()))
            self._owner = cursor.lastrowid
        return self._owner  # type: ignore[return-value]

    def _before_close(self, conn: sqlite3.Connection) -> None:
        """A clean exit: every record is written; the next process to open the store forgets us."""
        if self._owner is not None:
            conn.execute("UPDATE owners SET closed = 1 WHERE id = ?", (self._owner,))

    # -- the writer's dialect --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self._create_file()
        conn = self._sqlite_connect()
        try:
            self._prepare(conn)
            stat = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        self._file_id = (stat.st_dev, stat.st_ino)
        return conn

    def _check_target(self) -> None:
        """The file the writer writes to is still at its path (a deleted home: reconnect, which
        creates a new store there, and say so)."""
        if self._file_id is None:
            return
        try:
            stat = os.stat(self.path)
            now: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except OSError:
            now = None
        if now != self._file_id:
            report(f"the store file {self.path} was deleted or replaced while this process was writing to it: "
                   f"a new store is started at that path; runs recorded before are not in it.")
            self._drop_connection()
            self._file_id = None
            self._owner = None
            self._open_runs.clear()

    def _classify(self, exc: BaseException) -> str:
        return classify(exc)

    def _advice(self, exc: BaseException) -> str:
        return advice(exc, self.path)

    def _close_connections(self) -> None:
        super()._close_connections()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _write_batch(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        """One transaction. New runs are numbered (`ref`) under the write lock, so processes never
        collide; a run's current state, attempt count and timing are folded from its states here:
        into the run's row when the run is new in this batch, else into one UPDATE per run."""
        registering = self._owner is None
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_in_transaction(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            self._open_runs.clear()  # it may hold refs of runs that were not committed: look them up again
            if registering:  # the rollback removed our owner row
                self._owner = None
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def _write_in_transaction(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        first_ref, first_seq = conn.execute(_COUNTERS).fetchone()
        rows = fold(batch, next_ref=first_ref, next_seq=first_seq, owner=self._owner_id(conn),
                    open_runs=self._open_runs, find_ref=lambda run_id: self._find_ref(conn, run_id),
                    parameters_json=self.privacy.json, find_flow_ref=lambda flow_id: _find_flow_ref(conn, flow_id),
                    find_given=lambda flow_id: _find_given(conn, flow_id), wired=self._wired)
        if rows.next_ref != first_ref or rows.next_seq != first_seq:
            conn.execute(SET_COUNTERS, (rows.next_ref, rows.next_seq))
        states, renames = rows.states, rows.renames
        if rows.flows:
            _insert(conn, "INSERT INTO flows (name, version, created)", 3, list(rows.flows.values()),
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version")
        if rows.flow_runs:
            _insert(conn, f"INSERT INTO flow_runs ({_FLOW_RUN_INSERT})", 18, rows.flow_runs,
                    " ON CONFLICT (id) DO NOTHING")
        task_runs = rows.task_runs
        if task_runs:
            before = conn.total_changes
            _insert_task_runs(conn, task_runs, self._owner_id(conn))
            if conn.total_changes - before < len(task_runs):  # some were written already (by another writer)
                existing: dict[str, int] = {}
                created: dict[int, float] = {}
                keys = [row[1] for row in task_runs]
                for start in range(0, len(keys), _MAX_VARIABLES):
                    chunk = keys[start:start + _MAX_VARIABLES]
                    marks = ",".join("?" * len(chunk))
                    for key, ref, when in conn.execute(f"SELECT id, ref, created FROM task_runs WHERE id IN ({marks})",
                                                       chunk):
                        existing[key], created[ref] = ref, when
                remap = merge_known(task_runs, existing, self._open_runs, rows.task_updates, renames)
                states = [(remap.get(state[0], state[0]), *state[1:]) for state in states]
                renames = [(name, remap.get(ref, ref)) for name, ref in renames]
                if remap:
                    repack(rows, remap, created, self._open_runs)
        if renames:
            conn.executemany("UPDATE task_runs SET name = ? WHERE ref = ?", renames)
        if rows.task_updates:
            conn.executemany(_UPDATE_TASK_RUN, rows.task_updates)
        if rows.flow_updates:
            conn.executemany(_UPDATE_RUN.format(table="flow_runs"), rows.flow_updates)
        if rows.history_updates:
            conn.executemany(_APPEND_HISTORY, rows.history_updates)
        if rows.appends:
            _insert(conn, "INSERT INTO appends (seq, run_ref, back)", 3, rows.appends)
        if states:  # plain states (7 values) and the others (10): see fold.Folded
            plain = [state for state in states if len(state) == 7]
            if plain:
                _insert(conn, f"INSERT INTO states ({PLAIN_STATE_COLUMNS})", 7, plain)
            if len(plain) < len(states):
                _insert(conn, f"INSERT INTO states ({STATE_COLUMNS})", 10, [row for row in states if len(row) == 10])
        if rows.logs:
            _insert(conn, "INSERT INTO logs (flow_run_id, task_run_id, level, message, ts, seq)", 6, rows.logs)

    def _find_ref(self, conn: sqlite3.Connection, run_id: str) -> list[Any] | None:
        """[ref, is a flow run] of the run `run_id` (its id's text) written earlier (a task run: [ref, False,
        created, its flow run's id int or None], fold.py), or None if it is not in the database."""
        row = conn.execute(f"SELECT ref, 0, created, {FLOW_ID_OF_TASK.format(t='task_runs')} FROM task_runs "
                           "WHERE id = ?1 UNION ALL SELECT ref, 1, created, NULL FROM flow_runs "
                           "WHERE id = ?1", (run_id,)).fetchone()
        if row is None:
            return None
        return [row[0], True] if row[1] else [row[0], False, row[2], None if row[3] is None else uuid.UUID(row[3]).int]

    # -- reading -------------------------------------------------------------------------------------
    def _read(self, fn: Any, flush: bool = True) -> Any:
        """fn(the reader connection), retried while the database is busy. `flush=True` writes what this
        process recorded first (read-your-writes); a reader that polls passes False and sees what is
        committed."""
        if flush:
            self.flush()

        def attempt() -> Any:
            with self._read_lock:
                if self._reader is None:
                    self._reader = self._sqlite_connect()
                return fn(self._reader)

        try:
            return self._with_retry(attempt, deadline=time.monotonic() + 30)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"Cannot read the asyncflow store {self.path}: {describe_error(exc)}. "
                             f"{advice(exc, self.path)}") from None

    def _query(self, sql: str, params: Iterable[Any] = (), flush: bool = True) -> list[tuple[Any, ...]]:
        """Rows of a read (see `_read`)."""
        return self._read(lambda conn: conn.execute(sql, tuple(params)).fetchall(), flush)

    def _shared_query(self, sql: str, params: Iterable[Any] = (), flush: bool = True) -> list[tuple[Any, ...]]:
        return self._query(sql, params, flush)

    # -- retention and the CLI's reads (the SQL is in retention.py and cli_queries.py) ---------------------
    def delete_flow_runs(self, ids: Iterable[Any]) -> dict[str, int]:
        """Delete these flow runs, their subflow runs (recursively), their task runs, states and log lines,
        in one transaction; returns the rows deleted per table. Unknown ids are ignored."""
        from . import retention

        ids, gone = list(ids), set[str]()
        self.flush()
        counts = self._in_write_transaction(lambda conn: retention.delete_flow_runs(conn, ids, gone))
        self._forget_runs(gone)
        return counts

    def prune(self, older_than_seconds: float, *, dry_run: bool = False) -> dict[str, int]:
        """Delete the runs that ended more than `older_than_seconds` ago, one short transaction per batch
        (see retention.py for what goes); `dry_run` only counts. Returns the rows per table."""
        from . import retention

        before = retention.cutoff(older_than_seconds)
        self.flush()
        totals, cursor = retention.zero_counts(), retention.START
        while cursor is not None:
            run = functools.partial(retention.prune_batch, before_ts=before, cursor=cursor, dry_run=dry_run)
            counts, cursor = self._read(run, flush=False) if dry_run else self._in_write_transaction(run)
            retention.add_counts(totals, counts)
        if not dry_run:
            self._forget_runs()
        return totals

    def task_run_state_counts(self, flow_run_id: Any) -> list[tuple[str, int]]:
        """[(state name, task runs in it)] of a flow run, in the order the states first appear."""
        from . import cli_queries

        return self._read(lambda conn: cli_queries.task_run_state_counts(conn, flow_run_id))

    def _in_write_transaction(self, fn: Any) -> Any:
        """fn(writer connection) in one transaction under the write lock, retried while the database is busy."""
        def attempt() -> Any:
            with self._lock:
                if self._closed:  # (the automatic retention's thread stops here at exit)
                    raise StoreError(f"The store {self.path} is closed.")
                conn = self._writer_conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

        try:
            return self._with_retry(attempt, deadline=time.monotonic() + 30)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"Cannot write to the asyncflow store {self.path}: {exc}.") from None

    def _forget_runs(self, ids: set[str] | None = None) -> None:
        """Forget the refs cached for deleted runs (`ids`, else whichever cached runs are gone), so that
        later records of theirs look their run up again instead of pointing at a deleted row."""
        from . import retention

        with self._lock:
            self._forget_in_child()
            if ids is None:
                cached = [str(uuid.UUID(int=key)) for key in list(self._open_runs)]
                if not cached or self._closed:
                    return
                ids = set(cached) - retention.existing_run_ids(self._writer_conn(), cached)
            for key in [key for key in list(self._open_runs) if str(uuid.UUID(int=key)) in ids]:
                del self._open_runs[key]

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


# a flow run's number: [number, stored]: its row's, else the one given ahead to its task runs (fold.py)
FIND_FLOW_REF = ("SELECT ref, 1 FROM flow_runs WHERE id = ? UNION ALL "
                 "SELECT flow_ref, 0 FROM task_runs WHERE flow_run_id = ? LIMIT 1")
FIND_GIVEN = "SELECT flow_ref FROM task_runs WHERE flow_run_id = ? LIMIT 1"


def _find_flow_ref(conn: sqlite3.Connection, flow_id: str) -> list[Any] | None:
    row = conn.execute(FIND_FLOW_REF, (flow_id, flow_id)).fetchone()
    return None if row is None else [row[0], bool(row[1])]


def _find_given(conn: sqlite3.Connection, flow_id: str) -> int | None:
    row = conn.execute(FIND_GIVEN, (flow_id,)).fetchone()
    return None if row is None else row[0]


_PLAIN_TASK_RUN = ("ref, id, name, task_name, task_key, flow_ref, parameters, tags, created, state_type, "
                   "state_name, state_ts, run_count, start_time, end_time, history")


def _insert_task_runs(conn: sqlite3.Connection, rows: list[list[Any]], owner: int) -> None:
    """Task run rows (fold.py's layout, with the history last): most have no version, no flow run id text,
    no parent task run and no state message (and all the writer's owner): those are written with 16 values
    instead of 21, the rest as they are."""
    plain = [(r[0], r[1], r[2], r[3], r[4], r[6], r[9], r[10], r[11], r[12], r[13], r[15], r[16], r[17], r[18],
              r[20]) for r in rows if r[5] is None and r[7] is None and r[8] is None and r[14] is None]
    if plain:
        _insert(conn, f"INSERT INTO task_runs ({_PLAIN_TASK_RUN}, owner)", 16, plain,
                " ON CONFLICT (id) DO NOTHING", f"{int(owner)}")
    if len(plain) < len(rows):
        _insert(conn, f"INSERT INTO task_runs ({TASK_RUN_INSERT}, history)", 21,
                [r for r in rows if r[5] is not None or r[7] is not None or r[8] is not None or r[14] is not None],
                " ON CONFLICT (id) DO NOTHING")


_STATEMENTS: dict[tuple[str, int, int, str, str], str] = {}
_MAX_VARIABLES = 32766  # SQLite's default limit since 3.32 (checked per connection where Python can)


def _insert(conn: sqlite3.Connection, head: str, width: int, rows: list[Any], tail: str = "",
            constant: str = "") -> None:
    """Insert many rows with few statements (multi-row VALUES, a few cached sizes). `constant`: the SQL
    of one more value, the same in every row (the head names its column last).

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
        key = (head, width, size, tail, constant)
        sql = _STATEMENTS.get(key)
        if sql is None:
            one = "(" + ", ".join(["?"] * width + ([constant] if constant else [])) + ")"
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
    return State(StateType(type_), name or type_.capitalize(), message, None, details,
                 ts if ts is not None else created)


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
