"""Stopping sync user code that overran its deadline, and what cannot be stopped.

Python cannot interrupt a call that is blocked in C (a socket read, a lock, a C extension) in another
thread. What it can do is schedule an exception in that thread (`PyThreadState_SetAsyncExc`), raised
at the next bytecode the thread executes: right after the blocking call returns, before the next line
of user code. asyncflow uses it this way:

- the exception (`SyncRunAborted`) is injected only while the thread is inside *this run's* user code:
  injecting and leaving user code take the same lock, so it can never land in other code or another
  run, even in a reused pool thread;
- it is a `BaseException`, so `except Exception:` in user code does not swallow it;
- one daemon thread, the *stopper* (`asyncflow-stopper`), serves every stopped call in the process. It
  stops time-limited calls at their deadline (`ThreadCall`), injects again when user code caught the
  exception (`except BaseException:` or a bare `except:`), 50 ms later so that `finally:` blocks run,
  and reports threads that stay stuck. A call stuck in C still has its first exception pending, so it
  is not injected again (only a slow safety net, at most once every few seconds). With nothing stopped
  and no deadline armed the stopper blocks on its queue, and exits after `_IDLE_EXIT_SECONDS`;
- a thread still inside user code `_STUCK_GRACE_SECONDS` after its stop is *stuck*: it is logged once
  (WARNING, naming the run) and listed by `stuck_threads()`. When its call returns, the pending
  exception fires before the next line and the thread leaves the list.

What this cannot do, honestly:

- A call that never returns keeps its thread for ever (and whatever that thread holds). The run is
  `TimedOut` at its deadline and the caller moves on, but only a process can be killed: for a hard
  stop, the task must run in another process (the process task runner, `ProcessPoolTaskRunner`,
  planned with the scale-out work; until then a subprocess of the user's own).
- C code that holds the GIL (a long `re` match, `sum(range(10**9))`, many extensions) stops every
  other thread, the stopper too, until it returns. The deadline cannot fire on time; the run ends
  `TimedOut` all the same (`ThreadCall` treats a return after the deadline as a timeout and discards
  the result), and the stop lands when the thread first lets another thread run: right after that C
  call, in practice before the next line, because the stopper is then waiting for the GIL with a few
  bytecodes to run. Nothing can guarantee that hand-off: a per-thread profile hook that checks the
  deadline at each C return would, but on Python 3.11 it costs ~0.4 µs per call event (x12 on
  call-heavy code), and a thread with any profile or trace function spins at 100 % CPU at its next
  function call while any thread has an exception pending (the signal is interpreter-wide), which is
  exactly the state of a stuck thread. So asyncflow uses no hook.
- User code that catches `BaseException` and carries on (a bare `except:` in a loop) can keep running:
  each re-injection interrupts what it is doing, and it can swallow each one.
- While a stuck thread has its exception pending, threads that run under a tracer or a profiler
  (coverage.py, debuggers, cProfile) spin at 100 % CPU on Python 3.11 (see above). Stopping never
  leaves that signal behind once no thread is stuck: a pending exception is dropped by letting a
  harmless one fire in its own thread, never by clearing it (clearing left the signal raised for good).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from .. import _fork
from .._context import current_run

R = TypeVar("R")

_set_async_exc: Any = None  # PyThreadState_SetAsyncExc, once _load_ctypes has run


def _load_ctypes() -> None:
    """ctypes is imported when the stopper starts or the first stop is injected (whichever comes first),
    not on asyncflow's import path."""
    global _set_async_exc
    if _set_async_exc is None:
        import ctypes

        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
        _set_async_exc = set_async_exc

_REINJECT_SECONDS = 0.05  # after user code caught the stop: time for its `finally:` blocks, then again
_SAFETY_FIRST_SECONDS = 2.0  # not seen firing: inject again after this (doubling), in case it was missed
_SAFETY_MAX_SECONDS = 30.0
_STUCK_GRACE_SECONDS = 1.0  # still inside user code this long after the stop: stuck (one WARNING)
_IDLE_EXIT_SECONDS = 10.0  # the stopper exits after this long with nothing to watch
_CLOSE_ATTEMPTS = 1000  # a stop firing inside close() is absorbed and close() runs again
_DROP_ATTEMPTS = 100  # calls to let the marker exception fire (it fires at the first)

