"""Task runners decide where a submitted run's user code executes and how many run at once.

The engine drives every run as a coroutine where the flow runs, records every state and decides
retries, caching and timeouts; a runner only executes the user's function. Its interface:

- `capabilities` (a `Capabilities`, declared by the class): what the engine may ask of it;
- `options`: a frozen value object with the runner's configuration; `duplicate()` (called once per
  flow run) copies it into a fresh runner with no runtime state;
- a lifecycle: the engine enters `async with runner:` around each flow run (`start()` /
  `shutdown()`: start or connect a pool or a cluster, and stop what was started);
- `submit(work_item) -> Outcome`: execute one `WorkItem` (function, arguments and, for runners
  whose work leaves the process, a picklable snapshot of the run context) and return what came of it
  (value or exception, the log records, timing);
- `run_inline(work_item) -> Outcome`: for runners with `pool_threads`, execute it in the current
  thread, one of the runner's own (`dispatcher()`), where the engine runs the whole sync run;
- `ticket()` / `execution_slot(ticket)` / `release(ticket)` (runners with `slots`): order and bound
  the runs a flow submits.

A runner can also be used by hand, outside a flow, as in Prefect: `with ThreadPoolTaskRunner() as r:`
(or `async with`) then `r.submit(task, parameters)` / `r.map(task, parameters)` return futures; the
block waits for its runs when it ends (see `_runners/direct.py`). A subclass still implements the
engine's `async def submit(self, item)`; the class machinery wraps it so that `submit` sends a
`WorkItem` there and a task to the by-hand path.

`ProcessPoolTaskRunner` (in `_runners/process.py`), `DaskTaskRunner` and `RayTaskRunner` are imported
from here on first use (the last two need the extras `dask` and `ray`).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio

from . import _settings
from ._engine.interrupt import UserCode
from ._engine.threads import ThreadDispatcher
from ._runners.threads import ThreadSlot, thread_limiter
from ._runners.work import Capabilities, Outcome, RunSnapshot, UnpicklableWorkError, WorkerDiedError, WorkItem
from ._values import FrozenInstanceError

R = TypeVar("R")


class RunnerOptions:
    """A runner's configuration (subclasses add fields). Frozen: `duplicate()` shares it safely.

    A subclass is a frozen attrs class (`@attrs.frozen class MyOptions(RunnerOptions): ...`), or a
    hand-written one that lists its fields in `__slots__` and sets them with `object.__setattr__`
    (as `ThreadPoolOptions` does, to keep attrs off asyncflow's import path). Equal by class and fields."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError()

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return option_values(self) == option_values(other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self.__class__, *(value for _, value in option_values(self))))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in option_values(self))
        return f"{type(self).__qualname__}({fields})"



def option_fields(kind: type) -> list[str]:
    """The field names of an options class: attrs' fields, or the `__slots__` of a hand-written one."""
    if hasattr(kind, "__attrs_attrs__"):
        import attrs

        return [field.name for field in attrs.fields(kind)]
    return [name for klass in reversed(kind.__mro__) for name in klass.__dict__.get("__slots__", ())
            if not name.startswith("__")]


def option_values(options: Any) -> list[tuple[str, Any]]:
    return [(name, getattr(options, name)) for name in option_fields(type(options))]


_PLAIN_COPY: dict[type, bool] = {}


def _copies_its_dict(cls: type) -> bool:
    """Does `copy.copy` of an instance only make a new one with the same `__dict__` (no `__copy__`, no
    reduce or state hooks, no slots)?"""
    import copyreg

    return (cls not in copyreg.dispatch_table and getattr(cls, "__copy__", None) is None
            and cls.__reduce_ex__ is object.__reduce_ex__
            and cls.__reduce__ is object.__reduce__ and getattr(cls, "__getstate__", None) is getattr(
                object, "__getstate__", None) and getattr(cls, "__setstate__", None) is None
            and all("__slots__" not in klass.__dict__ for klass in cls.__mro__[:-1]))


