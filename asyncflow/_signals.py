"""SIGTERM and SIGHUP: what Docker, systemd and Kubernetes send to stop a process.

By default either signal ends a Python process at once: no `finally`, no `atexit`, so the runs it had
open would stay `Running` in the store for ever. asyncflow installs a handler for each, and only
where the application left the default (`SIG_DFL`): an application's own handler (or `SIG_IGN`) is
never replaced, and one the application installs later replaces ours. The handler is installed from
the main thread (Python allows no other), when the first run opens there (see `_engine/open_runs.py`).

On the signal, the handler

1. records every open run `Crashed` ("The process received SIGTERM while the run was still open."),
2. flushes the store (both bounded by `SIGNAL_CLEANUP_SECONDS`, on a helper thread: the interrupted
   main thread may hold a lock the store or the log sink needs),
3. restores `SIG_DFL` and sends the signal to the process again, so it ends exactly as it would have
   without asyncflow (exit status -SIGTERM / 128+15).

SIGINT is left to Python: it raises KeyboardInterrupt, which the engine records as `Crashed`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

SIGNALS = ("SIGTERM", "SIGHUP")
SIGNAL_CLEANUP_SECONDS = 5.0  # the longest the handler spends recording and flushing before the exit

_installed: dict[int, Any] = {}  # signal number -> our handler, where we installed one
_handling = False


def install() -> list[str]:
    """Install the handler for each signal whose handler is still the default (main thread only;
    elsewhere this does nothing). Returns the names of the signals now handled by asyncflow."""
    if threading.current_thread() is not threading.main_thread():
        return []
    handled = []
    for name in SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:  # SIGHUP does not exist on Windows
            continue
        try:
            current = signal.getsignal(signum)
            if current is signal.SIG_DFL:
                signal.signal(signum, _on_signal)
                _installed[signum] = _on_signal
                current = _on_signal
        except (ValueError, OSError):  # not the main interpreter, or the platform refuses
            continue
        if current is _on_signal:
            handled.append(name)
    return handled


def _end_open_runs(message: str) -> None:
    try:
        from ._engine.open_runs import end_open_runs

        end_open_runs(message)
    except BaseException as exc:  # the exit goes on whatever happens here
        with contextlib.suppress(Exception):
            sys.stderr.write(f"asyncflow: could not record the open runs as Crashed: {type(exc).__name__}: {exc}\n")


def _on_signal(signum: int, frame: Any) -> None:
    global _handling
    if _handling:  # another of our signals while the first is handled: the first one ends the process
        return
    _handling = True
    try:
        name = signal.Signals(signum).name
        message = f"The process received {name} while the run was still open."
        try:
            helper = threading.Thread(target=_end_open_runs, args=(message,), name="asyncflow-signal",
                                      daemon=True)
            helper.start()
        except RuntimeError:  # no new threads (interpreter shutting down): do it here
            _end_open_runs(message)
        else:
            helper.join(SIGNAL_CLEANUP_SECONDS)
    finally:
        # behave as the default handler would: the process ends by this signal
        signal.signal(signum, signal.SIG_DFL)
        _installed.pop(signum, None)
        os.kill(os.getpid(), signum)