_now = time.monotonic
_cpu_clock_of = getattr(time, "pthread_getcpuclockid", None)  # (not on Windows)


class SyncRunAborted(BaseException):
    """Raised inside a sync run's thread once it was stopped: the function must not go on."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # An injected stop becomes an instance when it reaches a handler in its own thread: that is how
        # the stopper learns it fired (and may need injecting again) instead of polling stuck threads.
        user = _aborted_in_thread.get(threading.get_ident())
        if user is not None:
            user._fired = True
            _inbox.put(None)  # SimpleQueue.put is reentrant and takes no Python-level lock


class _Dropped(BaseException):
    """Replaces a pending stop when a thread leaves user code; it fires (and is caught) right there."""


def _checkpoint() -> None:
    return None


def _drop_pending() -> None:
    """Cancel whatever exception is pending for this thread. Clearing it (SetAsyncExc with NULL) would
    leave the interpreter-wide 'async exception pending' signal raised for good on Python 3.11, so a
    marker replaces it and fires here, which lowers the signal."""
    for _ in range(_DROP_ATTEMPTS):
        try:
            _set_async_exc(threading.get_ident(), _Dropped)
            for _ in range(_DROP_ATTEMPTS):
                _checkpoint()  # a Python call: the pending exception fires at its first instruction
        except _Dropped:
            return
        except SyncRunAborted:  # a stop fired before the marker was set: set it again
            continue


class StuckThread(NamedTuple):
    """A thread still inside user code after its run was stopped (blocked in C, or catching the stop)."""

    thread: str
    run: str
    stopped_for: float  # seconds since the stop


class UserCode:
    """A sync callable running in some thread, which another thread may stop."""

    __slots__ = ("_lock", "_thread_id", "_thread_name", "_inside", "_fired", "_run", "aborted",
                 "aborted_at", "label", "cpu_clock", "cpu_at_start", "cpu_at_abort", "started_at")

    def __init__(self, label: str | None = None) -> None:
        self._lock = threading.Lock()
        self._thread_id = 0
        self._thread_name = ""
        self._inside = False
        self._fired = False
        self._run: Any = None  # the run context, read only to name the run in reports
        self.aborted = False
        self.aborted_at = 0.0
        self.label = label
        # CPU time of the thread (`measure_cpu()`): how busy it was when a late stop landed
        self.cpu_clock: int | None = None
        self.cpu_at_start = self.cpu_at_abort = self.started_at = 0.0

    def measure_cpu(self) -> None:
        """From the thread that will run the user code, before `run`: keep its CPU clock, so that a stop
        can tell how much CPU the thread used (a thread holding the GIL runs; a sleeping one does not)."""
        self.started_at = _now()
        if _cpu_clock_of is not None:
            try:
                self.cpu_clock = _cpu_clock_of(threading.get_ident())
                self.cpu_at_start = time.clock_gettime(self.cpu_clock)
            except OSError:
                self.cpu_clock = None

    def cpu_after(self, deadline: float) -> float | None:
        """At least how many CPU seconds the thread used between `deadline` and the stop: what it used
        in all, less what it could have used before the deadline (None: not measured)."""
        if self.cpu_clock is None or not self.aborted:
            return None
        return cpu_after(deadline, self.started_at, self.cpu_at_abort - self.cpu_at_start)

    def run(self, fn: Callable[[], R]) -> R:
        self._thread_id = threading.get_ident()
        self._run = current_run.get()
        with self._lock:
            if self.aborted:  # stopped before it started
                raise SyncRunAborted()
            self._inside = True
        try:
            return fn()
        finally:
            self.close()

    def close(self) -> None:
        """Leave user code for good: no injection after this, and a pending one is dropped. Called when
        the function returns, and again by whatever hosts the thread (a stop firing right at the
        boundary of one call is caught by the next layer, which closes again)."""
        for _ in range(_CLOSE_ATTEMPTS):
            try:
                with self._lock:
                    self._inside = False
                if self.aborted and self._thread_id == threading.get_ident():
                    if _aborted_in_thread.get(self._thread_id) is self:
                        del _aborted_in_thread[self._thread_id]
                    _drop_pending()
                    _inbox.put(None)  # the stopper updates its list (and the stuck count) now
                return
            except SyncRunAborted:  # it fired in here: absorb it, and make sure the flag is down
                continue

    def abort(self) -> None:
        """From another thread: stop the user code at its next bytecode; the stopper keeps stopping it."""
        with self._lock:
            if self.aborted:
                return
            self.aborted = True
            self.aborted_at = _now()
            if not self._inside:
                return
            if self.cpu_clock is not None:  # the thread is inside the user code, so alive: its clock is valid
                try:
                    self.cpu_at_abort = time.clock_gettime(self.cpu_clock)
                except OSError:
                    self.cpu_clock = None
            _aborted_in_thread[self._thread_id] = self
            _inject(self._thread_id)
            self._thread_name = _thread_name(self._thread_id)
        _STOPPER.watch(self)

    @property
    def inside(self) -> bool:
        return self._inside

    def describe(self) -> tuple[str, dict[str, Any] | None]:
        """The run's label (`Task run 'x'`) and ids, for log lines about this call."""
        ctx = self._run
        ids: dict[str, Any] | None = None
        label = self.label
        task_run = getattr(ctx, "task_run", None)
        flow_run = getattr(ctx, "flow_run", None)
        if task_run is not None:
            label = label or f"Task run '{task_run.name}'"
            ids = {"task_run_id": str(task_run.id),
                   "flow_run_id": str(task_run.flow_run_id) if task_run.flow_run_id else None}
        elif flow_run is not None:
            label = label or f"Flow run '{flow_run.name}'"
            ids = {"flow_run_id": str(flow_run.id)}
        return label or f"thread {self._thread_name or self._thread_id}", ids


