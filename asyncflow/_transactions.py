"""Transactions: group task runs so that their results are written together, or not at all.

    with transaction():
        a = load()          # results are staged, not written
        b = save(a)
    # the block succeeded: staged results are written, then on_commit hooks run
    # had it raised: on_rollback hooks of the runs that completed run (newest first), nothing is written

Nested transactions hand their work to the outermost one (commit mode LAZY, the default) unless
they commit eagerly (EAGER). Values set with `txn.set(name, value)` are visible to nested ones.

Where the commit runs: the writes, the rollback records and the hooks never run on an event-loop
thread. `async with` writes in a worker thread, runs sync hooks in worker threads and awaits async
hooks. `with` in async code (an event loop runs in this thread) hands the whole commit to a worker
thread, where async hooks run on a loop of the caller's backend, and waits for it: the loop is blocked
while it waits, so async code should prefer `async with`. `with` in sync code commits in place.
"""

from __future__ import annotations

import copy
import enum
import inspect
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

import anyio
import anyio.to_thread

from ._engine.loop import context_for_another_thread, in_async_context, run_on_own_loop
from ._logging import ERROR, INFO, log

_NOTSET: Any = object()


class IsolationLevel(str, enum.Enum):
    READ_COMMITTED = "READ_COMMITTED"
    SERIALIZABLE = "SERIALIZABLE"


class CommitMode(str, enum.Enum):
    EAGER = "EAGER"
    LAZY = "LAZY"
    OFF = "OFF"