class TaskRunner:
    """Base class: sync functions in worker threads (under the thread limit), coroutines on the loop.

    Subclasses declare `capabilities`, keep configuration in `options` (a frozen `RunnerOptions`) and
    per-run state in attributes set by `_reset()`. Each flow run works on its own `duplicate()`."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self) -> None:
        self.options: Any = RunnerOptions()
        self._reset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("submit")
        if own is not None and not hasattr(own, "engine_submit"):  # this subclass's engine `submit(item)`
            cls.submit = _public_submit(own)  # type: ignore[method-assign]

    def _reset(self) -> None:
        """Per-run state, fresh in each duplicate (nothing of another flow run's runner is shared)."""
        self._direct: Any = None  # the runs of a `with runner:` block (runner used by hand)
        self._entered = False
        self._limiter: anyio.CapacityLimiter | None = None
        self._dispatcher: ThreadDispatcher | None = None
        self._tickets = 0

    @property
    def name(self) -> str:
        return type(self).__name__.lower().replace("taskrunner", "")

    def duplicate(self) -> TaskRunner:
        """A copy for one flow run: the same options (and other configuration), fresh runtime state."""
        cls = type(self)
        plain = _PLAIN_COPY.get(cls)
        if plain is None:
            plain = _PLAIN_COPY[cls] = _copies_its_dict(cls)
        if plain:  # what `copy.copy` does for such a class, at a fifth of its cost (once per flow run)
            clone = object.__new__(cls)
            clone.__dict__.update(self.__dict__)
        else:
            clone = copy.copy(self)
        clone._reset()
        return clone

    # -- lifecycle ------------------------------------------------------------------------------------
    async def __aenter__(self) -> TaskRunner:
        await self.start()
        self._entered = True
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        direct, self._direct = self._direct, None
        self._entered = False
        try:
            if direct is not None:
                if exc_info[0] is not None:
                    direct.cancel("ended with an error")
                await direct.wait_all_async()
                from anyio import to_thread

                await to_thread.run_sync(direct.close)
        finally:
            await self.shutdown()

    def __enter__(self) -> TaskRunner:
        """Use the runner by hand: `submit`/`map` tasks in the block; leaving it waits for their runs."""
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} is already started: enter it once at a time.")
        self._entered = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        direct, self._direct = self._direct, None
        self._entered = False
        if direct is None:
            return
        try:
            if exc_info[0] is not None:
                direct.cancel("ended with an error")
            direct.wait_all()
        finally:
            scope = direct.scope
            if scope.has_helper_loop():  # the runs' loop: stop what the runs started there, then it
                scope._portal.call(self.shutdown)
                direct.close()
            else:
                direct.close()
                anyio.run(self.shutdown)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        """By hand (in `with runner:`): one run of `task` per item of the iterables in `parameters`
        (other values, and values wrapped in `unmapped()`, are passed to every run); their futures."""
        return self._direct_use("map").map(task, parameters, wait_for)

    def _direct_use(self, method: str) -> Any:
        if not self._entered:
            raise RuntimeError(
                f"Task runner is not started: use it in a `with {type(self).__name__}(...) as runner:` block "
                f"(or `async with`) before calling runner.{method}(task, parameters).")
        if self._direct is None:
            from ._runners.direct import DirectUse

            self._direct = DirectUse(self)
        return self._direct

    async def start(self) -> None:
        """Start or connect what the runner needs (once per flow run, before its first run)."""

    async def shutdown(self) -> None:
        """Stop what `start` (or the runs) started. Called once the flow run's runs are all final."""

    # -- executing work -------------------------------------------------------------------------------
    async def submit(self, item: WorkItem) -> Outcome:
        """Execute `item` and return its outcome; called on the event loop of the flow's runs."""
        if item.is_async:
            return await self.run_async(item.run_async)
        guard = item.guard
        if guard is None:
            guard = item.guard = UserCode()
        try:
            return await self.run_sync(item.run)
        except anyio.get_cancelled_exc_class():
            guard.abort()  # cancelled: the thread stops at its next bytecode
            raise

    def run_inline(self, item: WorkItem) -> Outcome:
        """Execute a sync `item` in the current thread (one this runner's `dispatcher()` provided)."""
        return item.run()

    def _thread_limit(self) -> int:
        return int(_settings.THREAD_LIMIT.value())

    def _get_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created lazily: anyio primitives need a running loop
            self._limiter = anyio.CapacityLimiter(self._thread_limit())
        return self._limiter

    async def run_sync(self, fn: Callable[[], R]) -> R:
        """Run sync code in a worker thread (never on the event-loop thread).

        The thread holds one of the runner's slots while it runs user code; if that code blocks on
        another run (`future.result()`), the slot is handed back until the wait is over, so a
        bounded runner can never deadlock on nested submissions.
        """
        from anyio import to_thread  # (a thread hop costs ~100 µs; this, well under 1)

        limiter = self._get_limiter()
        slot = ThreadSlot(limiter)
        await limiter.acquire_on_behalf_of(slot)
        try:
            return await to_thread.run_sync(slot.run, fn, limiter=thread_limiter(), abandon_on_cancel=True)
        finally:
            slot.close()  # (an abandoned thread that lent its slot must not take it again later: L4)

    async def run_async(self, fn: Callable[[], Awaitable[R]]) -> R:
        """Run a coroutine function (only for runners that declare `async_tasks`)."""
        return await fn()

    def dispatcher(self) -> ThreadDispatcher | None:
        """Where submitted sync runs execute whole (engine and user code) in one of the runner's
        threads, without a round trip through the event loop (runners with `pool_threads`)."""
        if not self.capabilities.pool_threads:
            return None
        if self._dispatcher is None:
            self._dispatcher = ThreadDispatcher(self._thread_limit())
        return self._dispatcher

    # -- slots ----------------------------------------------------------------------------------------
    def ticket(self) -> Any:
        """Called when a flow submits a run, in submission order; `None` means no slot is needed."""
        if not self.capabilities.slots:
            return None
        with _ticket_lock:
            self._tickets += 1
            return self._tickets - 1

    @contextlib.asynccontextmanager
    async def execution_slot(self, ticket: Any) -> AsyncIterator[None]:
        yield

    def release(self, ticket: Any) -> None:
        """Called when the run holding `ticket` is over (also if it never got to execute)."""

    # -- value semantics ------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.options == self.options  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        try:
            return hash((type(self), self.options))
        except TypeError:  # options holding dicts
            return hash(type(self))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in option_values(self.options))
        return f"{type(self).__name__}({fields})"


