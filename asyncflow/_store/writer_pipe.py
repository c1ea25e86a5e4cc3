"""The writer process's pipe (process_writer.py): the process, its messages (a length and a pickle), and
its errors made again on this side as the exceptions they were.

Messages to the writer process (writer_child.py): ("start", 0, config), answered ("ready", None or the
error); ("batch", n, records) and ("forget", n, None), answered ("ok", None), ("error", the error) or
("unpickled", None) (it could not read the message back: the thread writes that batch).

A batch travels in the form fold.py reads when `wired`: each run id as its int, a state's type as its
name, its details as their JSON (None when they carry nothing to store). The pickler makes that form
(`WIRE`, once per distinct object: a run's id and details are shared by its records), and the child
reads back plain values in C, where UUIDs, an Enum and StateDetails would each run Python code to be
made again (~20 µs per task run).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import sqlite3
import sys
import uuid
from typing import Any

from .base import StoreError

# pickle, select and subprocess are imported when a writer process starts: a short script never pays for them

ANSWER_SECONDS = 120.0  # a batch the child has not answered by then: the child is stopped (as if it died)
_ABANDONED: list[Any] = []  # a forked child's copies of its parent's writer processes (never waited for)


class ChildGone(Exception):
    """The writer process ended (or stopped answering) before it answered."""


class Unshippable(Exception):
    """A batch holds a value that does not pickle: the thread writes it itself."""


def send(fd: int, message: Any) -> None:
    """One message: its length (4 bytes) and its pickle."""
    import pickle

    send_bytes(fd, pickle.dumps(message, 5))


def dumps_wired(message: Any) -> bytes:
    """`message` pickled with its batch's records in the wire form (see the module's docstring)."""
    import io
    import pickle

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 5)
    pickler.dispatch_table = _wire_reducers()
    pickler.dump(message)
    return buffer.getvalue()


@functools.cache
def _wire_reducers() -> dict[Any, Any]:
    import copyreg

    from .._states import StateDetails, StateType
    from .records import details_json

    def details(value: StateDetails) -> tuple[Any, ...]:
        text = details_json(value)
        return (type(None), ()) if text is None else (str, (text,))  # (NoneType() is None)

    return {**copyreg.dispatch_table, uuid.UUID: lambda value: (int, (value.int,)),
            StateType: lambda value: (str, (value._value_,)), StateDetails: details}


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

    def readable(self, timeout: float) -> bool:
        """Has it answered within `timeout` seconds? (Reads nothing: safe outside the write lock.)"""
        try:
            return readable(self._out, timeout)
        except (OSError, ValueError):  # its pipe closed meanwhile
            return True

    def call(self, op: str, payload: Any = None) -> None:
        """Ship one message (`batch`: written in one transaction numbered `seq`); raises the child's error
        as it was, or ChildGone."""
        self.seq += 1
        try:
            data = dumps_wired((op, self.seq, payload))
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
        """End its input: it deletes its `counters` row and exits (killed if it was still starting, or
        if it has not exited after `timeout`)."""
        if self._end(kill=not self.ready, timeout=timeout) is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self._end(kill=False, timeout=1)

    def reap(self) -> int | None:
        """After it died: its exit code (it is killed first if it still runs, stuck)."""
        return self._end(kill=True, timeout=5)

    def _end(self, kill: bool, timeout: float) -> int | None:
        """Kill it if asked, close this process's ends of the pipes, wait up to `timeout`: its exit code,
        or None if it still runs."""
        if kill:
            with contextlib.suppress(OSError):
                self.proc.kill()
        self._close_pipes()
        import subprocess

        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def abandon(self) -> None:
        """In a forked child: close this process's copies of the pipes, never wait for the process."""
        self._close_pipes()
        _ABANDONED.append(self.proc)

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]


def _text(info: tuple[Any, ...]) -> str:
    return f"{info[1]}: {info[2]}"
