"""Logging: structlog loggers that write Prefect-shaped console lines (or JSON) and keep run logs.

    09:55:55.412 | INFO    | asyncflow.engine - Created flow run 'great-ammonite' for flow 'get-repo-info'
    09:55:55.499 | INFO    | Flow run 'great-ammonite' - Created task run 'get_url-0' for task 'get_url'

asyncflow never calls `structlog.configure`: an application's own structlog setup is left alone.
`print` capture (`log_prints=True`) is decided per run through a contextvar; outside such a run
`print` behaves exactly as the builtin.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import sys
import time
import traceback
from typing import Any

import structlog

from . import _settings
from ._context import current_run
from ._exceptions import MissingContextError

_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING", "error": "ERROR",
           "critical": "CRITICAL", "exception": "ERROR", "fatal": "CRITICAL", "msg": "INFO"}


class _StderrLogger:
    """Writes rendered lines to whatever `sys.stderr` is at the time of the call."""

    def msg(self, line: str) -> None:
        stream = sys.stderr
        if stream is not None:
            stream.write(line + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _record_to_store(_: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    run_id = event_dict.get("task_run_id") or event_dict.get("flow_run_id")
    if run_id is not None:
        from ._store import get_store

        get_store().record_log(
            flow_run_id=event_dict.get("flow_run_id"),
            task_run_id=event_dict.get("task_run_id"),
            level=_LEVELS.get(method_name, method_name.upper()),
            message=str(event_dict.get("event", "")),
            ts=event_dict.get("ts") or time.time(),
        )
    return event_dict


def _exc_text(event_dict: dict[str, Any]) -> str | None:
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return None
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if exc_info[0] is None:
        return None
    return "".join(traceback.format_exception(*exc_info)).rstrip()


def _render_console(_: Any, method_name: str, event_dict: dict[str, Any]) -> str:
    ts = event_dict.get("ts") or time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
    level = _LEVELS.get(method_name, method_name.upper())
    where = event_dict.get("label") or event_dict.get("logger_name") or "asyncflow"
    line = f"{stamp} | {level:<7} | {where} - {event_dict.get('event', '')}"
    exc = _exc_text(event_dict)
    return f"{line}\n{exc}" if exc else line


def _render_json(_: Any, method_name: str, event_dict: dict[str, Any]) -> str:
    ts = event_dict.pop("ts", None) or time.time()
    out = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
        "level": _LEVELS.get(method_name, method_name.upper()),
    }
    exc = _exc_text(event_dict)
    for key, value in event_dict.items():
        out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
    if exc:
        out["exception"] = exc
    return json.dumps(out, ensure_ascii=False)


_base_logger: Any = None


def _build_base_logger() -> Any:
    level = getattr(logging, _settings.LOGGING_LEVEL.value())
    renderer = _render_json if _settings.LOGGING_FORMAT.value() == "json" else _render_console
    return structlog.wrap_logger(
        _StderrLogger(),
        processors=[_record_to_store, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        context_class=dict,
        cache_logger_on_first_use=True,
    )


def base_logger() -> Any:
    global _base_logger
    if _base_logger is None:
        _base_logger = _build_base_logger()
    return _base_logger


def reset_logging() -> None:
    """Rebuild the loggers from the settings (after the environment changed)."""
    global _base_logger, engine_logger
    _base_logger = None
    engine_logger = None


engine_logger: Any = None


def get_engine_logger() -> Any:
    global engine_logger
    if engine_logger is None:
        engine_logger = base_logger().bind(logger_name="asyncflow.engine")
    return engine_logger


def get_logger(name: str = "asyncflow") -> Any:
    """A structlog logger for asyncflow's own messages (not tied to a run)."""
    return base_logger().bind(logger_name=name)


def get_run_logger() -> Any:
    """The logger of the current flow or task run: its lines carry the run's name and ids."""
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
