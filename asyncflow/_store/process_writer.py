"""The SQLite store's writer process: each batch's fold and SQL run off this process's GIL.

The writer thread (writer.py) stays the one consumer of the queue: ordering, batching, flush marks,
isolation of bad records and degrading to memory are its work as before. What changes is where a batch
is written: the thread ships it (pickled) through a pipe to a child process, which runs the same fold
and the same SQL on its own connection (writer_child.py), and waits for the answer (a blocking read:
the GIL is free meanwhile). An error comes back as the exception it was (its class, message and SQLite
code), so the thread classifies it as it would its own.

- Started late: a process writes in its thread first. With `ASYNCFLOW_STORE_WRITER=auto` (the default)
  the child is started once the thread has written START_AFTER records, in the background (the thread
  goes on writing, in batches of at most STARTING_BATCH records, until the child is ready), and takes over
  between two batches: a short script never pays a Python start. `process` starts it after the first
  batch and waits for it; `thread` never does.
- The owner of the runs stays this process: the first batch (always written in the thread) registers
  this process in `owners`, and the child writes under that row, so runs left open by a crash of this
  process are marked Crashed at the next open (owners.py).
- A child that dies (killed) loses and duplicates nothing: every batch carries a number that the child
  writes in the same transaction (a row of `counters`, named by the child's token); the thread reads
  it back to learn whether the batch it was waiting for was committed, writes it itself if not, and
  from then on writes in its thread (one warning).
- The child ignores SIGINT and SIGTERM, in a process group of its own (a Ctrl-C to the terminal does not
  reach it): it exits when its input ends, when this process closes the pipe at exit or dies (SIGKILL
  included), after deleting its `counters` row.
- Fork: a forked child closes its copies of the pipes (so the writer process sees the end of its input
  when this process ends) and writes in its own thread.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from .writer import report
from .writer_pipe import ChildGone, Unshippable, WriterChild

START_AFTER = 1000  # records the thread writes before `auto` starts the writer process (~170 task runs)
# the thread's largest batch while the writer process starts: it takes over at the next batch once ready (a
# full batch, 5,000 records, is ~40-100 ms of the thread's writing: most of a benchmark-sized flow)
STARTING_BATCH = 500
# `auto`, with a CPU idle: how long the writer thread leaves the records queued for the starting writer process
# instead of writing them itself (taking the GIL from the engine for the fold and the SQL), and at most how full
# the queue may grow meanwhile (a fraction of its bound). A flush writes at once, whatever this says.
HOLD_SECONDS = 2.0
HOLD_QUEUE = 0.25
READY_SECONDS = 30.0  # `process`: how long the first batch waits for the child to start


class ProcessWriting:
    """The SQLite store's side of the writer process (a mixin before BatchWriter: see the module's
    docstring). `writer_mode` is "auto", "thread" or "process" (None: the setting)."""

    writer_mode: str | None = None
    label: str
    path: Any
    busy_timeout: float
    privacy: Any
    _owner: int | None
    _open_runs: dict[int, list[Any]]
    _closed: bool
    _queue: Any
    queue_size: int
    batch_size: int

    def _init_runtime(self) -> None:
        super()._init_runtime()  # type: ignore[misc]
        self._child: WriterChild | None = None
        self._no_child = False  # this process writes in its thread (decided, or the child died or never started)
        self._written = 0  # records written in the thread (`auto` starts the child after START_AFTER)
        self._hold_until = 0.0  # `auto`: the writer thread leaves the queue to the starting child until then
        self._cpu_since = cpu_sample()  # `auto` looks at how idle the CPUs were since (`_idle_cpu`)
        # (batch, child): a wait for the child's answer interrupted (Ctrl-C in a flushing main thread): the
        # child is stopped and the batch's fate read back before the next write
        self._interrupted: tuple[list[tuple[Any, ...]], WriterChild] | None = None

    def _reset_in_child(self) -> None:
        child = self._child
        if child is not None:
            child.abandon()
        super()._reset_in_child()  # type: ignore[misc]

    def _close_connections(self) -> None:
        self._stop_child()
        super()._close_connections()  # type: ignore[misc]

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write one batch in one transaction: through the writer process when it is ready, else here."""
        if self._interrupted is not None:
            pending, gone = self._interrupted
            self._interrupted = None
            if self._child_gone(gone) and pending is batch:
                return  # committed before its answer was read
        if self._owner is None:  # a new file (or the first batch): this process registers itself first
            self._stop_child()
        child = self._child
        if child is None or not child.ready:
            child = self._starting(child)
        if child is not None:
            try:
                child.call("batch", batch)
                return
            except ChildGone:
                if self._child_gone(child):
                    return
            except Unshippable:  # a value that does not pickle: written here
                pass
            except Exception:  # its answer: the batch's error, classified by the thread
                raise
            except BaseException:  # interrupted while waiting: the answer is lost, the child out of step
                self._interrupted = (batch, child)
                raise
        self._write_batch(self._writer_conn(), batch)  # type: ignore[attr-defined]
        self._written += len(batch)

    def _hold(self) -> bool:
        """While the writer process starts (`auto`): the writer thread waits a moment for it (the GIL free)
        and leaves the queue to it, within HOLD_SECONDS and a HOLD_QUEUE share of the queue's bound."""
        child = self._child
        if child is None or not self._held():
            return False
        return not child.readable(0.01)  # (it answered, ready or failed: the next batch reads the answer)

    def _held(self) -> bool:
        child = self._child
        return (child is not None and not child.ready and time.monotonic() < self._hold_until
                and len(self._queue) < self.queue_size * HOLD_QUEUE)

    def _batch_limit(self) -> int:
        """While the writer process starts, small batches: it takes over at the first one after it is ready."""
        child = self._child
        if child is not None and not child.ready:
            return min(self.batch_size, STARTING_BATCH)
        return self.batch_size

    def _starting(self, child: WriterChild | None) -> WriterChild | None:
        """The writer process if it is ready now; starts it when it is time."""
        if self._no_child or self._owner is None or self._closed:  # (at exit: records after close)
            return None
        if child is None:
            mode = self.writer_mode or _setting()
            if mode == "auto" and self._written < START_AFTER:
                return None
            if mode == "thread" or not sys.executable or (mode == "auto" and not _idle_cpu(self._cpu_since)):
                self._no_child = True  # decided once: this process writes in its thread
                return None
            import subprocess

            try:
                child = self._child = WriterChild({"path": str(self.path), "busy_timeout": self.busy_timeout,
                                                   "privacy": self.privacy, "owner": self._owner})
            except (OSError, subprocess.SubprocessError) as exc:
                self._give_up(f"{type(exc).__name__}: {exc}")
                return None
            if mode == "auto":
                self._hold_until = time.monotonic() + HOLD_SECONDS
                return None  # it starts in the background: the queue waits for it (`_hold`), a flush writes
            ready = child.poll(READY_SECONDS)
        else:
            ready = child.poll()
        if ready is None:
            return None
        if ready is False:
            self._give_up(child.failure)
            return None
        self._open_runs.clear()  # the child keeps its own memory of open runs
        return child

    def _give_up(self, why: str) -> None:
        child, self._child = self._child, None
        self._no_child = True
        if child is not None:
            child.reap()
        report(f"could not start the writer process of {self.label} ({why}); this process writes its "
               f"records itself.")

    def _child_gone(self, child: WriterChild) -> bool:
        """The writer process died before it answered: was the batch it had committed? (Read back from
        the batch number it writes with each batch.) This process writes in its thread from now on."""
        self._child, self._no_child = None, True
        code = child.reap()
        self._open_runs.clear()  # it may hold refs of runs this process has not seen numbered

        def last() -> Any:
            conn = self._writer_conn()  # type: ignore[attr-defined]
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (child.token,)).fetchone()
            conn.execute("DELETE FROM counters WHERE name = ?", (child.token,))
            return None if row is None else row[0]

        import time

        committed = self._with_retry(last, deadline=time.monotonic() + 30) == child.seq  # type: ignore[attr-defined]
        report(f"the writer process of {self.label} ended (exit code {code}) before it answered; the batch it was "
               f"writing {'was committed' if committed else 'is written again here'}, and this process writes "
               f"its records itself from now on. Nothing is lost.")
        return committed

    def _degrade(self, exc: BaseException, batch: list[tuple[Any, ...]] | None = None) -> None:
        super()._degrade(exc, batch)  # type: ignore[misc]
        self._stop_child()  # the process records into memory from now on

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()
            self._open_runs.clear()

    def _forget_in_child(self) -> None:
        """Runs were deleted (retention): the writer process forgets the numbers it keeps of open runs.
        Called under the write lock."""
        child = self._child
        if child is not None and child.ready and self._interrupted is None:
            try:
                child.call("forget")
            except ChildGone:
                self._child_gone(child)


