"""Logging: Prefect-shaped console lines (or JSON), kept as run logs in the store.

`get_run_logger()` returns a structlog logger; its events, and the engine's own lines, go to one
`Sink` that records run logs and writes the line.

    09:55:55.412 | INFO    | asyncflow.engine - Created flow run 'great-ammonite' for flow 'get-repo-info'
    09:55:55.499 | INFO    | Flow run 'great-ammonite' - Created task run 'get_url-0' for task 'get_url'

Every line also goes through the standard library's `logging`, as Prefect's do: run lines to the
`asyncflow.flow_runs` / `asyncflow.task_runs` loggers (with `flow_run_id`, `task_run_id`,
`flow_run_name`, `task_run_name` attributes), engine lines to `asyncflow.engine` and the like, so
`caplog`, handlers and log shippers see them. Only when a handler could receive the record: with none
attached anywhere up the hierarchy (a plain script), no `LogRecord` is made. The `asyncflow` logger's
level is set from ASYNCFLOW_LOGGING_LEVEL unless the application set one. Records of the standard
loggers named in ASYNCFLOW_LOGGING_EXTRA_LOGGERS, emitted inside a run, are kept in that run's logs.

asyncflow never calls `structlog.configure`: an application's own structlog setup is left alone.
`print` capture (`log_prints=True`) is decided per run through a contextvar; outside such a run
`print` behaves exactly as the builtin.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

from . import _fork, _settings, _store
from ._context import current_run
from ._exceptions import MissingContextError

_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING", "error": "ERROR",
           "critical": "CRITICAL", "exception": "ERROR", "fatal": "CRITICAL", "msg": "INFO"}
DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR", logging.CRITICAL: "CRITICAL"}
_PADDED = {level: f"{name:<7}" for level, name in _NAMES.items()}  # as the console line shows them


def _exc_text(exc_info: Any) -> str | None:
    if not exc_info:
        return None
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if exc_info[0] is None:
        return None
    return "".join(traceback.format_exception(*exc_info)).rstrip()


class Sink:
    """Where every asyncflow log line goes: the run store (run logs) and stderr (console or JSON).

    Writing a line is a system call that releases the GIL; with an event loop in another thread that
    cost a GIL hand-over per line (3x the cost of a run, measured). So when stderr goes somewhere of
    its own (a file, a pipe, /dev/null), lines are queued and a small writer thread writes them in
    batches; WARNING and above, the end of every root run, and interpreter exit flush at once. When
    stderr is a terminal or shares its file with stdout, every line is written at once, so log lines
    and prints never appear out of order.
    """

    def __init__(self) -> None:
        self.level = getattr(logging, _settings.LOGGING_LEVEL.value())
        self.json = _settings.LOGGING_FORMAT.value() == "json"
        self._second = (-1, "")  # the second of the last line's time, and it as "%H:%M:%S"
        self._last = (-1, "")  # the millisecond of the last line's time, and that time as text (one
        # attribute: lines are made in several threads)
        self._atexit = False
        self._init_runtime()
        _SINKS.add(self)
        self._tty_stream: Any = None
        self._tty = False
        std = logging.getLogger("asyncflow")
        if std.level == logging.NOTSET:  # as Prefect's `prefect` logger: INFO records reach handlers
            std.setLevel(self.level)
        self._capture = _ExtraLoggers(_settings.LOGGING_EXTRA_LOGGERS.value(), self.level)

    def _init_runtime(self) -> None:
        # Lines waiting for the writer. Producers only append (atomic), and only the holder of `_lock`
        # takes lines off the front, so no line appended during a write is lost (L5).
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()  # held while lines are taken and written: batches stay in order
        self._start_lock = threading.Lock()  # one writer thread per sink (per process)
        self._wake: threading.Event | None = None
        self._armed = False
        self._fork_held = False

    # -- fork: the child gets fresh locks and starts its own writer (B8) ----------------------------
    def _before_fork(self) -> None:
        """Wait (bounded by the fork's budget) until our writer is not halfway through a write: a
        child forked then would inherit the stream's own buffer lock held, and hang on its first line."""
        self._fork_held = self._lock.acquire(timeout=_fork.remaining())

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self._lock.release()

    def _reset_in_child(self) -> None:
        """The parent's writer thread does not exist here and its queued lines are the parent's to
        write: fresh locks, an empty queue, and a writer of our own when the first line is queued."""
        self._init_runtime()

    def _in_order(self, stream: Any) -> bool:
        """Write at once when a person could see lines out of order: stderr is a terminal, or the
        same file as stdout (`2>&1`, CI and container logs). Asked once per stream object."""
        if stream is not self._tty_stream:
            self._tty_stream = stream
            try:
                err = os.fstat(stream.fileno())
                out = os.fstat(sys.stdout.fileno()) if sys.stdout is not None else None
                self._tty = bool(stream.isatty()) or (
                    out is not None and (err.st_dev, err.st_ino) == (out.st_dev, out.st_ino))
            except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
                self._tty = False  # an in-memory stream (captured output): flushed at each root run's end
        return self._tty

    def write(self, line: str, urgent: bool) -> None:
        stream = sys.stderr
        if stream is None:
            return
        self._lines.append(line)
        if urgent or self._in_order(stream):
            with self._lock:
                self._write_all(stream)
            return
        if not self._armed:
            self._armed = True
            wake = self._wake
            if wake is None:
                wake = self._start_writer()
            wake.set()

    def flush(self) -> None:
        if self._lines:
            stream = sys.stderr
            if stream is not None:
                with self._lock:
                    self._write_all(stream)

    def _write_all(self, stream: Any) -> None:
        """Write every queued line (the caller holds `_lock`: it alone takes lines off the queue)."""
        queue = self._lines
        popleft = queue.popleft
        lines = [popleft() for _ in range(len(queue))]
        if lines:
            try:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
            except (ValueError, OSError):  # a closed stream (interpreter shutdown, captured output)
                pass

    def _start_writer(self) -> threading.Event:
        """Start the writer thread once (two threads may queue their first line at the same time)."""
        with self._start_lock:
            wake = self._wake
            if wake is None:
                wake = threading.Event()
                threading.Thread(target=self._writer, args=(wake,), name="asyncflow-log-writer",
                                 daemon=True).start()
                self._wake = wake
                if not self._atexit:
                    self._atexit = True
                    atexit.register(self.flush)
            return wake

    def _writer(self, wake: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            time.sleep(0.005)  # let a burst of lines gather into one write
            self._armed = False
            self.flush()

    def _time(self, ts: float) -> str:
        milli = int(ts * 1000)  # the text is a function of the millisecond alone
        last = self._last
        if milli == last[0]:  # lines come in bursts: many in the same millisecond
            return last[1]
        second, fraction = divmod(milli, 1000)
        cached = self._second
        if second != cached[0]:  # one strftime per second, not per line
            cached = self._second = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        text = f"{cached[1]}.{fraction:03d}"
        self._last = (milli, text)
        return text

    def emit(self, level: int, where: str, message: str, flow_run_id: str | None = None,
             task_run_id: str | None = None, exc_info: Any = None, extra: Mapping[str, Any] | None = None,
             ts: float | None = None, exc_text: str | None = None, forward: bool = True,
             line_of: Any = None) -> None:
        """`line_of`: (run id, code, flow run id) of an engine line that says what that run's state
        recorded just before says (its `ts` is the state's): the store derives it from the state
        (`_store/lines.py`)."""
        if (flow_run_id is not None or task_run_id is not None) and _run_logs_disabled.get():
            return
        captured = _captured.get()
        if captured is not None:  # in a worker process: the line travels back to the flow's process
            if level >= captured[1]:
                captured[0].append((level, where, message, flow_run_id, task_run_id, time.time(),
                                    _exc_text(exc_info)))
            return
        if level < self.level:
            return
        if ts is None:
            ts = time.time()
        levelname = _NAMES.get(level, "INFO")
        exc = exc_text if exc_text is not None else _exc_text(exc_info) if exc_info else None
        if flow_run_id is not None or task_run_id is not None:  # the stored line keeps the traceback (the UI shows it)
            if line_of is None or exc:
                _store.get_store().record_log(flow_run_id=flow_run_id, task_run_id=task_run_id, level=levelname,
                                              message=f"{message}\n{exc}" if exc else message, ts=ts)
            else:
                run_id, code, flow_id = line_of  # (positional: a call with keywords costs ~1 µs more)
                _store.get_store().record_state_line(run_id, code, flow_id, flow_run_id, task_run_id, levelname,
                                                     message, ts)
        if forward:  # to the standard library's loggers, if a handler is attached up their hierarchy
            std = _TASK_RUNS if task_run_id is not None else _FLOW_RUNS if flow_run_id is not None else None
            if std is None or std.handlers or _ASYNCFLOW.handlers or _ROOT.handlers:  # (cheap, for run lines)
                _to_stdlib(std, level, where, message, flow_run_id, task_run_id, exc_info, exc, extra, ts)
        if self.json:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
            record: dict[str, Any] = {"timestamp": stamp, "level": levelname, "logger": where, "event": message,
                                      "flow_run_id": flow_run_id, "task_run_id": task_run_id}
            if extra:
                record.update({k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                               for k, v in extra.items()})
            if exc:
                record["exception"] = exc
            line = json.dumps(record, ensure_ascii=False)
        else:
            line = f"{self._time(ts)} | {_PADDED.get(level) or f'{levelname:<7}'} | {where} - {message}"
            if exc:
                line = f"{line}\n{exc}"
        self.write(line, level >= WARNING)


# -- the standard library's logging ----------------------------------------------------------------
_ASYNCFLOW = logging.getLogger("asyncflow")
_FLOW_RUNS = logging.getLogger("asyncflow.flow_runs")
_TASK_RUNS = logging.getLogger("asyncflow.task_runs")
_ROOT = logging.getLogger()


def _may_handle(logger: logging.Logger, level: int) -> bool:
    """Could a handler receive a record of `level` from `logger`? (Cheap: a cached level check, then
    the handler lists up the hierarchy; Python's last-resort handler does not count.)"""
    if not logger.isEnabledFor(level):
        return False
    current: Any = logger
    while current is not None:
        if current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


_loggers: dict[str, logging.Logger] = {}


def _named_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` without its module-wide lock for names seen before (a logger, once
    made, is the same object for the life of the process)."""
    logger = _loggers.get(name)
    if logger is None:
        logger = logging.getLogger(name)
        if len(_loggers) < 1000:
            _loggers[name] = logger
    return logger


def _to_stdlib(logger: logging.Logger | None, level: int, where: str, message: str, flow_run_id: str | None,
               task_run_id: str | None, exc_info: Any, exc_text: str | None, extra: Mapping[str, Any] | None,
               ts: float) -> None:
    if logger is None:
        if where.startswith("Task run '"):
            logger = _TASK_RUNS
        elif where.startswith("Flow run '"):
            logger = _FLOW_RUNS
        else:
            logger = _named_logger(where or "asyncflow")
    if not _may_handle(logger, level):
        return
    fields: dict[str, Any] = dict(extra) if extra else {}
    fields["flow_run_id"] = flow_run_id
    fields["task_run_id"] = task_run_id
    fields["asyncflow_line"] = True  # made by asyncflow (the extra-loggers capture leaves it alone)
    if where.endswith("'") and where.startswith(("Task run '", "Flow run '")):
        fields["task_run_name" if where[0] == "T" else "flow_run_name"] = where[10:-1]
    ctx = current_run.get()
    if ctx is not None:
        fields.update(_context_names(ctx, flow_run_id, task_run_id))
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not exc_info:
        exc_info = None
    record = logger.makeRecord(logger.name, level, "asyncflow", 0, message, (), exc_info, extra=None)
    for key, value in fields.items():
        record.__dict__.setdefault(key, value)
    if exc_info is None and exc_text:
        record.exc_text = exc_text  # a line replayed from a worker process: its traceback as text
    record.created = ts
    record.msecs = (ts - int(ts)) * 1000
    logger.handle(record)


def _context_names(ctx: Any, flow_run_id: str | None, task_run_id: str | None) -> dict[str, Any]:
    """The names Prefect's run loggers attach (flow_name, flow_run_name, task_name, task_run_name), from
    the current run's context when the line is about that run (or its flow run)."""
    names: dict[str, Any] = {}
    task_run = getattr(ctx, "task_run", None)
    if task_run is not None and task_run_id is not None and str(task_run.id) == task_run_id:
        names["task_name"] = task_run.task_name
        names["task_run_name"] = task_run.name
    flow_ctx = ctx.flow_context
    if flow_ctx is not None and flow_run_id is not None and str(flow_ctx.flow_run.id) == flow_run_id:
        names["flow_name"] = flow_ctx.flow.name
        names["flow_run_name"] = flow_ctx.flow_run.name
    return names


class _RunCapture(logging.Handler):
    """On an extra logger: a record emitted inside a run goes into that run's logs (and asyncflow's
    console line, with the run's name). Outside a run it is left to the logger's other handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "asyncflow_line", False):
            return
        ctx = current_run.get()
        if ctx is None:
            return
        try:
            task_run = getattr(ctx, "task_run", None)
            if task_run is not None:
                label = f"Task run '{task_run.name}'"
                task_run_id: str | None = str(task_run.id)
                flow_run_id = str(task_run.flow_run_id) if task_run.flow_run_id else None
            else:
                flow_ctx = ctx.flow_context
                if flow_ctx is None:
                    return
                label, task_run_id, flow_run_id = flow_ctx.label, None, flow_ctx.ids["flow_run_id"]
            sink().emit(record.levelno, label, record.getMessage(), flow_run_id, task_run_id,
                        exc_info=record.exc_info, ts=record.created, forward=False)
        except Exception:
            self.handleError(record)


class _ExtraLoggers:
    """The capture handler on each logger named in ASYNCFLOW_LOGGING_EXTRA_LOGGERS (removed again
    when the settings are reloaded)."""

    def __init__(self, names: tuple[str, ...], level: int) -> None:
        self.loggers = [logging.getLogger(name) for name in names]
        self.handler = _RunCapture()
        for logger in self.loggers:
            if logger.level == logging.NOTSET:
                logger.setLevel(level)
            logger.addHandler(self.handler)

    def remove(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self.handler)


_sink: Sink | None = None
_captured: ContextVar[tuple[list[Any], int] | None] = ContextVar("asyncflow_captured_logs", default=None)


class capture_records:
    """In a worker process: the lines emitted inside the block (at `level` and above) are appended to
    `records` as tuples instead of being written or stored; `replay` emits them in the flow's process."""

    def __init__(self, records: list[Any], level: int) -> None:
        self._value = (records, level)
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _captured.set(self._value)

    def __exit__(self, *exc: Any) -> None:
        _captured.reset(self._token)


def replay(records: Any) -> None:
    """Emit log records that came back from a worker, with their own timestamps, into the run logs."""
    target = sink()
    for level, where, message, flow_run_id, task_run_id, ts, exc_text in records:
        target.emit(level, where, message, flow_run_id, task_run_id, ts=ts, exc_text=exc_text)


def sink() -> Sink:
    global _sink
    if _sink is None:
        _sink = Sink()
    return _sink


_SINKS: weakref.WeakSet[Sink] = weakref.WeakSet()  # every sink (an old one may still have queued lines)


def _sink_before_fork() -> None:
    for each in list(_SINKS):
        each._before_fork()


def _sink_after_fork_in_parent() -> None:
    for each in list(_SINKS):
        each._after_fork_in_parent()


def _sink_reset_in_child() -> None:
    for each in list(_SINKS):
        each._reset_in_child()


_fork.register("log sink", reset_in_child=_sink_reset_in_child, before=_sink_before_fork,
               after_in_parent=_sink_after_fork_in_parent)


def flush() -> None:
    """Write out queued log lines (the engine calls this when a root run ends)."""
    if _sink is not None:
        _sink.flush()


def log(level: int, where: str, message: str, ids: dict[str, Any] | None = None, exc_info: Any = None) -> None:
    """The engine's own lines: `where` is `Flow run 'x'`, `Task run 'y'` or a logger name."""
    target = _sink if _sink is not None else sink()
    if level >= target.level:
        if ids:
            target.emit(level, where, message, ids.get("flow_run_id"), ids.get("task_run_id"), exc_info)
        else:
            target.emit(level, where, message, None, None, exc_info)


def state_line(level: int, where: str, message: str, ids: dict[str, Any], run_id: Any, code: int, flow_id: Any,
               ts: float) -> None:
    """An engine line that says what the state of `run_id` (in the flow run `flow_id`, a UUID or None)
    just recorded says, at that state's time `ts`: on the console as any line, in the store derived from
    the state (`_store/lines.py`)."""
    target = _sink if _sink is not None else sink()
    if level >= target.level:
        target.emit(level, where, message, ids.get("flow_run_id"), ids.get("task_run_id"), None, None, ts,
                    line_of=(run_id, code, flow_id))


def _to_sink(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog's last processor: hand the event to the sink (and stop structlog there)."""
    level = getattr(logging, _LEVELS.get(method_name, "INFO"))
    message = str(event_dict.pop("event", ""))
    where = event_dict.pop("label", None) or event_dict.pop("logger_name", "asyncflow")
    exc_info = event_dict.pop("exc_info", None)
    if method_name == "exception" and exc_info is None:
        exc_info = True
    sink().emit(level, where, message, event_dict.pop("flow_run_id", None), event_dict.pop("task_run_id", None),
                exc_info, event_dict)
    import structlog

    raise structlog.DropEvent


class _NullLogger:
    def msg(self, *args: Any, **kwargs: Any) -> None:  # never reached: _to_sink drops every event
        pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_base_logger: Any = None


def base_logger() -> Any:
    """The structlog logger behind `get_run_logger()` and `get_logger()`."""
    global _base_logger
    if _base_logger is None:
        import structlog  # imported on first use: the engine's own lines do not need it

        _base_logger = structlog.wrap_logger(
            _NullLogger(),
            processors=[_to_sink],
            wrapper_class=structlog.make_filtering_bound_logger(sink().level),
            context_class=dict,
            cache_logger_on_first_use=True,
        )
    return _base_logger


def reset_logging() -> None:
    """Rebuild the sink and loggers from the settings (after the environment changed)."""
    global _base_logger, _sink
    if _sink is not None:
        _sink.flush()
        _sink._capture.remove()
    _base_logger = None
    _sink = None


def get_logger(name: str = "asyncflow") -> Any:
    """A structlog logger for messages not tied to a run (lines show `name`)."""
    return base_logger().bind(logger_name=name)


_run_logs_disabled: ContextVar[bool] = ContextVar("asyncflow_run_logs_disabled", default=False)


@contextlib.contextmanager
def disable_run_logger() -> Iterator[None]:
    """In the block, run log lines go nowhere, and `get_run_logger()` outside a run returns a logger
    that drops them instead of raising: for calling a task's or flow's `.fn` in a unit test."""
    token = _run_logs_disabled.set(True)
    try:
        yield
    finally:
        _run_logs_disabled.reset(token)


class _DroppingLogger:
    """What `get_run_logger()` returns under `disable_run_logger()`: every call does nothing."""

    def _drop(self, *args: Any, **kwargs: Any) -> None:
        pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg = _drop

    def bind(self, **kwargs: Any) -> _DroppingLogger:
        return self


def get_run_logger() -> Any:
    """The logger of the current flow or task run: its lines carry the run's name and ids."""
    if _run_logs_disabled.get():
        return _DroppingLogger()
    ctx = current_run.get()
    if ctx is None:
        raise MissingContextError(
            "get_run_logger() was called outside of a flow or task run. Call it inside a function "
            "decorated with @flow or @task, or use asyncflow.logging.get_logger() elsewhere."
        )
    return ctx.logger


# -- print capture -------------------------------------------------------------------------------
_original_print = builtins.print


def _print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
           flush: bool = False) -> None:
    ctx = current_run.get()
    if ctx is not None and ctx.log_prints and (file is None or file is sys.stdout):
        buffer = io.StringIO()
        _original_print(*args, sep=sep, end="", file=buffer)
        ctx.logger.info(buffer.getvalue())
        return
    _original_print(*args, sep=sep, end=end, file=file, flush=flush)


_print.__wrapped__ = _original_print  # type: ignore[attr-defined]


def ensure_print_capture() -> None:
    """Route `print` through asyncflow; it still prints normally unless the current run logs prints."""
    if builtins.print is not _print:
        builtins.print = _print
