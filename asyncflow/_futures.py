"""Futures: handles on submitted task runs. Awaitable in async code, blocking in sync code."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

import anyio

from ._engine.loop import in_async_context, threadsafe_caller
from ._engine.threads import current_thread_slot
from ._exceptions import BlockingResultError
from ._runs import TaskRun
from ._states import State

R = TypeVar("R")

_lock = threading.Lock()  # guards the hand-over between a completing run and a thread about to block


class TaskRunFuture(Generic[R]):
    """The eventual state and result of a submitted task run."""

    __slots__ = ("task_run", "_final", "_settled", "_callbacks", "_events", "_thread_event", "_observed",
                 "_tracker", "__weakref__")

    def __init__(self, task_run: TaskRun) -> None:
        self.task_run = task_run
        self._final: State[R] | None = None  # the final state, once the run has one
        self._settled = False  # ... and its done callbacks have run: waiters wake only now
        self._callbacks: list[Callable[[TaskRunFuture[R]], Any]] | None = None
        self._events: list[tuple[int, anyio.Event, Callable[..., Any]]] | None = None  # one per awaiting loop
        self._thread_event: threading.Event | None = None
        self._observed = False
        self._tracker: Any = None  # the children of the run that submitted it (told first, when it ends)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def task_run_id(self) -> Any:
        return self.task_run.id

    @property
    def state(self) -> State[R]:
        """The final state if the run finished, else its current state. (Reading a final state counts
        as looking at the outcome; reading `Running` does not.)"""
        if self._final is not None:
            self._observed = True
            return self._final
        return self.task_run.state

    def done(self) -> bool:
        return self._final is not None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run finishes or `timeout` seconds pass (then return quietly).

        Waiting is not observing: a failure is still reported at flow end unless something reads it."""
        if self._final is None:
            self._block(timeout, "wait")

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The run's result; raises its exception if it failed (unless `raise_on_failure=False`)."""
        self._observed = True
        if self._final is None and not self._block(timeout, "result"):
            raise TimeoutError(f"Task run {self.task_run.id} did not complete within {timeout} seconds")
        assert self._final is not None
        return self._final._result(raise_on_failure=raise_on_failure)

    def __await__(self) -> Generator[Any, None, R]:
        return self._await_result().__await__()

    async def _await_result(self) -> R:
        self._observed = True
        if self._final is None:
            await self.wait_async()
        assert self._final is not None
        if self._final.is_cancelled():
            # The run was cancelled, most likely with the awaiting code (a caller's timeout or
            # move_on_after): that code's cancellation comes first, so its scope catches it; a
            # CancelledRun from here would escape that scope.
            from anyio.lowlevel import checkpoint_if_cancelled

            await checkpoint_if_cancelled()
        return self._final._result()

    def add_done_callback(self, fn: Callable[[TaskRunFuture[R]], Any]) -> None:
        """Call `fn(future)` when the run finishes (at once if it already has)."""
        if self._final is not None:
            self._call_back(fn)
            return
        with _lock:
            if self._final is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        self._call_back(fn)

    def _call_back(self, fn: Callable[[TaskRunFuture[R]], Any]) -> None:
        """Every done callback goes through here: one that raises is logged, and breaks nothing."""
        try:
            fn(self)
        except Exception as exc:
            from ._logging import ERROR, log

            log(ERROR, "asyncflow.futures", f"A done callback of task run '{self.task_run.name}' raised {exc!r}",
                exc_info=exc)

    # -- waiting ---------------------------------------------------------------------------------
    async def wait_async(self, settled: bool = False) -> None:
        """Until the run is final (`settled`: and its done callbacks have run, as its flow waits)."""
        if self._settled or (not settled and self._final is not None):
            return
        me = threading.get_ident()
        with _lock:
            if self._settled or (not settled and self._final is not None):
                return
            if self._events is None:
                self._events = []
            event = next((event for thread, event, _ in self._events if thread == me), None)
            if event is None:  # the first task on this loop to wait (others share its event)
                event = anyio.Event()
                self._events.append((me, event, threadsafe_caller()))
        await event.wait()

    def _block(self, timeout: float | None, what: str, settled: bool = False) -> bool:
        if in_async_context():
            raise BlockingResultError(
                f"future.{what}() would block the event loop while task run '{self.task_run.name}' is "
                f"still running. In async code, use `await future` (or `await future.wait_async()`)."
            )
        if timeout is not None and timeout < 0:
            raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")
        with _lock:
            if self._settled or (not settled and self._final is not None):
                return True
            if self._thread_event is None:
                self._thread_event = threading.Event()
            event = self._thread_event
        return _blocking_wait(event.wait, timeout)

    # -- completion (engine only) ----------------------------------------------------------------
    def _set_final(self, state: State[R]) -> None:
        """The first final state wins. Done callbacks run before any waiter wakes, so whoever waited
        for this run (its flow, at its end) also waited for them."""
        with _lock:
            if self._final is not None:
                return
            self._final = state
            callbacks, self._callbacks = self._callbacks, None
            tracker, self._tracker = self._tracker, None
        if tracker is not None:  # (not a done callback: no list and no bound method per pending run)
            tracker.finished(self)
        if callbacks:
            for fn in callbacks:
                self._call_back(fn)
        with _lock:  # (the waiters hold their events: a finished future keeps neither them nor their loops)
            self._settled = True
            thread_event, self._thread_event = self._thread_event, None
            events, self._events = self._events, None
        if thread_event is not None:
            thread_event.set()
        if events:
            me = threading.get_ident()
            for thread, event, call_soon in events:
                try:
                    if thread == me:
                        event.set()
                    else:  # finished in another thread: wake the awaiting task on its own loop
                        call_soon(event.set)
                except Exception:  # that loop is gone (closed, finished): nobody waits there any more
                    pass

    def __repr__(self) -> str:  # looking at a future in a debugger or a log is not observing its failure
        state = self._final if self._final is not None else self.task_run.state
        return f"TaskRunFuture({self.task_run.name!r}, state={state!r})"