_aborted_in_thread: dict[int, UserCode] = {}  # thread id -> the stopped UserCode it is inside
_inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # wakes the stopper; a UserCode to watch, or None
_counters = {"injections": 0, "wakeups": 0}


def _inject(thread_id: int) -> None:
    _counters["injections"] += 1
    if _set_async_exc is None:
        _load_ctypes()
    _set_async_exc(thread_id, SyncRunAborted)


def _thread_name(thread_id: int) -> str:
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]  # no lock, no iteration
    return thread.name if thread is not None else str(thread_id)


class _Watch:
    __slots__ = ("injected_at", "safety_at", "safety_step", "stuck")

    def __init__(self, injected_at: float) -> None:
        self.injected_at = injected_at
        self.safety_step = _SAFETY_FIRST_SECONDS
        self.safety_at = injected_at + self.safety_step
        self.stuck = False


class _Stopper:
    """The one thread that stops sync code: deadlines, re-injection, stuck threads (see module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _armed, _thread and _stuck (never held while blocking)
        self._armed: dict[UserCode, float] = {}  # time-limited calls -> their deadline (time.monotonic)
        self._target = float("inf")  # when the stopper means to wake for the earliest deadline
        self._watched: dict[UserCode, _Watch] = {}  # stopped calls still inside user code (own thread only)
        self._stuck: dict[UserCode, StuckThread] = {}
        self._thread: threading.Thread | None = None

    # -- from any thread ---------------------------------------------------------------------------
    def arm(self, user: UserCode, deadline: float) -> None:
        with self._lock:
            self._armed[user] = deadline
            wake = deadline < self._target
            if wake:
                self._target = deadline
            self._ensure_thread()
        if wake:
            _inbox.put(None)

    def disarm(self, user: UserCode) -> None:
        with self._lock:
            self._armed.pop(user, None)  # no wake-up: at worst the stopper wakes once for nothing

    def watch(self, user: UserCode) -> None:
        _inbox.put(user)  # before the check: a stopper deciding to exit sees it, or is replaced
        with self._lock:
            self._ensure_thread()

    def stuck(self) -> list[StuckThread]:
        now = _now()
        with self._lock:
            return [entry._replace(stopped_for=now - user.aborted_at)
                    for user, entry in self._stuck.items() if user.inside]

    def watched(self) -> int:
        with self._lock:
            return len(self._watched) + len(self._armed)

    def _ensure_thread(self) -> None:  # with self._lock held
        if self._thread is None:
            _load_ctypes()  # now, not in the stopper at its first stop
            self._thread = threading.Thread(target=self._main, name="asyncflow-stopper", daemon=True)
            self._thread.start()

    def reset_in_child(self) -> None:
        global _inbox
        self.__init__()  # type: ignore[misc]  # the parent's thread does not exist here
        _aborted_in_thread.clear()
        _inbox = queue.SimpleQueue()

    # -- the stopper thread ------------------------------------------------------------------------
    def _main(self) -> None:
        wait = 0.0
        while True:
            idle = False
            try:
                item = _inbox.get(timeout=wait) if wait > 0 else _inbox.get_nowait()
            except queue.Empty:
                item, idle = None, wait > 0
            _counters["wakeups"] += 1
            while True:  # take every message queued so far
                if isinstance(item, UserCode) and item not in self._watched and item.inside:
                    self._watched[item] = _Watch(item.aborted_at)
                try:
                    item = _inbox.get_nowait()
                except queue.Empty:
                    break
            now = _now()
            next_at = min(self._fire_deadlines(now), self._tend(now))
            if next_at < float("inf"):
                wait = max(next_at - _now(), 0.001)
                continue
            with self._lock:
                if self._armed or not _inbox.empty():
                    wait = 0.0
                    continue
                if idle and wait >= _IDLE_EXIT_SECONDS:  # a whole idle period went by: exit
                    self._thread = None
                    return
                self._target = float("inf")
            wait = _IDLE_EXIT_SECONDS  # nothing to do: block until a message comes (no polling)

    def _fire_deadlines(self, now: float) -> float:
        with self._lock:
            due = [user for user, deadline in self._armed.items() if deadline <= now]
            for user in due:
                del self._armed[user]
            self._target = min(self._armed.values(), default=float("inf"))
            next_at = self._target
        for user in due:
            user.abort()  # injects at once if inside; watched from the next round
            if user.inside and user not in self._watched:
                self._watched[user] = _Watch(user.aborted_at)
        return next_at

    def _tend(self, now: float) -> float:
        """Re-inject where the stop was caught, report the stuck, forget the gone; the next time to act."""
        next_at = float("inf")
        for user, watch in list(self._watched.items()):
            if not user.inside:
                del self._watched[user]
                self._released(user, watch, now)
                continue
            if user._fired:  # it fired and user code caught it: again, after the `finally:` grace
                again = watch.injected_at + _REINJECT_SECONDS
                if now >= again:
                    self._reinject(user, watch, now)
                    again = now + _REINJECT_SECONDS
                next_at = min(next_at, again)
            elif now >= watch.safety_at:  # not seen firing: still blocked, or the signal was missed
                self._reinject(user, watch, now)
                watch.safety_step = min(watch.safety_step * 2, _SAFETY_MAX_SECONDS)
                watch.safety_at = now + watch.safety_step
            next_at = min(next_at, watch.safety_at)
            if not watch.stuck:
                stuck_at = user.aborted_at + _STUCK_GRACE_SECONDS
                if now >= stuck_at:
                    self._became_stuck(user, watch, now)
                else:
                    next_at = min(next_at, stuck_at)
        return next_at

    def _reinject(self, user: UserCode, watch: _Watch, now: float) -> None:
        with user._lock:
            if user._inside:
                user._fired = False
                watch.injected_at = now
                _inject(user._thread_id)

    def _became_stuck(self, user: UserCode, watch: _Watch, now: float) -> None:
        watch.stuck = True
        label, ids = user.describe()
        with self._lock:
            self._stuck[user] = StuckThread(user._thread_name, label, now - user.aborted_at)
        _report(logging.WARNING, label, ids, (
            f"Thread {user._thread_name!r} is stuck: still inside the function {now - user.aborted_at:.1f} s "
            "after the run was stopped (blocked in a call that cannot be interrupted, such as C code, or "
            "catching SyncRunAborted). It raises SyncRunAborted when that call returns; a call that never "
            "returns keeps the thread. Only a separate process can be stopped for sure."))

    def _released(self, user: UserCode, watch: _Watch, now: float) -> None:
        if not watch.stuck:
            return
        with self._lock:
            self._stuck.pop(user, None)
        label, ids = user.describe()
        _report(logging.INFO, label, ids,
                f"Thread {user._thread_name!r} left the function {now - user.aborted_at:.1f} s after the run "
                "was stopped (SyncRunAborted was raised when its blocking call returned).")


def _report(level: int, label: str, ids: dict[str, Any] | None, message: str) -> None:
    try:
        from .._logging import log

        log(level, label, message, ids)
    except Exception:
        pass


_STOPPER = _Stopper()
_fork.register("sync stopper", reset_in_child=_STOPPER.reset_in_child)


def stuck_threads() -> list[StuckThread]:
    """Threads still inside user code more than `_STUCK_GRACE_SECONDS` after their run was stopped."""
    return _STOPPER.stuck()


def watched() -> int:
    """How many calls the stopper is watching (armed deadlines and stopped calls still inside)."""
    return _STOPPER.watched()


def injections() -> int:
    """How many times a stop was injected, in total (tests check that the rate is bounded)."""
    return _counters["injections"]


def wakeups() -> int:
    """How many times the stopper thread woke up, in total (tests check that it does not poll)."""
    return _counters["wakeups"]


def cpu_after(deadline: float, started_at: float, cpu_used: float) -> float:
    """A lower bound of the CPU a thread used after `deadline`, from what it used since `started_at`."""
    return cpu_used - max(0.0, deadline - started_at)


class ThreadCall:
    """Run a sync callable in a fresh thread of its own; the stopper stops it at `deadline`.

    The thread is never reused, so a stop that lands late can only hit this call. A call that returns
    (or raises) after its deadline, because it held the GIL so that nothing could stop it on time, is
    `late`: its outcome is discarded and the caller reports a timeout."""

    def __init__(self, fn: Callable[[], Any], context: Any, deadline: float | None = None,
                 label: str | None = None) -> None:
        self.user = UserCode(label)
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.deadline = deadline  # on time.monotonic()
        self.late = False
        self.returned_at = 0.0
        self.cpu_at_return = 0.0  # the thread's own CPU clock (`time.thread_time`) when it returned
        self.cpu_at_start = 0.0
        self._fn = fn
        self._context = context
        self._on_done: Callable[[], None] | None = None

    def start(self, on_done: Callable[[], None] | None = None) -> None:
        self._on_done = on_done
        if self.deadline is not None:
            _STOPPER.arm(self.user, self.deadline)
        threading.Thread(target=self._main, name="asyncflow-timed-task", daemon=True).start()

    def _main(self) -> None:
        try:
            self.cpu_at_start = time.thread_time()
            self.user.measure_cpu()
            self.result = self._context.run(self.user.run, self._fn)
            self._check_late()
        except SyncRunAborted:
            self.error = None  # the caller has long moved on; nothing to report from here
        except BaseException as exc:  # delivered to the waiting caller
            self.error = exc
            self._check_late()
        finally:
            self.user.close()
            if self.deadline is not None:
                _STOPPER.disarm(self.user)
            self._fn = self._context = None  # type: ignore[assignment]  # keep nothing of the call
            self.done.set()
            on_done = self._on_done
            if on_done is not None:
                on_done()

    def _check_late(self) -> None:
        self.returned_at = _now()
        self.cpu_at_return = time.thread_time()
        if self.deadline is not None and self.returned_at >= self.deadline:
            self.late = True
            self.result = self.error = None

    @property
    def timed_out(self) -> bool:
        """The call was stopped, or it finished after its deadline."""
        return self.user.aborted or self.late

    def abandon(self) -> None:
        """The caller stops waiting: stop the user code, and never call back into the caller's loop."""
        self._on_done = None
        self.user.abort()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result
