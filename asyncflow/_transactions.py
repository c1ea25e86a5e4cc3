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
from contextvars import Token
from typing import Any, cast

import anyio
import anyio.to_thread

from ._context import current_transaction as current_transaction  # (lives with the other contextvars)
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


class TransactionRecord:
    """What `Transaction.read()` returns: the record stored under the transaction's key."""

    __slots__ = ("key", "result")

    def __init__(self, key: str, result: Any) -> None:
        self.key = key
        self.result = result

    def __repr__(self) -> str:
        return f"TransactionRecord(key={self.key!r}, result={self.result!r})"


def _as_store(store: Any) -> Any:
    """`store=`: a result store (`asyncflow._results.ResultStore`), or a directory / URL for one."""
    from . import _results

    if store is None or isinstance(store, _results.ResultStore):
        return store
    try:
        return _results.ResultStore(_results.storage_root(store), _results.get_serializer(None))
    except TypeError:
        raise TypeError(f"transaction(store=...) takes a result storage location (a directory or a postgresql:// "
                        f"URL); got {store!r}.") from None


def _check_hooks(hooks: Any, option: str) -> list[Callable[..., Any]]:
    if hooks is None:
        return []
    if callable(hooks) or isinstance(hooks, (str, bytes)) or not hasattr(hooks, "__iter__"):
        raise TypeError(f"{option} takes a list of hooks (callables taking the transaction); got {hooks!r}.")
    hooks = list(hooks)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"{option} takes a list of callables; {hook!r} is not callable.")
    return hooks


