"""Threads for sync task runs.

`ThreadPool` is one process-wide elastic pool of daemon threads (idle threads exit after a while).
Each flow run's runner has a `ThreadDispatcher` that admits at most `limit` of its runs into the pool
at once; the others wait in its queue, and a thread that finishes a run goes straight on with the next
queued one (no hand-off). A thread only counts against the limit while it runs user code: when the
user code blocks on another run (`future.result()`), its slot is lent to the queue until the wait ends,
so nested submissions can never deadlock a bounded runner.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import _fork

if TYPE_CHECKING:
    from .._protocols import ThreadSlotHolder

_IDLE_SECONDS = 30.0
_threads = threading.local()  # which dispatcher slot this OS thread holds (resource accounting only)


class _Idle:
    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Callable[[], None] | None = None
        self.wake = threading.Event()


class ThreadPool:
    """Hands each job straight to an idle thread (or a new one): no shared queue, no lost wake-ups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.job = job
                worker.wake.set()
                return
        threading.Thread(target=self._worker, args=(job,), name="asyncflow-worker", daemon=True).start()

    def _worker(self, job: Callable[[], None]) -> None:
        me = _Idle()
        while True:
            job()
            with self._lock:
                me.job = None
                me.wake.clear()
                self._idle.append(me)
            if not me.wake.wait(_IDLE_SECONDS):
                with self._lock:
                    if me.job is None:  # nobody handed us a job meanwhile: retire
                        self._idle.remove(me)
                        return
            job = me.job  # type: ignore[assignment]

    def _reset_in_child(self) -> None:
        """After fork: the idle threads are the parent's and do not exist here (a job handed to one
        would never run), and the lock may have been held by one of them. trio's thread cache does the
        same (`trio/_core/_thread_cache.py`)."""
        self._lock = threading.Lock()
        self._idle = []


POOL = ThreadPool()
_fork.register("thread pool", reset_in_child=lambda: POOL._reset_in_child())


class ThreadDispatcher:
    """Admits at most `limit` runs of one runner into the pool at a time, in submission order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._pending: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition(threading.Lock())

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            if self._running >= self.limit:
                self._pending.append(job)
                return
            self._running += 1
        POOL.run(lambda: self._serve(job))

    def _serve(self, job: Callable[[], None] | None) -> None:
        """Run `job`, then whatever is queued, in this thread; then give the slot back."""
        previous = getattr(_threads, "slot", None)
        _threads.slot = self
        try:
            while job is not None:
                try:
                    job()
                finally:
                    with self._cond:
                        if self._pending:
                            job = self._pending.popleft()
                        else:
                            job = None
                            self._running -= 1
                            self._cond.notify()
        finally:
            _threads.slot = previous

    # -- lending the slot while the thread blocks on another run ---------------------------------
    def release_while_blocked(self) -> None:
        with self._cond:
            self._running -= 1
            job = None
            if self._pending and self._running < self.limit:
                job = self._pending.popleft()
                self._running += 1
            self._cond.notify()
        if job is not None:
            POOL.run(lambda: self._serve(job))

    def reacquire(self) -> None:
        with self._cond:
            while self._running >= self.limit:
                self._cond.wait()
            self._running += 1


def current_thread_slot() -> ThreadSlotHolder | None:
    """The slot holder of this thread (a ThreadDispatcher or an anyio-limiter slot), if any."""
    return getattr(_threads, "slot", None)


def set_thread_slot(slot: ThreadSlotHolder | None) -> ThreadSlotHolder | None:
    previous = getattr(_threads, "slot", None)
    _threads.slot = slot
    return previous
