"""The batching writer every database store shares: queue, backpressure, thread, flush, fork, exit,
isolation of bad records, and degrading to memory. A backend (SQLite, PostgreSQL) is a subclass that
says how to connect, how to write one batch in one transaction, and what an error means.

The hot path (`record_*`) appends an immutable snapshot (`records.py`) to a queue: about a microsecond.
One writer thread per store takes records off the queue and writes them in batches, each batch one
transaction, so a run's records are stored whole or not at all.

What the writer promises:

- **Nothing recorded is dropped.** When the queue is full, the recording thread waits (and helps
  write) as long as the writer makes progress: backpressure, not loss. If the writer makes no progress
  for `stall_seconds` (another process holds the database), the queue grows past its bound, with one
  warning, rather than block the flow for ever.
- **A record that cannot be written is isolated.** An error caused by the data (a constraint, a value
  the driver refuses) splits the batch until the record is alone; it is reported and counted
  (`lost`), and every other record of the batch is written.
- **The store degrades, the flow runs.** An error that says the database itself is unusable (disk
  full, read-only, permission, damaged, deleted directory) gives one warning naming the path, the
  cause and the fix; from then on the process records into a memory store (`fallback`), which its
  reads use too. Nothing raises into the engine.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import _fork
from .._runs import FlowRun
from .._states import FINAL_TYPES, State, StateType
from . import base as _base
from . import records as _records
from .records import FLOW, LINE, LOG, MARK, NEW, STATE, TASK

BUSY, UNUSABLE, BAD_RECORD = "busy", "unusable", "bad record"  # what a write error means (`_classify`)
RECENT_FLOWS = 1024  # flow runs whose snapshot a writer keeps for its degrade (a dict entry per flow run)
READ_METHODS = ("read_flow_run", "read_task_run", "read_flow_runs", "read_task_runs", "read_states",
                "read_logs")


def report(message: str) -> None:
    """A warning on stderr, in the shape of asyncflow's log lines (never through the store itself)."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    try:
        sys.stderr.write(f"{stamp} | WARNING | asyncflow.store - {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # stderr closed at exit
        pass


def jitter() -> float:
    """A factor between 0.5 and 1.5 for a retry's sleep, so processes that collided do not collide
    again (`random` is imported when first needed: not on the writer process's start)."""
    import random

    return 0.5 + random.random()


class BatchWriter:
    """The writer half of a database store (see the module's docstring). Subclasses implement
    `_connect()` (a new, prepared connection), `_write_batch(conn, batch)` (one transaction, rolled
    back on error), `_classify(exc)` (BUSY, UNUSABLE or BAD_RECORD), and may override
    `_check_target()` (before each batch) and `_before_close(conn)` (the last write at exit)."""

    label = "the store"

    def __init__(self, *, queue_size: int, flush_timeout: float, linger: float, batch_size: int,
                 stall_seconds: float) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1; got {queue_size!r}.")
        self.queue_size = queue_size
        self.flush_timeout = flush_timeout
        self.linger = linger
        self.batch_size = batch_size
        self.stall_seconds = stall_seconds
        self.lost = 0  # records that could not be written (isolated and reported on stderr)
        self.waited = 0  # times a recording thread waited for room (backpressure)
        self.fallback: Any = None  # the memory store this process records into once degraded
        self._closed = False
        self._on_idle: Callable[[], Any] | None = None  # called once, when the writer first has nothing to do
        self._init_runtime()
        _WRITERS.add(self)

    def _init_runtime(self) -> None:
        self._queue: deque[tuple[Any, ...]] = deque()
        self._batch: list[tuple[Any, ...]] = []  # taken off the queue, not yet committed
        self._writing = False
        self._lock = threading.Lock()  # held while a batch is taken and written (writer thread or a flush)
        self._event = threading.Event()
        self._sleeping = True  # the writer waits for the event (or has not started)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: Any = None
        self._read_lock = threading.Lock()
        self._committed = 0  # batches written (progress, for backpressure)
        self._unbounded = False  # the writer stalled: the queue grows past its bound until it drains
        self._fallback_runs: dict[Any, Any] = {}  # degraded: run id -> run object in the fallback
        # the newest flow runs' snapshots (run id -> record): a flow run that ended just before the store
        # became unusable may have its row in the database and its last states still queued (degrade)
        self._recent_flows: dict[Any, tuple[Any, ...]] = {}

    def _reset_in_child(self) -> None:
        """After fork: the parent's writer thread does not exist here, its queue is the parent's to
        write, and its connections are the parent's: a child must not use them, not even to close
        them (SQLite says so), so they are kept (never closed) and new ones are opened on demand."""
        _INHERITED.extend(c for c in (self._conn, getattr(self, "_reader", None)) if c is not None)
        self._init_runtime()

    # -- the dialect ----------------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _write_batch(self, conn: Any, batch: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> str:
        raise NotImplementedError

    def _advice(self, exc: BaseException) -> str:
        """What to do about an UNUSABLE error (the warning's last sentence)."""
        return "Check the database, or set ASYNCFLOW_STORE=memory."

    def _check_target(self) -> None:
        """Called before each batch: notice a database that went away (and reconnect)."""

    def _before_close(self, conn: Any) -> None:
        """The last write through `conn` as the store closes (a clean exit)."""

    def _close_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- recording: the hot path (each method inlines the append: a shared helper costs a call per record)
    def record_flow_run(self, run: Any, state: State[Any] | None = None) -> None:
        """With `state`: a new run and its first state, as one record (see records.NEW)."""
        record = _records.flow_run(run)
        recent = self._recent_flows
        recent[run.id] = record
        if len(recent) > RECENT_FLOWS:
            with contextlib.suppress(KeyError, RuntimeError):  # (another thread evicted it first)
                del recent[next(iter(recent))]
        if state is not None:
            record = (NEW, record, _records.state(run.id, state))
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_task_run(self, run: Any, state: State[Any] | None = None) -> None:
        """Also to record a run again under a new name (a task_run_name rendered when it starts). With
        `state`: a new run and its first state, as one record (see records.NEW)."""
        record = _records.task_run(run)
        if state is not None:
            record = (NEW, record, _records.state(run.id, state))
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_state(self, run_id: Any, state: State[Any]) -> None:
        record = (STATE, run_id, state.type, state.name, state.message, state.ts, state.state_details)
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None:
        record = (LOG, flow_run_id, task_run_id, level, message, ts)
        if len(self._queue) < self.queue_size:
            self._queue.append(record)
        else:
            self._overflow(record)
        if self._sleeping:
            self._wake()

    def record_state_line(self, run_id: Any, code: int, flow_id: Any, flow_run_id: str | None,
                          task_run_id: str | None, level: str, message: str, ts: float) -> None:
        """An engine line that says what the state of `run_id` recorded just before says (lines.py), in
        the flow run `flow_id` (a UUID, None for a task run outside flows): stored as a mark on that
        state's row, read back as the log line."""
        record = (LINE, flow_run_id, task_run_id, level, message, ts, run_id, code, flow_id)
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
        """The queue is full: wait, helping write, while the writer makes progress (backpressure).
        After `stall_seconds` without progress the queue grows past its bound instead: a record is
        never dropped and a flow is never blocked for ever."""
        if not self._unbounded and self._thread is not threading.current_thread():
            self.waited += 1
            self._wake()
            seen, since = self._committed, time.monotonic()
            while len(self._queue) >= self.queue_size and not self._unbounded:
                written = self._write_once(blocking=False)
                if written is None:  # the writer is on a batch: wait for it to commit
                    if self._lock.acquire(timeout=0.05):
                        self._lock.release()
                elif written is False:  # busy
                    time.sleep(0.002 * jitter())
                if self._committed != seen:
                    seen, since = self._committed, time.monotonic()
                elif time.monotonic() - since >= self.stall_seconds:
                    self._unbounded = True
                    report(f"{self.label} has written nothing for {self.stall_seconds:g} s (another process "
                           f"holds the database?): records are kept in memory past the queue's bound "
                           f"({self.queue_size}) until it catches up. Nothing is dropped.")
        self._queue.append(record)

    def when_first_idle(self, fn: Callable[[], Any]) -> None:
        """Call `fn` in the writer thread once it has written its first records and has nothing to do
        (background work such as retention, kept off the first flow's critical path)."""
        self._on_idle = fn

    # -- the writer thread ----------------------------------------------------------------------------
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
                on_idle, self._on_idle = self._on_idle, None
                if on_idle is not None:
                    try:
                        on_idle()
                    except Exception as exc:
                        report(f"the store writer's idle task failed: {type(exc).__name__}: {exc}")
                self._sleeping = True
                if not self._queue:  # re-check: a producer that saw _sleeping False did not wake us
                    self._event.wait()
                self._event.clear()
                self._sleeping = False
                if self._closed:
                    break
                time.sleep(self.linger)  # let a burst gather into one transaction
            # (a batch in flight is retried at once, unless another thread is writing it: a flush)
            if (not self._batch or self._writing) and self._hold():
                continue
            try:
                written = self._write_once(by_writer=True)
            except Exception as exc:  # never let the writer die: report and go on
                report(f"the store writer hit an unexpected error: {type(exc).__name__}: {exc}")
                written = True
            if written:
                delay = 0.005
                if self._unbounded and len(self._queue) < self.queue_size // 2:
                    self._unbounded = False
            else:  # busy: another process holds the database; back off, keep the batch
                time.sleep(delay * jitter())
                delay = min(delay * 2, 0.5)

    def _write_once(self, blocking: bool = True, by_writer: bool = False) -> bool | None:
        """Write one batch (the one in flight, else the next off the queue). False if the database was
        busy (the batch stays in flight, in order, for the next attempt); None if `blocking` is False
        and another thread is writing. The writer thread (`by_writer`) looks at its hold again once it
        has the lock: a flush it waited for may have started the writer process meanwhile."""
        if not self._lock.acquire(blocking):
            return None
        self._writing = True
        try:
            batch = self._batch
            if not batch and by_writer and self._held():
                return True
            if not batch:
                queue = self._queue
                take = min(len(queue), self._batch_limit())
                if not take:
                    return True
                popleft = queue.popleft
                batch = []
                append = batch.append
                for _ in range(take):  # one pass (a comprehension, then a check and an unpack, took three)
                    record = popleft()
                    if record[0] == NEW:  # unpacked: a new run, then its first state
                        append(record[1])
                        append(record[2])
                    else:
                        append(record)
                self._batch = batch
            if self.fallback is None:
                try:
                    self._check_target()
                    self._write(batch)
                except Exception as exc:
                    kind = self._classify(exc)
                    if kind == BUSY:
                        return False
                    self._drop_connection()
                    if kind == UNUSABLE:
                        self._degrade(exc, batch)
                    else:
                        self._isolate(batch)
            if self.fallback is not None:
                self._replay(batch)
            for record in batch:
                if record[0] == MARK:
                    record[1][0] = True
            self._batch = []
            self._committed += 1
            return True
        finally:
            self._writing = False
            self._lock.release()

    def _hold(self) -> bool:
        """Should the writer thread leave the queue for now? (It has waited a moment first; the SQLite store's
        does while its writer process starts.) A flush, or a recording thread waiting for room, writes anyway."""
        return False

    def _held(self) -> bool:
        """`_hold` without its wait (looked at under the write lock)."""
        return False

    def _batch_limit(self) -> int:
        """The most records the next batch takes off the queue (the SQLite store's may be fewer while its
        writer process starts)."""
        return self.batch_size

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write one batch in one transaction (the SQLite store may ship it to its writer process)."""
        self._write_batch(self._writer_conn(), batch)

    def _writer_conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _isolate(self, batch: list[tuple[Any, ...]]) -> None:
        """A record of `batch` cannot be written: write the batch in halves until each bad record is
        alone; report and count those, write the rest (in order)."""
        parts = [batch]
        while parts:
            part = parts.pop()
            deadline = time.monotonic() + self.flush_timeout
            while True:
                try:
                    self._write(part)
                    break
                except Exception as exc:
                    kind = self._classify(exc)
                    self._drop_connection()
                    if kind == BUSY and time.monotonic() < deadline:
                        time.sleep(0.01 * jitter())
                        continue
                    if kind == UNUSABLE:
                        self._degrade(exc, [r for p in (part, *reversed(parts)) for r in p])
                        return
                    data = [r for r in part if r[0] != MARK]
                    if len(data) <= 1:
                        self.lost += len(data)
                        if data:
                            report(f"could not write a record to {self.label} ({type(exc).__name__}: {exc}); "
                                   f"it is left out, the rest of its batch is written: {_describe(data[0])}. "
                                   f"{self.lost} record(s) left out so far.")
                        break
                    middle = len(part) // 2
                    parts.append(part[middle:])
                    parts.append(part[:middle])
                    break

    # -- degrading to memory -----------------------------------------------------------------------
    def _degrade(self, exc: BaseException, batch: list[tuple[Any, ...]] | None = None) -> None:
        """The database is unusable: warn once, and record into a memory store from now on (the
        records of `batch` and everything queued included); this store's reads read it."""
        if self.fallback is not None:
            return
        from .memory import MemoryStore

        report(f"cannot write to {self.label}: {describe_error(exc)}. {self._advice(exc)} Until this "
               f"process ends, its runs are kept in memory only (readable in this process; the CLI and "
               f"other processes will not see them).")
        fallback = MemoryStore(max_runs=10_000)
        self._carry_open_runs(fallback)
        for name in READ_METHODS:
            setattr(self, name, getattr(fallback, name))
        self.fallback = fallback

    def _carry_open_runs(self, fallback: Any) -> None:
        """The runs open in this process when the store became unusable may have their record (and first
        states) in the database already: the memory store learns each one, as it is now (its states
        still queued are replayed after), so this process reads its open runs whole."""
        runs = self._fallback_runs
        for run in _base.open_runs():
            if run.id in runs:
                continue
            record = _records.flow_run(run) if isinstance(run, FlowRun) else _records.task_run(run)
            copy = _records.to_run(record)
            state = run.state
            copy.state = State(state.type, state.name, state.message, None, state.state_details, state.ts)
            copy.run_count, copy.start_time = run.run_count, run.start_time
            self._adopt(fallback, record, copy)
            fallback.record_state(run.id, copy.state)

    def _adopt(self, fallback: Any, record: tuple[Any, ...], run: Any) -> None:
        """The fallback learns `run`, made from its snapshot `record` (FLOW or TASK); its states follow it."""
        self._fallback_runs[run.id] = run
        (fallback.record_flow_run if record[0] == FLOW else fallback.record_task_run)(run)

    def _replay(self, batch: list[tuple[Any, ...]]) -> None:
        fallback, runs = self.fallback, self._fallback_runs
        for record in batch:
            kind = record[0]
            if kind == STATE:
                run = runs.get(record[1])
                if run is None and (snapshot := self._recent_flows.pop(record[1], None)) is not None:
                    run = _records.to_run(snapshot)  # its row went to the database
                    self._adopt(fallback, snapshot, run)
                state = _records.to_state(record)
                if run is not None:
                    if run.state.ts <= state.ts:
                        run.state = state
                        if state.type is StateType.RUNNING:
                            run.run_count += 1
                            run.start_time = run.start_time or state.ts
                    if state.type in FINAL_TYPES:
                        run.end_time = state.ts
                        del runs[record[1]]
                fallback.record_state(record[1], state)
            elif kind in (LOG, LINE):
                fallback.record_log(flow_run_id=record[1], task_run_id=record[2], level=record[3],
                                    message=record[4], ts=record[5])
            elif kind in (FLOW, TASK):
                known = runs.get(record[1])
                if known is not None:  # recorded again: a new name
                    known.name = record[2]
                    continue
                self._adopt(fallback, record, _records.to_run(record))
        while len(runs) > 100_000:  # runs that never end (their process's records stopped)
            del runs[next(iter(runs))]

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
        self._queue.append((MARK, mark))  # past the bound on purpose: a flush never waits for room
        limit = self.flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.002
        while not mark[0]:
            if self._write_once():
                delay = 0.002
                continue
            if time.monotonic() >= deadline:
                report(f"{self.label} stayed busy for {limit:g} s (another process holds it); "
                       f"{len(self._queue) + len(self._batch)} record(s) are not written yet and stay queued.")
                if self._sleeping:
                    self._wake()
                return False
            time.sleep(delay * jitter())
            delay = min(delay * 2, 0.25)
        return True

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the connections. Records that arrive
        later are written by the next flush (in the flushing thread)."""
        flushed = self.flush()
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._event.set()
            if thread is not threading.current_thread():
                thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._conn is not None and flushed and self.fallback is None:
                with contextlib.suppress(Exception):
                    self._before_close(self._conn)
            self._close_connections()

    def _at_exit(self) -> None:
        if not self._closed or self.pending():
            try:
                self.close()
            except Exception as exc:  # exit goes on
                report(f"could not write the last records to {self.label}: {type(exc).__name__}: {exc}")


def describe_error(exc: BaseException) -> str:
    errno = getattr(exc, "errno", None)
    name = getattr(exc, "sqlite_errorname", None)
    text = f"{type(exc).__name__}: {exc}"
    if name:
        text += f" ({name})"
    elif errno:
        import errno as _errno

        text += f" ({_errno.errorcode.get(errno, errno)})"
    return text


def _describe(record: tuple[Any, ...]) -> str:
    kind = record[0]
    if kind == STATE:
        return f"state {record[3]!r} of run {record[1]}"
    if kind in (LOG, LINE):
        return f"a log line of run {record[2] or record[1]}"
    if kind in (FLOW, TASK):
        return f"{'flow' if kind == FLOW else 'task'} run {record[2]!r} ({record[1]})"
    return repr(record[0])


# -- every writer of the process: fork and exit ----------------------------------------------------
_WRITERS: weakref.WeakSet[BatchWriter] = weakref.WeakSet()
_FORK_HELD: list[threading.Lock] = []
_INHERITED: list[Any] = []  # a forked child's copies of its parent's connections (never used or closed)


def _before_fork() -> None:
    """A thread inside a database driver at the moment of a fork leaves the driver's own mutexes
    locked in the child, which then hangs at its first call: wait until no thread of ours is inside
    one. The wait shares the fork's budget (`_fork.FORK_WAIT_SECONDS` for all of asyncflow): when it
    is spent, the fork goes on (and a child forked mid-write may hang at its first write)."""
    for writer in list(_WRITERS):
        for lock in (writer._lock, writer._read_lock):
            if lock.acquire(timeout=_fork.remaining()):  # a batch being written, a busy database
                _FORK_HELD.append(lock)


def _after_fork_in_parent() -> None:
    while _FORK_HELD:
        _FORK_HELD.pop().release()


def _reset_after_fork() -> None:
    _FORK_HELD.clear()  # the child's copies of these locks are replaced
    for writer in list(_WRITERS):
        writer._reset_in_child()


def _flush_all_at_exit() -> None:
    for writer in list(_WRITERS):
        writer._at_exit()


_fork.register("store", reset_in_child=_reset_after_fork, before=_before_fork,
               after_in_parent=_after_fork_in_parent)
# atexit runs handlers last-registered first: this one runs before the engine's, which records the runs
# still open as Crashed and then flushes again.
atexit.register(_flush_all_at_exit)