class Transaction:
    """A unit of work whose writes happen at commit; `transaction()` opens one.

    The commit mode (inherited from the enclosing transaction, LAZY at the top) says when it commits:
    LAZY when the outermost transaction commits, EAGER as soon as its block ends, OFF never (it rolls
    back unless committed by hand). Values set with `set` are visible to nested transactions; hooks get
    the transaction they were staged on."""

    def __init__(self, key: str | None = None, *, store: Any = None, commit_mode: CommitMode | str | None = None,
                 isolation_level: IsolationLevel | str | None = None, overwrite: bool = False,
                 write_on_commit: bool = True, state: TransactionState | str = TransactionState.PENDING) -> None:
        if key is not None and not isinstance(key, str):
            raise TypeError(f"A transaction's key must be a str; got {key!r}.")
        self.key = key
        self.store = _as_store(store)
        self.isolation_level = IsolationLevel(isolation_level) if isolation_level is not None else None
        self.commit_mode = CommitMode(commit_mode) if commit_mode is not None else None
        self.overwrite = overwrite
        self.write_on_commit = write_on_commit
        self.state = TransactionState(state)
        self.parent: Transaction | None = None
        self.children: list[Transaction] = []
        self.on_commit_hooks: list[Callable[..., Any]] = []
        self.on_rollback_hooks: list[Callable[..., Any]] = []
        self._staged_value: Any = _NOTSET
        self._writes: list[Callable[[], Any]] = []  # task runs' results, staged by the engine
        self._on_rollback_runs: list[Callable[[], Any]] = []
        self._finally: list[Callable[[], Any]] = []
        self._values: dict[str, Any] = {}
        self._token: Token[Transaction | None] | None = None
        self._open = False  # inside its block: nested transactions hand their work to it

    # -- values ------------------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        self._values[name] = copy.deepcopy(value)

    def get(self, name: str, default: Any = _NOTSET) -> Any:
        """The value set here, else in the nearest enclosing transaction (a copy: set it to change it)."""
        txn: Transaction | None = self
        while txn is not None:
            if name in txn._values:
                return copy.deepcopy(txn._values[name])
            txn = txn.parent
        if default is _NOTSET:
            raise ValueError(f"Could not retrieve value for unknown key {name!r}: set it with txn.set({name!r}, ...) "
                             f"or pass a default.")
        return default

    # -- state -----------------------------------------------------------------------------------------
    def is_pending(self) -> bool:
        return self.state is TransactionState.PENDING

    def is_active(self) -> bool:
        return self.state is TransactionState.ACTIVE

    def is_staged(self) -> bool:
        return self.state is TransactionState.STAGED

    def is_committed(self) -> bool:
        return self.state is TransactionState.COMMITTED

    def is_rolled_back(self) -> bool:
        return self.state is TransactionState.ROLLED_BACK

    def get_parent(self) -> Transaction | None:
        """The transaction this one was opened in (None at the top)."""
        return self.parent

    @classmethod
    def get_active(cls) -> Transaction | None:
        return current_transaction.get()

    def add_child(self, transaction: Transaction) -> None:
        self.children.append(transaction)

    @property
    def serializable(self) -> bool:
        txn: Transaction | None = self
        while txn is not None:
            if txn.isolation_level is IsolationLevel.SERIALIZABLE:
                return True
            txn = txn.parent
        return False

    # -- staging -----------------------------------------------------------------------------------------
    def stage(self, value: Any, on_rollback_hooks: list[Callable[..., Any]] | None = None,
              on_commit_hooks: list[Callable[..., Any]] | None = None) -> None:
        """Stage `value` (written under the key at commit, if the transaction has a key and a store) and
        hooks to call, with this transaction, when it commits or rolls back."""
        rollback = _check_hooks(on_rollback_hooks, "on_rollback_hooks")
        commit = _check_hooks(on_commit_hooks, "on_commit_hooks")
        if self.state is TransactionState.COMMITTED:
            return
        self._staged_value = value
        self.on_rollback_hooks += rollback
        self.on_commit_hooks += commit
        self.state = TransactionState.STAGED

    def _stage_run(self, write: Callable[[], Any] | None, on_commit: list[Callable[..., Any]],
                   on_rollback: list[Callable[..., Any]], rolled_back: Callable[[], Any] | None,
                   release: Callable[[], Any] | None) -> None:
        """The engine stages a completed task run: its result's write, its hooks, what to record if it
        is rolled back, and the key lock to release at the end."""
        if write is not None:
            self._writes.append(write)
        self.on_commit_hooks += on_commit
        self.on_rollback_hooks += on_rollback
        if rolled_back is not None:
            self._on_rollback_runs.append(rolled_back)
        if release is not None:
            self._finally.append(release)
        self.state = TransactionState.STAGED

    def read(self) -> TransactionRecord | None:
        """The record stored under the key (None if there is none, or no key or store)."""
        from . import _results

        if self.store is None or self.key is None:
            return None
        value, _warning = self.store.read(self.key)
        return None if value is _results.MISSING else TransactionRecord(self.key, value)

    # -- lifecycle -------------------------------------------------------------------------------------
    def _prepare(self) -> Any:
        """Enter: inherit what was not set, become current. Returns the key lock to take, if any."""
        if self._token is not None:
            raise RuntimeError("This transaction is already open; open a new transaction() instead of re-entering it.")
        self.parent = current_transaction.get()
        if self.commit_mode is None:
            self.commit_mode = self.parent.commit_mode if self.parent is not None else CommitMode.LAZY
        if self.isolation_level is None:
            self.isolation_level = self.parent.isolation_level if self.parent is not None \
                else IsolationLevel.READ_COMMITTED
        self.state = TransactionState.ACTIVE
        self._open = True
        self._token = current_transaction.set(self)
        if self.store is not None and self.key is not None and self.isolation_level is IsolationLevel.SERIALIZABLE:
            lock = self.store.key_lock(self.key)
            self._finally.append(lock.release)
            return lock
        return None

    def _check_existing(self) -> None:
        """A record already stored under the key (and not `overwrite`): the work is done, committed."""
        if not self.overwrite and self.read() is not None:
            self.state = TransactionState.COMMITTED

    def begin(self) -> None:
        lock = self._prepare()
        if lock is not None:
            lock.acquire()
        if self.store is not None and self.key is not None:
            self._check_existing()

    def _leave(self) -> None:
        """Make the parent current again (in the caller's context, before any hand-off to a thread)."""
        if self._token is not None:
            current_transaction.reset(self._token)
            self._token = None

    def _open_parent(self) -> Transaction | None:
        parent = self.parent
        return parent if parent is not None and parent._open else None

    def _settle(self, failed: bool) -> list[Any]:
        """The block ended: commit, roll back or hand the work to the enclosing transaction; returns the
        hooks still to call. Commits write files and rollbacks record states: callers in async code run
        this in a worker thread."""
        self._open = False
        parent = self._open_parent()
        hooks: list[Any] = []
        if failed:
            hooks += self._rollback()
        else:
            if self.commit_mode is CommitMode.EAGER:
                hooks += self._commit()
            if parent is None:  # nobody left to take responsibility
                hooks += self._rollback() if self.commit_mode is CommitMode.OFF else self._commit()
        if parent is not None:
            parent.children.append(self)
            if self.state is TransactionState.ROLLED_BACK:
                hooks += parent._rollback()  # a rolled-back part rolls back the whole
        return hooks

    def _has_work(self) -> bool:
        return bool(self._writes or self.children or self.on_commit_hooks or self.on_rollback_hooks
                    or self._on_rollback_runs or self._finally or self._staged_value is not _NOTSET)

    def _settles_in_place(self, failed: bool) -> bool:
        """True when settling does no I/O and calls nothing (a lazy part handing over, or nothing to do):
        then there is no reason to hop to a worker thread."""
        if self._open_parent() is not None:
            if failed or self.state is TransactionState.ROLLED_BACK:
                return False  # rolls the parent back
            return self.commit_mode is not CommitMode.EAGER or not self._has_work()
        return not self._has_work()

    def _commit(self) -> list[Any]:
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            self._release()
            return []
        hooks: list[Any] = []
        try:
            for child in self.children:
                hooks.extend(child._commit())
            for write in self._writes:
                write()
            if self.store is not None and self.key is not None and self.write_on_commit \
                    and self._staged_value is not _NOTSET:
                value = self._staged_value
                self.store.write(self.key, value, self.store.encode(value, None, f"transaction {self.key!r}"), None)
        except Exception as exc:
            log(ERROR, "asyncflow.transactions", f"An error was encountered while committing transaction "
                f"{self.key!r}: {exc!r}; rolling back", exc_info=exc)
            return self._rollback()
        self.state = TransactionState.COMMITTED
        self._release()
        return hooks + [("commit", hook, self) for hook in self.on_commit_hooks]

    def _rollback(self) -> list[Any]:
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return []
        hooks: list[Any] = [("rollback", hook, self) for hook in reversed(self.on_rollback_hooks)]
        self.state = TransactionState.ROLLED_BACK
        for child in reversed(self.children):
            hooks.extend(child._rollback())
        for record in self._on_rollback_runs:
            record()
        self._release()
        return hooks

    def _release(self) -> None:
        for release in self._finally:
            release()
        self._finally.clear()

    # -- by hand -----------------------------------------------------------------------------------------
    def commit(self) -> bool:
        """Commit now (children, staged writes, then the commit hooks); False if it had already
        committed or rolled back, or the commit failed and rolled back."""
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return False
        _now(self._commit)
        return self.state is TransactionState.COMMITTED

    def rollback(self) -> bool:
        """Roll back now (rollback hooks newest first, then the children's); False if it had already
        committed or rolled back."""
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return False
        _now(self._rollback)
        return True

    # -- context managers --------------------------------------------------------------------------
    def __enter__(self) -> Transaction:
        lock = self._prepare()
        if lock is not None or (self.store is not None and self.key is not None):
            if in_async_context():  # never wait for a lock or read a file on the loop thread
                _in_worker_thread(self._finish_begin, lock)
            else:
                self._finish_begin(lock)
        return self

    def _finish_begin(self, lock: Any) -> None:
        try:
            if lock is not None:
                lock.acquire()
            if self.store is not None and self.key is not None:
                self._check_existing()
        except BaseException:
            self._leave()
            self._open = False
            raise

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
        lock = self._prepare()
        try:
            if lock is not None:
                await lock.acquire_async()
            if self.store is not None and self.key is not None:
                await anyio.to_thread.run_sync(self._check_existing)
        except BaseException:
            self._leave()
            self._open = False
            raise
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


