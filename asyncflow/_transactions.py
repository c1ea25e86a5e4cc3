"""Transactions: group task runs so that their results are written together, or not at all.

    with transaction():
        a = load()          # results are staged, not written
        b = save(a)
    # the block succeeded: staged results are written, then on_commit hooks run
    # had it raised: on_rollback hooks of the runs that completed run (newest first), nothing is written

Nested transactions hand their work to the outermost one (commit mode LAZY, the default) unless
they commit eagerly (EAGER). Values set with `txn.set(name, value)` are visible to nested ones.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from ._engine.common import drive_sync, maybe_await
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

    def _end(self, failed: bool) -> list[Callable[..., Any]]:
        """Returns the hooks still to call (called by the sync or async exit)."""
        if self._token is not None:
            current_transaction.reset(self._token)
            self._token = None
        if failed:
            return self._rollback()
        if self.commit_mode is CommitMode.OFF:
            return self._rollback()
        if self.parent is not None and self.parent.active and self.commit_mode is CommitMode.LAZY:
            self.state = TransactionState.STAGED
            self.parent.children.append(self)
            return []
        return self._commit()

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
        drive_sync(run_transaction_hooks(self._end(exc_type is not None), sync=True))

    async def __aenter__(self) -> Transaction:
        self.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await run_transaction_hooks(self._end(exc_type is not None), sync=False)

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
    In sync mode (driven with `drive_sync`) an async hook runs on a short-lived loop of its own."""
    for kind, hook, txn in hooks:
        try:
            await maybe_await(_call(kind, hook, txn), sync)
        except Exception as exc:
            _report(kind, hook, exc)
        else:
            _report(kind, hook, None)


def transaction(key: str | None = None, *, isolation_level: IsolationLevel | str | None = None,
                commit_mode: CommitMode | str | None = None, overwrite: bool = False) -> Transaction:
    """Open a transaction: `with transaction():` or `async with transaction():`."""
    return Transaction(key, isolation_level=isolation_level, commit_mode=commit_mode, overwrite=overwrite)


def get_transaction() -> Transaction | None:
    return current_transaction.get()