_ticket_lock = threading.Lock()


def _public_submit(execute: Callable[..., Any]) -> Callable[..., Any]:
    """The `submit` of a runner class around the engine's `submit(item)` it defines: `submit(work_item)`
    (the engine: a coroutine giving the `Outcome`), or by hand in `with runner:`,
    `submit(task, parameters, wait_for=None)`: the run's future, at once."""

    def submit(self: TaskRunner, task: Any, parameters: dict[str, Any] | None = None, wait_for: Any = None,
               dependencies: Any = None) -> Any:
        if isinstance(task, WorkItem):
            return execute(self, task)
        return self._direct_use("submit").submit(task, parameters, wait_for)

    submit.engine_submit = execute  # type: ignore[attr-defined]
    submit.__doc__ = execute.__doc__
    return submit


TaskRunner.submit = _public_submit(TaskRunner.submit)  # type: ignore[method-assign]


def _positive_or_none(_: Any, attribute: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be a positive integer or None; got {value!r}.")


class _Field:  # what `_positive_or_none` is told (as attrs tells a validator the field)
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class ThreadPoolOptions(RunnerOptions):
    __slots__ = ("max_workers",)
    max_workers: int | None

    def __init__(self, max_workers: int | None = None) -> None:
        _positive_or_none(self, _Field("max_workers"), max_workers)
        object.__setattr__(self, "max_workers", max_workers)

    def __reduce__(self) -> Any:
        return (type(self), (self.max_workers,))


class ThreadPoolTaskRunner(TaskRunner):
    """Runs submitted tasks concurrently: coroutines on the loop, sync code in up to `max_workers` threads."""

    capabilities = Capabilities(pool_threads=True)

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.options = ThreadPoolOptions(max_workers)

    @property
    def max_workers(self) -> int | None:
        return self.options.max_workers  # type: ignore[no-any-return]

    def _thread_limit(self) -> int:
        return self.max_workers if self.max_workers is not None else super()._thread_limit()


class ConcurrentTaskRunner(ThreadPoolTaskRunner):
    """The default runner: submitted runs execute concurrently (an alias of ThreadPoolTaskRunner)."""


class SequentialTaskRunner(TaskRunner):
    """Submitted runs execute one at a time, in submission order (tickets served in order)."""

    capabilities = Capabilities(slots=True)

    def _reset(self) -> None:
        super()._reset()
        self._issued = 0
        self._serving = 0
        self._finished: set[int] = set()
        self._waiters: dict[int, anyio.Event] = {}
        self._lock = threading.Lock()

    def ticket(self) -> int:
        with self._lock:
            self._issued += 1
            return self._issued - 1

    @contextlib.asynccontextmanager
    async def execution_slot(self, ticket: int) -> AsyncIterator[None]:
        if ticket != self._serving:
            event = self._waiters[ticket] = anyio.Event()
            if ticket != self._serving:
                await event.wait()
        yield

    def release(self, ticket: int) -> None:
        """Runs on the loop thread; advances past every finished ticket and wakes the next run."""
        self._finished.add(ticket)
        while self._serving in self._finished:
            self._finished.discard(self._serving)
            self._serving += 1
        waiter = self._waiters.pop(self._serving, None)
        if waiter is not None:
            waiter.set()


def default_task_runner() -> TaskRunner:
    return ConcurrentTaskRunner()


# Defined elsewhere and imported on first use: a flow on the default runner never needs them, and the
# process runner's module (subprocess, socket, pickling) costs more to import than a flow costs to run.
_LAZY_HERE = {"ProcessPoolOptions": "._runners.process", "ProcessPoolTaskRunner": "._runners.process"}
_LAZY = {"DaskTaskRunner": ("._runners.dask", "dask", "distributed"),
         "RayTaskRunner": ("._runners.ray", "ray", "ray")}


def __getattr__(name: str) -> Any:
    """`DaskTaskRunner` and `RayTaskRunner` are imported on first use (they need optional extras), and so
    is `ProcessPoolTaskRunner`."""
    import importlib

    if name in _LAZY_HERE:
        value = getattr(importlib.import_module(_LAZY_HERE[name], __package__), name)
        globals()[name] = value
        return value
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, extra, package = _LAZY[name]
    try:
        module = importlib.import_module(module_name, __package__)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != package:
            raise
        raise ImportError(
            f"{name} needs the {package!r} package, which is not installed: pip install 'asyncflow-anyio[{extra}]'",
            name=package) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_HERE})


def coerce_task_runner(value: Any) -> TaskRunner:
    if value is None:
        return default_task_runner()
    if isinstance(value, type) and issubclass(value, TaskRunner):
        return value()
    if isinstance(value, TaskRunner):
        return value
    raise TypeError(
        f"task_runner must be a TaskRunner instance or class (for example ThreadPoolTaskRunner(max_workers=4)); "
        f"got {value!r}.")


if TYPE_CHECKING:
    from ._runners.process import ProcessPoolOptions as ProcessPoolOptions
    from ._runners.process import ProcessPoolTaskRunner as ProcessPoolTaskRunner

__all__ = ["Capabilities", "ConcurrentTaskRunner", "Outcome", "ProcessPoolOptions", "ProcessPoolTaskRunner",
           "RunSnapshot", "RunnerOptions", "SequentialTaskRunner", "TaskRunner", "ThreadPoolOptions",
           "ThreadPoolTaskRunner", "UnpicklableWorkError", "WorkItem", "WorkerDiedError"]
