"""Stopping sync user code that overran its deadline.

Python cannot interrupt a blocking call in another thread. What it can do is schedule an exception in
that thread (`PyThreadState_SetAsyncExc`), raised at the next bytecode the thread executes: right
after the blocking call returns, before the next line of user code. asyncflow uses it this way:

- the caller stops waiting at the deadline and the run ends `TimedOut` at once;
- the exception is injected only while the thread is inside *this run's* user code: injecting and
  leaving user code take the same lock, so it can never land in other code or another run, even in a
  reused thread;
- it is a `BaseException` (`except Exception:` in user code does not swallow it), and it is injected
  again while the thread stays in user code (a bare `except:` does not keep it alive either);
- a call that never returns keeps its thread forever: that thread is abandoned, and says so in logs.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_REINJECT_SECONDS = 0.05


_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


def _clear_pending(thread_id: int) -> None:
    """Drop an injected exception that has not fired yet (a NULL exception clears it)."""
    _clear_async_exc(thread_id, None)


class SyncRunAborted(BaseException):
    """Raised inside a sync task's thread after its deadline: the function must not go on."""


class UserCode:
    """A sync callable running in some thread, which another thread may stop."""

    __slots__ = ("_lock", "_thread_id", "_inside", "aborted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id = 0
        self._inside = False
        self.aborted = False

    def run(self, fn: Callable[[], R]) -> R:
        self._thread_id = threading.get_ident()
        with self._lock:
            if self.aborted:  # stopped before it started
                raise SyncRunAborted()
            self._inside = True
        try:
            return fn()
        finally:
            self.close()

    def close(self) -> None:
        """Leave user code for good: no injection after this, and a pending one is cleared. Called when
        the function returns, and again by whatever hosts the thread (an abort firing right at the
        boundary of one call is caught by the next layer, which closes again)."""
        for _ in range(1000):
            try:
                with self._lock:
                    self._inside = False
                    if self._thread_id == threading.get_ident():
                        _clear_pending(self._thread_id)
                return
            except SyncRunAborted:  # it fired in here: absorb it, and make sure the flag is down
                continue

    def abort(self) -> None:
        """From another thread: stop the user code at its next bytecode, and keep stopping it."""
        with self._lock:
            self.aborted = True
            if not self._inside:
                return
            _set_async_exc(self._thread_id, SyncRunAborted)
        threading.Thread(target=self._reinject, name="asyncflow-abort", daemon=True).start()

    def _reinject(self) -> None:
        stop = threading.Event()
        while not stop.wait(_REINJECT_SECONDS):
            with self._lock:
                if not self._inside:
                    return
                _set_async_exc(self._thread_id, SyncRunAborted)

    @property
    def inside(self) -> bool:
        return self._inside


class ThreadCall:
    """Run a sync callable in a fresh thread of its own; wait for it with a deadline."""

    def __init__(self, fn: Callable[[], Any], context: Any) -> None:
        self.user = UserCode()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        self._context = context
        self._on_done: Callable[[], None] | None = None

    def start(self, on_done: Callable[[], None] | None = None) -> None:
        self._on_done = on_done
        threading.Thread(target=self._main, name="asyncflow-timed-task", daemon=True).start()

    def _main(self) -> None:
        try:
            self.result = self._context.run(self.user.run, self._fn)
        except SyncRunAborted:
            self.error = None  # the caller has long moved on; nothing to report from here
        except BaseException as exc:  # delivered to the waiting caller
            self.error = exc
        finally:
            self.user.close()
            self.done.set()
            on_done = self._on_done
            if on_done is not None:
                on_done()

    def abandon(self) -> None:
        """The caller stops waiting: stop the user code, and never call back into the caller's loop."""
        self._on_done = None
        self.user.abort()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result
