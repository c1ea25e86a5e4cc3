"""Scopes: the one owner of every run a flow attempt (or a root task run) starts.

A submitted run lives in one of three places: queued (waiting for its turn, its upstream runs or a
runner slot), executing as a task on the scope's event loop, or executing in a pool thread. Whatever
the place, the run follows one protocol with its scope, trio's nursery rule extended to threads:

- `register(call)` when it is submitted, before anything can start it: a closed scope refuses it
  with a clear error (never an internal error of the event loop);
- `claim_start(call)` right before its engine starts, from any thread: False once the scope was
  cancelled or its deadline passed (the run is then resolved `Cancelled` and never starts);
- `cancel(reason)`, idempotent, from any thread: queued runs are resolved `Cancelled` at once, runs in
  pool threads have their user code stopped (it raises at its next bytecode) and are resolved at once,
  and the event-loop tasks are cancelled, each recording its own final state;
- `close()`: no new runs; the flow engine calls `cancel` and `close` from a `finally` on every exit
  path (success, failure, deadline, outer cancellation, Ctrl-C, a signal).

A run reaches its final state once: whoever finalizes it first (its own engine, or the scope's
`cancel`) wins, and whatever the other side would record later is dropped (`Finals`).

Spawning an anyio task costs ~30 µs, more than a whole trivial task run, so a scope does not spawn
one task per run. Submitted runs wait in a FIFO; worker tasks drive them one after the other, and a
worker whose run suspends first makes sure another worker is free to go on with the queue. So runs
that never block cost no spawn at all, and runs that block never hold up the ones behind them.

A sync flow called from a sync script has no loop until it submits an async run: its scope starts an
event loop in a helper thread on the first such submit, and stops it when the flow ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import sniffio

from .._exceptions import ScopeClosedError

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:
    from exceptiongroup import BaseExceptionGroup
from .loop import context_for_another_thread, in_asyncio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

T = TypeVar("T")
_YIELD_EVERY = 64  # a worker lets other tasks run at least this often

Finalize = Callable[[Any, str], None]  # resolve a run that will not run (or not on): (call, message)


class Scope:
    """Every run started by one flow attempt or root task run; see the module docstring."""

    __slots__ = ("label", "wall_deadline", "closed", "cancelled", "by_parent", "_finalize", "_lock",
                 "_children_changed", "_runs", "_loop", "_children", "_parent", "_portal_cm", "_portal", "_stop",
                 "__weakref__")

    def __init__(self, label: str, finalize: Finalize, task_group: TaskGroup | None = None,
                 wall_deadline: float | None = None, parent: Scope | None = None) -> None:
        self.label = label  # "Flow run 'great-ammonite'": named in errors
        self.wall_deadline = wall_deadline  # the deadline on time.monotonic(), readable from any thread
        self.closed = False
        self.cancelled: str | None = None  # why, once cancelled ("timed out", "failed", ...)
        self.by_parent = False  # cancelled because the scope of the run its flow was called in was
        self._finalize = finalize
        self._lock = threading.Lock()
        # made with the first child scope (most flows call none): a Condition is five objects the GC walks
        self._children_changed: threading.Condition | None = None
        self._runs: dict[Any, None] = {}  # registered, not yet final
        self._loop: _LoopRuns | None = _LoopRuns(self, task_group) if task_group is not None else None
        self._children: dict[Scope, None] = {}  # scopes of flows called inside this scope's runs
        self._parent = parent
        if parent is not None:
            parent._adopt(self)
        self._portal_cm: Any = None  # the helper loop of a sync flow, once it needs one
        self._portal: Any = None
        self._stop: anyio.Event | None = None

    # -- the ownership protocol -----------------------------------------------------------------
    def register(self, call: Any) -> None:
        with self._lock:
            if self.closed:
                raise ScopeClosedError(
                    f"{call.task.name}.submit() was called after {self.label} ended, so nothing would own the "
                    f"run. Submit runs while the flow runs (a thread that outlives its flow cannot submit into "
                    f"it), or call the task directly, or use `.delay()` to hand it to a task worker.")
            self._runs[call] = None

    def claim_start(self, call: Any) -> bool:
        """From any thread, right before the run's engine starts: may it? (If not, it is resolved.)"""
        with self._lock:
            reason = self.cancelled
            if reason is None and self.wall_deadline is not None and time.monotonic() >= self.wall_deadline:
                reason = "timed out"
            if reason is None:
                call.started = True
                return True
        self._finalize(call, f"The run was cancelled before it started: its flow run {reason}.")
        return False

    def forget(self, call: Any) -> None:
        """The run reached its final state. (One dict operation: atomic, as is `cancel`'s copy.)"""
        self._runs.pop(call, None)

    def _adopt(self, child: Scope) -> None:
        """A flow called inside one of this scope's runs (a subflow in a task in a pool thread): its
        scope is cancelled with this one, whatever thread it runs in."""
        with self._lock:
            reason = self.cancelled
            if reason is None:
                if self._children_changed is None:
                    self._children_changed = threading.Condition(self._lock)
                self._children[child] = None
        if reason is not None:
            child.cancel(f"was cancelled because {self.label} {reason}", by_parent=True)

    def cancel(self, reason: str, by_parent: bool = False) -> None:
        """Stop every run of the scope (idempotent, any thread). `reason` completes "its flow run ..."."""
        with self._lock:
            if self.cancelled is None:
                self.cancelled = reason
                self.by_parent = by_parent
            reason = self.cancelled
            runs = list(self._runs)
            children = list(self._children)
        for call in runs:
            guard = call.guard
            if not call.started:
                self._finalize(call, f"The run was cancelled before it started: its flow run {reason}.")
            elif guard is not None:  # in a pool thread: stop its user code, resolve it now
                guard.abort()
                self._finalize(call, f"The run was stopped because its flow run {reason}; its thread raises "
                                     f"SyncRunAborted before it runs any more of the function's code.")
        # then the flows called inside our runs: cancelling them unblocks those runs' threads, which must
        # find their runs resolved already (not fail on the cancelled subflow's outcome)
        for child in children:
            child.cancel(f"was cancelled because {self.label} {reason}", by_parent=True)
        if self._loop is not None:
            self._loop.cancel()

    def close(self) -> None:
        """No new runs from now on (runs already registered go on to their end)."""
        with self._lock:
            self.closed = True
        if self._loop is not None:
            self._loop.close()

    def detach(self) -> None:
        """The flow run that owned this scope has its final state: its caller's scope forgets it."""
        parent = self._parent
        if parent is not None:
            with parent._lock:
                parent._children.pop(self, None)
                if parent._children_changed is not None:
                    parent._children_changed.notify_all()

    def has_children(self) -> bool:
        return bool(self._children)

    def settle_children(self, timeout: float) -> list[str]:
        """Block until the flows called inside this scope's runs have ended (at most `timeout` s);
        returns the labels of those still going. (A stopped pool-thread run's subflow ends on its own
        thread, moments after the run was resolved.)"""
        deadline = time.monotonic() + timeout
        with self._lock:
            changed = self._children_changed  # (made under the lock with the first child: None if none ever came)
            while self._children and changed is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed.wait(remaining)
            return [child.label for child in self._children]

    def open_runs(self) -> int:
        with self._lock:
            return len(self._runs)

    # -- event-loop tasks ---------------------------------------------------------------------------
    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], call: Any) -> None:
        """Run `fn(call)` as a task on the scope's event loop (a sync flow's starts on first use)."""
        if self._loop is None:
            self._start_helper_loop()
        assert self._loop is not None
        self._loop.spawn(fn, call)

    def _start_helper_loop(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            from anyio.from_thread import start_blocking_portal  # (a sync flow's helper loop: off the import path)

            self._portal_cm = start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
            _, (self._loop, self._stop) = self._portal.start_task(_serve, self)

    def on_loop(self, task_group: TaskGroup) -> Scope:
        """Run the scope's event-loop tasks in `task_group` (opened after the scope was made)."""
        self._loop = _LoopRuns(self, task_group)
        return self

    def has_helper_loop(self) -> bool:
        return self._portal_cm is not None

    def stop_helper_loop(self) -> None:
        """At the end of a sync flow (every run is final by now): stop the helper loop, if one started."""
        portal_cm, self._portal_cm = self._portal_cm, None
        if portal_cm is None:
            return
        try:
            assert self._stop is not None
            self._portal.call(self._stop.set)
        finally:
            self._portal = None
            portal_cm.__exit__(None, None, None)


async def owning(scope: Scope, body: Coroutine[Any, Any, T], why: Callable[[BaseException], str],
                 deadline: anyio.CancelScope | None = None) -> T:
    """Await `body` as the owner of `scope`: whichever way it ends, the scope is closed, and on an
    exception (a failure, a deadline, a cancellation, an interrupt) every run in it is stopped. With
    `deadline` (the owner's time limit), an exception once it has passed means the owner "timed out"."""
    try:
        return await body
    except BaseException as exc:
        stop_owned(scope, exc, why, deadline)
        raise
    finally:
        scope.close()


def stop_owned(scope: Scope, exc: BaseException, why: Callable[[BaseException], str],
               deadline: anyio.CancelScope | None = None) -> None:
    """`owning`'s way out on an exception, for an owner that awaits its body inline (no coroutine of
    its own): stop every run in `scope`, saying why. The owner closes the scope in its `finally`."""
    timed_out = deadline is not None and anyio.current_time() >= deadline.deadline
    scope.cancel("timed out" if timed_out else why(exc))


def raise_sole(group: BaseExceptionGroup) -> NoReturn:  # type: ignore[type-arg]
    """A scope's task group wraps what its body raised (KeyboardInterrupt, SystemExit, a crash) in an
    exception group, next to its tasks' cancellations. Raise that one exception as itself, so that
    Ctrl-C is still a KeyboardInterrupt and `sys.exit(3)` still exits with 3; several real errors stay
    a group."""
    cancelled = anyio.get_cancelled_exc_class()
    leaves = [exc for exc in _leaves(group) if not isinstance(exc, cancelled)]
    if len(leaves) == 1:
        raise leaves[0] from leaves[0].__cause__
    raise group


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _serve(owner: Scope, *, task_status: TaskStatus[Any]) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        task_status.started((_LoopRuns(owner, tg), stop))
        await stop.wait()
        tg.cancel_scope.cancel()  # only reached after every child finished


def _current_loop_handle() -> Any:
    """The running loop's asyncio loop or trio token (its module is loaded: it runs)."""
    if sniffio.current_async_library() == "trio":
        return sys.modules["trio"].lowlevel.current_trio_token()
    return sys.modules["asyncio"].get_running_loop()


class _LoopRuns:
    """The runs of a scope that execute as tasks of one anyio task group, fed from any thread."""

    __slots__ = ("owner", "task_group", "_thread", "_loop_handle", "_queue", "_free", "_inbox", "_inbox_lock",
                 "_inbox_scheduled", "_closed")

    def __init__(self, owner: Scope, task_group: TaskGroup) -> None:
        self.owner = owner
        self.task_group = task_group
        self._thread = threading.get_ident()
        # the loop's own object that takes callbacks from other threads (asyncio's loop, trio's token):
        # it exists already, so a scope allocates nothing to be reachable from other threads
        self._loop_handle = _current_loop_handle()
        # the queue and the inbox are made when first used: a flow that submits nothing has neither
        self._queue: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], Any, contextvars.Context]] | None = None
        self._free = 0  # workers that will take the next queued run without waiting for one to finish
        self._inbox: list[Any] | None = None  # runs submitted from other threads, not yet queued
        self._inbox_lock = owner._lock  # (never held while calling out, as the owner's own uses)
        self._inbox_scheduled = False
        self._closed = False

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], call: Any) -> None:
        if threading.get_ident() == self._thread:
            item = (fn, call, contextvars.copy_context())
            if self._closed:
                self._drop([item], "ended")
            else:
                self._enqueue(item)
            return
        # from another thread: one wake-up of the loop per burst of submissions, not one per run
        item = (fn, call, context_for_another_thread())
        with self._inbox_lock:
            if self._closed:
                closed = True
            else:
                closed = False
                if self._inbox is None:
                    self._inbox = []
                self._inbox.append(item)
                if self._inbox_scheduled:
                    return
                self._inbox_scheduled = True
        if closed:
            self._drop([item], "ended")
            return
        try:
            self._call_soon(self._take_inbox)
        except Exception:  # the loop is gone (closed, finished): nothing will ever take them
            self._drop(self._take_all(), "ended")

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the loop from any thread, without waiting (raises once it is closed)."""
        handle = self._loop_handle
        if hasattr(handle, "call_soon_threadsafe"):  # asyncio's loop
            handle.call_soon_threadsafe(in_asyncio, fn, *args)
        else:  # trio's token
            handle.run_sync_soon(fn, *args)

    def _take_all(self) -> list[Any]:
        with self._inbox_lock:
            items, self._inbox = self._inbox, None
            self._inbox_scheduled = False
        return items or []

    def _take_inbox(self) -> None:
        """On the loop, outside any task: must never raise (trio would die of a TrioInternalError)."""
        items = self._take_all()
        if self._closed:
            self._drop(items, "ended")
            return
        for item in items:
            try:
                self._enqueue(item)
            except Exception:  # the task group is no longer active
                self._drop([item], "ended")

    def _drop(self, items: list[Any], why: str) -> None:
        for _, call, _ in items:
            self.owner._finalize(call, f"The run was cancelled before it started: its flow run {why}.")

    def _enqueue(self, item: Any) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if self._free == 0:
            self._free += 1
            self.task_group.start_soon(self._worker)

    async def _worker(self) -> None:
        done = 0
        try:
            while self._queue:  # (not None once a run was queued)
                fn, call, context = self._queue.popleft()
                await self._drive(context, fn(call))
                done += 1
                if done % _YIELD_EVERY == 0:
                    from anyio.lowlevel import checkpoint

                    await checkpoint()
        except anyio.get_cancelled_exc_class():
            # the scope is cancelled: the runs still queued are resolved without starting
            self._drop(self._drain(), self.owner.cancelled or "was cancelled")
            raise
        finally:
            self._free -= 1

    def _drain(self) -> list[Any]:
        if self._queue is None:
            return []
        items = list(self._queue)
        self._queue.clear()
        return items

    @types.coroutine
    def _drive(self, context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, None]:
        """Run `coro` inside this worker task, in its own context; note when it first suspends."""
        try:
            value = context.run(coro.send, None)
        except StopIteration:
            return
        self._free -= 1  # blocked: the queue needs another worker
        if self._queue and self._free == 0:
            self._free += 1
            self.task_group.start_soon(self._worker)
        try:
            while True:
                try:
                    sent = yield value
                except BaseException as exc:  # delivered by the event loop (cancellation, ...)
                    value = context.run(coro.throw, exc)
                else:
                    value = context.run(coro.send, sent)
        except StopIteration:
            return
        finally:
            self._free += 1
            coro.close()

    def cancel(self) -> None:
        if threading.get_ident() == self._thread:
            self.task_group.cancel_scope.cancel()
            return
        with contextlib.suppress(Exception):  # the loop is gone: nothing of ours runs on it any more
            self._call_soon(self.task_group.cancel_scope.cancel)

    def close(self) -> None:
        with self._inbox_lock:
            self._closed = True
        items = self._take_all()
        if threading.get_ident() == self._thread:
            items += self._drain()
        self._drop(items, "ended")
