"""The SQLite store's writer process: each batch's fold and SQL run off this process's GIL.

The writer thread (writer.py) stays the one consumer of the queue: ordering, batching, flush marks,
isolation of bad records and degrading to memory are its work as before. What changes is where a batch
is written: the thread ships it (pickled) through a pipe to a child process, which runs the same fold
and the same SQL on its own connection (writer_child.py), and waits for the answer (a blocking read:
the GIL is free meanwhile). An error comes back as the exception it was (its class, message and SQLite
code), so the thread classifies it as it would its own.

- Started late: a process writes in its thread first. With `ASYNCFLOW_STORE_WRITER=auto` (the default)
  the child is started once the thread has written START_AFTER records, in the background (the thread
  goes on writing until the child is ready), and takes over between two batches: a short script never
  pays a Python start. `process` starts it after the first batch and waits for it; `thread` never does.
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

import builtins
import contextlib
import os
import sqlite3
import sys
import uuid
from typing import Any

# pickle, select and subprocess are imported when a writer process starts: a short script never pays for them
from .base import StoreError
from .writer import report

START_AFTER = 4000  # records the thread writes before `auto` starts the writer process
ANSWER_SECONDS = 120.0  # a batch the child has not answered by then: the child is stopped (as if it died)
READY_SECONDS = 30.0  # `process`: how long the first batch waits for the child to start
_ABANDONED: list[Any] = []  # a forked child's copies of its parent's writer processes (never waited for)


class ChildGone(Exception):
    """The writer process ended (or stopped answering) before it answered."""


class Unshippable(Exception):
    """A batch holds a value that does not pickle: the thread writes it itself."""


def send(fd: int, message: Any) -> None:
    """One message: its length (4 bytes) and its pickle."""
    import pickle

    send_bytes(fd, pickle.dumps(message, 5))


def send_bytes(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(4, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd: int) -> Any:
    """The next message, or None at the end of the input."""
    import pickle

    data = receive_bytes(fd)
    return None if data is None else pickle.loads(data)


def receive_bytes(fd: int) -> bytes | None:
    head = _read_exactly(fd, 4)
    return None if head is None else _read_exactly(fd, int.from_bytes(head, "little"))


def readable(fd: int, timeout: float) -> bool:
    """Has `fd` something to read (or its end) within `timeout` seconds? (poll: any fd number)"""
    import select

    if not hasattr(select, "poll"):
        return bool(select.select([fd], [], [], timeout)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def error_info(exc: BaseException) -> tuple[Any, ...]:
    """What the parent needs to make the exception again (`rebuild`)."""
    return (type(exc).__module__, type(exc).__name__, str(exc), getattr(exc, "errno", None),
            getattr(exc, "strerror", None), getattr(exc, "sqlite_errorcode", None),
            getattr(exc, "sqlite_errorname", None))


def rebuild(info: tuple[Any, ...]) -> Exception:
    """The child's exception, as the writer thread's `_classify`, `_advice` and warnings read it."""
    module, name, text, errno, strerror, code, code_name = info
    if module == "sqlite3":
        exc: Any = getattr(sqlite3, name, sqlite3.DatabaseError)(text)
        exc.sqlite_errorcode, exc.sqlite_errorname = code, code_name
        return exc  # type: ignore[no-any-return]
    if errno is not None and strerror is not None:
        return OSError(errno, strerror)
    if name in ("StoreError", "StoreNotFoundError"):
        return StoreError(text)
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        with contextlib.suppress(Exception):
            return builtin(text)
    return RuntimeError(f"{name}: {text}")


class WriterChild:
    """One writer process and the two ends of its pipes (used under the store's write lock only)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import subprocess

        self.token = f"writer {uuid.uuid4().hex}"  # its row in `counters`: the last batch it committed
        self.seq = 0  # the number of the last batch shipped
        self.ready = False
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # the package without its __init__ (the engine and its imports: half the start): the writer needs
        # the store's modules only, from this process's copy of asyncflow
        code = (f"import sys, types; package = types.ModuleType('asyncflow'); package.__path__ = [{package!r}]; "
                f"sys.modules['asyncflow'] = package; from asyncflow._store.writer_child import main; main()")
        group: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0, close_fds=True, **group)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        with contextlib.suppress(OSError):  # it died already: the answer says so
            send(self._in, ("start", 0, {**config, "token": self.token}))

    def poll(self, timeout: float = 0.0) -> bool | None:
        """Is it ready? True once it is, False if it could not start, None if not yet (after `timeout`)."""
        if self.ready:
            return True
        if not readable(self._out, timeout):
            return None
        try:
            answer = receive(self._out)
        except OSError:
            answer = None
        if answer is None or answer[1] is not None:
            self.failure = "it ended" if answer is None else _text(answer[1])
            return False
        self.ready = True
        return True

    failure = ""

    def call(self, op: str, payload: Any = None) -> None:
        """Ship one message (`batch`: written in one transaction numbered `seq`); raises the child's error
        as it was, or ChildGone."""
        import pickle

        self.seq += 1
        try:
            data = pickle.dumps((op, self.seq, payload), 5)
        except Exception as exc:
            raise Unshippable from exc
        try:
            send_bytes(self._in, data)
            if not readable(self._out, ANSWER_SECONDS):
                self.proc.kill()
            answer = receive(self._out)
        except Exception:  # a broken pipe, a garbled answer: as if it died (it is killed)
            answer = None
        if answer is None:
            raise ChildGone
        if answer[0] == "unpickled":  # the writer process could not read the batch back
            raise Unshippable
        if answer[0] != "ok":
            raise rebuild(answer[1])

    def close(self, timeout: float = 5.0) -> None:
        """End its input: it deletes its `counters` row and exits (killed if it was still starting)."""
        if not self.ready:
            with contextlib.suppress(OSError):
                self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        import subprocess

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1)

    def reap(self) -> int | None:
        """After it died: its exit code (it is killed first if it still runs, stuck)."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        import subprocess

        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def abandon(self) -> None:
        """In a forked child: close this process's copies of the pipes, never wait for the process."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        _ABANDONED.append(self.proc)


def _text(info: tuple[Any, ...]) -> str:
    return f"{info[1]}: {info[2]}"


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

    def _init_runtime(self) -> None:
        super()._init_runtime()  # type: ignore[misc]
        self._child: WriterChild | None = None
        self._no_child = False  # this process writes in its thread (decided, or the child died or never started)
        self._written = 0  # records written in the thread (`auto` starts the child after START_AFTER)
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

    def _starting(self, child: WriterChild | None) -> WriterChild | None:
        """The writer process if it is ready now; starts it when it is time."""
        if self._no_child or self._owner is None or self._closed:  # (at exit: records after close)
            return None
        if child is None:
            mode = self.writer_mode or _setting()
            if mode == "auto" and self._written < START_AFTER:
                return None
            if mode == "thread" or not sys.executable or (mode == "auto" and not _idle_cpu()):
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
                return None  # it starts in the background: the thread writes meanwhile
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


def _idle_cpu() -> bool:
    """Is there a CPU for a writer process? It gains the time of a CPU this process does not use, and costs
    more CPU in all than the thread (each batch pickled here and unpickled there): on one CPU, or on a
    machine whose CPUs are busy (the 1-minute load average within half a CPU of their number, measured
    before this process's own load has moved it much), the thread is faster."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return cpus >= 2 and load < cpus - 0.5


def _setting() -> str:
    from .. import _settings

    return str(_settings.STORE_WRITER.value())