class AsyncTransaction(Transaction):
    """`atransaction()`: a transaction for `async with` whose `commit()` and `rollback()` are awaited
    (the writes in a worker thread, sync hooks in worker threads, async hooks on this loop)."""

    def __enter__(self) -> Transaction:
        raise TypeError("An AsyncTransaction (atransaction()) is used with `async with`; for `with`, open "
                        "transaction() instead.")

    async def commit(self) -> bool:  # type: ignore[override]
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return False
        await _run_hooks_async(await anyio.to_thread.run_sync(self._commit))
        return self.state is TransactionState.COMMITTED

    async def rollback(self) -> bool:  # type: ignore[override]
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return False
        await _run_hooks_async(await anyio.to_thread.run_sync(self._rollback))
        return True


def _now(settle: Callable[[], list[Any]]) -> None:
    """`commit()` / `rollback()` by hand: the work and the hooks, off the loop thread if one runs here."""
    if in_async_context():
        _in_worker_thread(lambda backend: _run_hooks_blocking(settle(), backend), _current_backend())
    else:
        _run_hooks_blocking(settle(), "asyncio")


def _hook_name(hook: Any) -> str:
    return cast(str, getattr(hook, "__name__", None) or getattr(getattr(hook, "func", None), "__name__", repr(hook)))


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


def _default_store(key: str | None, store: Any) -> Any:
    """A keyed transaction without a store writes to the default result storage."""
    if key is None or store is not None:
        return store
    from . import _results

    return _results.ResultStore(_results.storage_root(None), _results.get_serializer(None))


def transaction(key: str | None = None, *, store: Any = None, commit_mode: CommitMode | str | None = None,
                isolation_level: IsolationLevel | str | None = None, overwrite: bool = False,
                write_on_commit: bool = True) -> Transaction:
    """Open a transaction: `with transaction():` or `async with transaction():`. With a `key`, what is
    staged is written under it at commit, in `store` (default: the default result storage), and a
    transaction whose key already has a record starts out committed (unless `overwrite`)."""
    return Transaction(key, store=_default_store(key, store), commit_mode=commit_mode, isolation_level=isolation_level,
                       overwrite=overwrite, write_on_commit=write_on_commit)


def atransaction(key: str | None = None, *, store: Any = None, commit_mode: CommitMode | str | None = None,
                 isolation_level: IsolationLevel | str | None = None, overwrite: bool = False,
                 write_on_commit: bool = True) -> AsyncTransaction:
    """Prefect's async form: `async with atransaction() as txn:` with `await txn.commit()` and
    `await txn.rollback()`. (`async with transaction():` works too; its commit() and rollback() are
    plain calls.)"""
    return AsyncTransaction(key, store=_default_store(key, store), commit_mode=commit_mode,
                            isolation_level=isolation_level, overwrite=overwrite, write_on_commit=write_on_commit)


def get_transaction() -> Transaction | None:
    return current_transaction.get()