# `auto`'s look at the CPUs. The 1-minute load average first (no wait); when it says they are busy, it
# may still count what ran a minute ago (the benchmark's scenarios before this one), so the share of CPUs
# idle is then measured from the kernel's counters (/proc/stat) over IDLE_WINDOW seconds or more: the time
# since the store opened when that is between IDLE_WINDOW and IDLE_RECENT seconds (no wait), else a fresh
# window, the writer thread sleeping meanwhile (the engine goes on; its records queue).
IDLE_WINDOW = 0.1
IDLE_RECENT = 2.0
IDLE_NEEDED = 0.5  # CPUs: about what a writer process uses while it keeps up with a busy engine


def cpu_sample() -> tuple[float, int, int] | None:
    """(monotonic time, idle ticks, all ticks) of every CPU together, or None where /proc/stat is not."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != b"cpu":
        return None
    ticks = [int(field) for field in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return time.monotonic(), ticks[3] + ticks[4], sum(ticks)


def idle_cpus(before: tuple[float, int, int], after: tuple[float, int, int], cpus: int) -> float | None:
    """How many of `cpus` were idle between two samples, on average (None: no ticks between them)."""
    ticks = after[2] - before[2]
    return None if ticks <= 0 else cpus * (after[1] - before[1]) / ticks


def _idle_cpu(since: tuple[float, int, int] | None = None) -> bool:
    """Is there a CPU for a writer process? It gains the time of a CPU this process does not use, and costs
    more CPU in all than the thread (each batch pickled here and unpickled there): on one CPU, or on a
    machine whose CPUs are busy (this process's own work counts), the thread is faster."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return False
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    if load < cpus - IDLE_NEEDED:
        return True
    now = cpu_sample()
    if now is None:
        return False
    if since is None or not IDLE_WINDOW <= now[0] - since[0] <= IDLE_RECENT:
        since = now
        time.sleep(IDLE_WINDOW)
        now = cpu_sample()
    every = os.cpu_count() or cpus  # /proc/stat counts every CPU; this process may run on fewer of them
    idle = None if now is None else idle_cpus(since, now, every)
    return idle is not None and idle * cpus / every >= IDLE_NEEDED


def _setting() -> str:
    from .. import _settings

    return str(_settings.STORE_WRITER.value())