class TransactionState(str, enum.Enum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STAGED = "STAGED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


current_transaction: ContextVar[Transaction | None] = ContextVar("asyncflow_transaction", default=None)


class Transaction:
    """A unit of work whose writes happen at commit; use `transaction()` to open one."""

    def __init__(self, key: str | None = None, *, isolation_level: IsolationLevel | str | None = None,
                 commit_mode: CommitMode | str | None = None, overwrite: bool = False) -> None:
        self.key = key
        self.isolation_level = IsolationLevel(isolation_level) if isolation_level is not None else None
        self.commit_mode = CommitMode(commit_mode) if commit_mode is not None else None
        self.overwrite = overwrite
        self.state = TransactionState.PENDING
        self.parent: Transaction | None = None
        self.children: list[Transaction] = []
        self._writes: list[Callable[[], Any]] = []
        self._on_commit: list[tuple[Callable[..., Any], Transaction]] = []
        self._on_rollback: list[tuple[Callable[..., Any], Transaction]] = []
        self._on_rollback_runs: list[Callable[[], Any]] = []
        self._finally: list[Callable[[], Any]] = []
        self._values: dict[str, Any] = {}
        self._token: Token[Transaction | None] | None = None

    # -- values ------------------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        self._values[name] = copy.deepcopy(value)

    def get(self, name: str, default: Any = _NOTSET) -> Any:
        txn: Transaction | None = self
        while txn is not None:
            if name in txn._values:
                return copy.deepcopy(txn._values[name])
            txn = txn.parent
        if default is _NOTSET:
            raise ValueError(f"Could not retrieve value for unknown key {name!r}: set it with txn.set({name!r}, ...) "
                             f"or pass a default.")
        return default

    # -- what the engine stages ----------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state is TransactionState.ACTIVE

    @property
    def serializable(self) -> bool:
        txn: Transaction | None = self
        while txn is not None:
            if txn.isolation_level is IsolationLevel.SERIALIZABLE:
                return True
            txn = txn.parent
        return False

    def stage(self, write: Callable[[], Any], on_commit: list[Callable[..., Any]] | None = None,
              on_rollback: list[Callable[..., Any]] | None = None, rolled_back: Callable[[], Any] | None = None,
              release: Callable[[], Any] | None = None) -> None:
        """Add a completed run's work: its write, its hooks, what to record if rolled back, locks."""
        self._writes.append(write)
        self._on_commit.extend((hook, self) for hook in on_commit or ())
        self._on_rollback.extend((hook, self) for hook in on_rollback or ())
        if rolled_back is not None:
            self._on_rollback_runs.append(rolled_back)
        if release is not None:
            self._finally.append(release)

    # -- lifecycle -------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.parent = current_transaction.get()
        if self.commit_mode is None:
            self.commit_mode = self.parent.commit_mode if self.parent is not None else CommitMode.LAZY
        if self.isolation_level is None and self.parent is not None:
            self.isolation_level = self.parent.isolation_level
        self.state = TransactionState.ACTIVE
        self._token = current_transaction.set(self)

    def _leave(self) -> None:
        """Make the parent current again (in the caller's context, before any hand-off to a thread)."""
        if self._token is not None:
            current_transaction.reset(self._token)
            self._token = None

    def _settle(self, failed: bool) -> list[Any]:
        """Commit, roll back or hand the work to the parent; returns the hooks still to call. Commits
        write files and rollbacks record states: callers in async code run this in a worker thread."""
        if failed:
            return self._rollback()
        if self.commit_mode is CommitMode.OFF:
            return self._rollback()
        if self._hands_over():
            self.state = TransactionState.STAGED
            self.parent.children.append(self)  # type: ignore[union-attr]
            return []
        return self._commit()

    def _hands_over(self) -> bool:
        return self.parent is not None and self.parent.active and self.commit_mode is CommitMode.LAZY

    def _settles_in_place(self, failed: bool) -> bool:
        """True when settling does no I/O and calls nothing (a lazy child handing over, or nothing
        staged): then there is no reason to hop to a worker thread."""
        if not failed and self.commit_mode is not CommitMode.OFF and self._hands_over():
            return True
        return not (self._writes or self.children or self._on_commit or self._on_rollback
                    or self._on_rollback_runs or self._finally)

    def _commit(self) -> list[Callable[..., Any]]:
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return []
        hooks: list[Any] = []
        try:
            for child in self.children:
                hooks.extend(child._commit())
            for write in self._writes:
                write()
        except Exception as exc:
            log(ERROR, "asyncflow.transactions", f"An error was encountered while committing: {exc!r}; rolling back",
                exc_info=exc)
            return self._rollback()
        self.state = TransactionState.COMMITTED
        self._release()
        return hooks + [("commit", hook, txn) for hook, txn in self._on_commit]

    def _rollback(self) -> list[Callable[..., Any]]:
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return []
        hooks: list[Any] = [("rollback", hook, txn) for hook, txn in reversed(self._on_rollback)]
        for child in reversed(self.children):
            hooks.extend(child._rollback())
        for record in self._on_rollback_runs:
            record()
        self.state = TransactionState.ROLLED_BACK
        self._release()
        return hooks

    def _release(self) -> None:
        for release in self._finally:
            release()
        self._finally.clear()

    # -- context managers --------------------------------------------------------------------------
    def __enter__(self) -> Transaction:
        self.begin()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._leave()
        failed = exc_type is not None
        if self._settles_in_place(failed):
            _run_hooks_blocking(self._settle(failed), "asyncio")
        elif in_async_context():  # sync form in async code: never commit on the loop thread
            _in_worker_thread(_settle_and_run_hooks, self, failed, _current_backend())
        else:
            _settle_and_run_hooks(self, failed, "asyncio")

    async def __aenter__(self) -> Transaction:
        self.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._leave()
        failed = exc_type is not None
        if self._settles_in_place(failed):
            hooks = self._settle(failed)
        else:  # not abandoned on cancellation: the commit (or rollback) always finishes
            hooks = await anyio.to_thread.run_sync(self._settle, failed)
        await _run_hooks_async(hooks)

    def __repr__(self) -> str:
        return f"Transaction(key={self.key!r}, state={self.state.value})"


def _hook_name(hook: Any) -> str:
    return getattr(hook, "__name__", None) or getattr(getattr(hook, "func", None), "__name__", repr(hook))


def _call(kind: str, hook: Any, txn: Transaction) -> Any:
    name = _hook_name(hook)
    log(INFO, "asyncflow.transactions", f"Running {kind} hook {name!r}")
    return hook(txn)


def _report(kind: str, hook: Any, exc: BaseException | None) -> None:
    name = _hook_name(hook)
    if exc is None:
        log(INFO, "asyncflow.transactions", f"{kind.capitalize()} hook {name!r} finished running successfully")
    else:
        log(ERROR, "asyncflow.transactions", f"An error was encountered while running {kind} hook {name!r}",
            exc_info=exc)


async def run_transaction_hooks(hooks: list[Any], sync: bool) -> None:
    """Call commit/rollback hooks in order; one that raises is logged and the others still run.

    `sync=True` (driven with `drive_sync`): blocks and never suspends; async hooks run on a short-lived
    loop, and if an event loop runs in this thread everything runs in a worker thread instead.
    `sync=False`: sync hooks run in worker threads and async hooks are awaited."""
    if not sync:
        await _run_hooks_async(hooks)
    elif hooks and in_async_context():
        _in_worker_thread(_run_hooks_blocking, hooks, _current_backend())
    else:
        _run_hooks_blocking(hooks, "asyncio")


async def _run_hooks_async(hooks: list[Any]) -> None:
    """On the loop: async hooks are awaited here, sync hooks run in a worker thread each."""
    for kind, hook, txn in hooks:
        try:
            if inspect.iscoroutinefunction(hook):  # else it may still return an awaitable
                value = _call(kind, hook, txn)
            else:
                value = await anyio.to_thread.run_sync(_call, kind, hook, txn)
            if inspect.isawaitable(value):
                await value
        except Exception as exc:
            _report(kind, hook, exc)
        else:
            _report(kind, hook, None)


def _run_hooks_blocking(hooks: list[Any], backend: str) -> None:
    """In a thread with no running event loop: sync hooks are called here; a coroutine a hook returns
    runs on a short-lived event loop of `backend` in this thread."""
    for kind, hook, txn in hooks:
        try:
            value = _call(kind, hook, txn)
            if inspect.isawaitable(value):
                _await_on_own_loop(value, backend)
        except Exception as exc:
            _report(kind, hook, exc)
        else:
            _report(kind, hook, None)


def _await_on_own_loop(awaitable: Any, backend: str) -> Any:
    async def wait() -> Any:
        return await awaitable

    return run_on_own_loop(wait, backend)


def _settle_and_run_hooks(txn: Transaction, failed: bool, backend: str) -> None:
    _run_hooks_blocking(txn._settle(failed), backend)


def _current_backend() -> str:
    """The async library running in this thread ("asyncio" or "trio"), for loops started elsewhere."""
    import sniffio

    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "asyncio"


def _in_worker_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn(*args)` in a new thread (with the caller's context) and block until it returns; its
    exception is raised here. For sync code that an event loop is running under: the work itself
    (files, databases, user hooks, a loop for async hooks) must not run on the loop's thread."""
    context = context_for_another_thread()
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, context.run(fn, *args)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="asyncflow-transaction", daemon=False)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def transaction(key: str | None = None, *, isolation_level: IsolationLevel | str | None = None,
                commit_mode: CommitMode | str | None = None, overwrite: bool = False) -> Transaction:
    """Open a transaction: `with transaction():` or `async with transaction():`."""
    return Transaction(key, isolation_level=isolation_level, commit_mode=commit_mode, overwrite=overwrite)


def get_transaction() -> Transaction | None:
    return current_transaction.get()
