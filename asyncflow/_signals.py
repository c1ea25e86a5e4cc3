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

Python runs a handler only when the main thread next runs Python code. A signal the kernel hands to
another thread, or one that lands just before the main thread enters a blocking call (`time.sleep` in
a task: the race a loaded machine hits), is only noted, and the main thread may block for an hour;
C code that never returns to Python (SQLite waiting on a lock) never runs it at all. Without asyncflow
the default action would have ended the process at once, so asyncflow must not make it wait. While a
root run has opened on the main thread (`watch()`), the C-level handler also writes the signal's number
to a pipe (`signal.set_wakeup_fd`, only if no event loop holds it: trio's and asyncio's loops wake on
their own), and a watcher thread reading it makes sure the handler runs: it interrupts the main thread
with the signal again (`pthread_kill`) for up to `NUDGE_SECONDS`, and if the handler still has not
started, does its work itself, restores the default action through libc and sends the signal again.

SIGINT is left to Python: it raises KeyboardInterrupt, which the engine records as `Crashed`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from . import _fork

SIGNALS = ("SIGTERM", "SIGHUP")
SIGNAL_CLEANUP_SECONDS = 5.0  # the longest the handler spends recording and flushing before the exit
NUDGE_SECONDS = 1.0  # how long the watcher interrupts the main thread before it handles the signal itself

_installed: dict[int, Any] = {}  # signal number -> our handler, where we installed one
_handling = threading.Lock()  # taken by whoever handles the first signal: the handler or the watcher
_main_ident: int | None = None  # the main thread, where `install()` ran

# the watch (see the module's docstring): changed on the main thread only, so no lock
_pipe: tuple[int, int] | None = None  # (read, write): the watcher reads, the C-level handler writes
_armed = False  # our pipe is the wakeup fd now


def install() -> list[str]:
    """Install the handler for each signal whose handler is still the default (main thread only;
    elsewhere this does nothing). Returns the names of the signals now handled by asyncflow."""
    global _main_ident
    if threading.current_thread() is not threading.main_thread():
        return []
    _main_ident = threading.get_ident()
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
    if not _handling.acquire(blocking=False):  # another of our signals, or the watcher got there first
        return
    _handle(signum)


def _handle(signum: int) -> None:
    """Record the open runs Crashed and flush (bounded, on a helper thread: the interrupted main thread
    may hold a lock the store or the log sink needs), then end the process by the signal."""
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
        _installed.pop(signum, None)
        _end_by(signum)


def _end_by(signum: int) -> None:
    """End the process as the default action of `signum` would: restore it and send the signal again."""
    try:
        if threading.get_ident() == _main_ident:
            signal.signal(signum, signal.SIG_DFL)
        else:  # Python lets only the main thread change a handler; the C library lets any thread
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
            libc.signal.restype = ctypes.c_void_p
            libc.signal(signum, None)  # NULL is SIG_DFL
        os.kill(os.getpid(), signum)
    finally:
        if threading.get_ident() != _main_ident:  # the signal did not end the process (it cannot not)
            os._exit(128 + signum)


# -- the watch -------------------------------------------------------------------------------------
def watch() -> None:
    """Called as a root run opens, from any thread (~100 ns once armed): on the main thread, with our
    handlers installed, make sure a signal never waits for the main thread (see the module's docstring)
    from now on. Our handler stays for the life of the process, and so does the watch."""
    global _armed
    if _armed or threading.get_ident() != _main_ident or not _installed or _WATCH_UNSUPPORTED:
        return
    if "trio" in sys.modules:  # trio's loop wakes on signals itself, and warns of another wakeup fd
        return
    try:
        _armed = _take_wakeup_fd()
    except (ValueError, OSError):  # not the main interpreter, or no pipe: the handler alone remains
        _armed = False
    if _armed:
        sys.meta_path.insert(0, _TrioComing)


def _disarm() -> None:
    global _armed
    if _armed:
        _armed = False
        _give_back_wakeup_fd()
        _unhook()


def _unhook() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_TrioComing)


class _TrioComing:
    """On `sys.meta_path` while our pipe is the wakeup fd: `trio.run` on the main thread takes the
    wakeup fd, and warns of a collision if another one is set. Importing trio on the main thread (an
    application's `import trio`, `anyio.run(..., backend="trio")` in a sync task) gives ours back
    first; trio's loop then wakes on the signal itself."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "trio" and threading.get_ident() == _main_ident:
            _disarm()


def _take_wakeup_fd() -> bool:
    global _pipe
    if _pipe is None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # the C-level handler never blocks
        _pipe = (read_end, write_end)
        threading.Thread(target=_watcher, args=(read_end,), name="asyncflow-signal-watch", daemon=True).start()
    previous = signal.set_wakeup_fd(_pipe[1], warn_on_full_buffer=False)
    if previous != -1:  # an event loop's (it wakes on the signal itself) or the application's: theirs
        signal.set_wakeup_fd(previous)
        return False
    return True


def _give_back_wakeup_fd() -> None:
    with contextlib.suppress(ValueError, OSError):
        current = signal.set_wakeup_fd(-1)
        if _pipe is None or current != _pipe[1]:  # someone took it meanwhile (asyncio's add_signal_handler)
            signal.set_wakeup_fd(current)


def _watcher(read_end: int) -> None:
    while True:
        try:
            data = os.read(read_end, 64)
        except OSError:
            return
        if not data:
            return
        for signum in set(data):
            if signum in _installed and signal.getsignal(signum) is _on_signal and not _handling.locked():
                _see_it_handled(signum)


def _see_it_handled(signum: int) -> None:
    """The main thread should run our handler within microseconds; until it does, interrupt it with
    the signal again; past `NUDGE_SECONDS` it runs code that never returns to Python: handle it here."""
    pause, waited = 0.02, 0.0
    while waited < NUDGE_SECONDS:
        time.sleep(pause)
        waited += pause
        if _handling.locked() or _main_ident is None:
            return
        try:
            signal.pthread_kill(_main_ident, signum)
        except (OSError, ValueError):
            break
        pause = min(pause * 2, 0.25)
    if _handling.acquire(blocking=False):
        _handle(signum)


_WATCH_UNSUPPORTED = not hasattr(signal, "pthread_kill") or sys.platform == "win32"


def _before_fork() -> None:
    """A child must never write to our pipe (our watcher would take its signal for ours): a fork from
    the main thread drops the wakeup fd around the fork (from another thread Python allows no change;
    the child drops it first thing)."""
    if _armed and threading.get_ident() == _main_ident:
        _give_back_wakeup_fd()


def _after_fork_in_parent() -> None:
    global _armed
    if _armed and threading.get_ident() == _main_ident:
        try:
            rearmed = _take_wakeup_fd()
        except (ValueError, OSError):
            rearmed = False
        if not rearmed:  # another library took the wakeup fd meanwhile: the watch ends, hook and all
            _armed = False
            _unhook()


def _reset_in_child() -> None:
    global _armed, _pipe, _handling, _main_ident
    if _armed:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        _unhook()
    if _pipe is not None:
        for fd in _pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
    _armed, _pipe = False, None  # the child's next root run arms a watch of its own
    _handling = threading.Lock()
    _main_ident = threading.get_ident() if _installed else None  # the forking thread is the child's main


_fork.register("signals", _reset_in_child, before=_before_fork, after_in_parent=_after_fork_in_parent)