@contextlib.contextmanager
def _slot_handed_back() -> Iterator[None]:
    """Around a blocking wait: a worker thread hands its runner slot back meanwhile (no pool deadlock)."""
    slot = current_thread_slot()
    if slot is None:
        yield
        return
    slot.release_while_blocked()
    try:
        yield
    finally:
        slot.reacquire()


def _blocking_wait(wait: Callable[[float | None], bool], timeout: float | None) -> bool:
    with _slot_handed_back():
        return wait(timeout)


class TaskRunFutureList(list[TaskRunFuture[R]], Generic[R]):
    """The futures returned by `.map()`: a list with `.wait()` and `.result()` for all of them."""

    def wait(self, timeout: float | None = None) -> None:
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        if timeout is not None and timeout < 0:
            raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")
        try:
            for future in as_completed(self, timeout=timeout):
                if raise_on_failure and not future.state.is_completed():
                    future.result()
        except TimeoutError:
            raise TimeoutError(
                f"Timed out waiting for all futures to complete within {timeout} seconds") from None
        return [future.result(raise_on_failure=raise_on_failure) for future in self]


class DoneAndNotDoneFutures(NamedTuple):
    done: set[TaskRunFuture[Any]]
    not_done: set[TaskRunFuture[Any]]


def wait(futures: Iterable[TaskRunFuture[Any]], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait until every future is done or `timeout` passes; never raises on timeout."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")
    pending = set(futures)
    done: set[TaskRunFuture[Any]] = set()
    try:
        for future in as_completed(pending, timeout=timeout):
            done.add(future)
    except TimeoutError:
        pass
    return DoneAndNotDoneFutures(done, pending - done)


def as_completed(futures: Iterable[TaskRunFuture[R]], timeout: float | None = None
                 ) -> Iterator[TaskRunFuture[R]]:
    """Yield futures as they finish (already finished ones first); TimeoutError after `timeout`."""
    unique = list(dict.fromkeys(futures))
    ready = threading.Condition(threading.Lock())
    finished: list[TaskRunFuture[R]] = []

    def on_done(future: TaskRunFuture[R]) -> None:
        with ready:
            finished.append(future)
            ready.notify()

    for future in unique:
        future.add_done_callback(on_done)
    deadline = None if timeout is None else time.monotonic() + timeout
    yielded = 0
    while yielded < len(unique):
        with ready:
            batch, finished[:] = list(finished), []
        if not batch:
            if in_async_context():
                raise BlockingResultError(
                    "as_completed()/wait() would block the event loop. In async code, await the "
                    "futures instead (for example `await future` in an anyio task group).")
            # the slot is handed back first, never while holding `ready`: the loop needs it to report
            with _slot_handed_back(), ready:
                while not finished:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"{len(unique) - yielded} (of {len(unique)}) futures unfinished")
                    ready.wait(remaining)
                batch, finished[:] = list(finished), []
        for future in batch:
            yielded += 1
            yield future
