"""Caching decisions for one task run: the key, where its result lives, whether to serve a hit,
and what to write (now, or when the enclosing transaction commits)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

from .._clock import get_clock
from .._context import current_transaction
from .._logging import WARNING, log
from .._states import State, StateDetails, StateType
from .._store import get_store
from .bridge import Bridge

if TYPE_CHECKING:
    from .. import _caching, _results
    from .._transactions import Transaction
else:  # imported by the first run that persists its result (`_load`): not on asyncflow's import path
    _caching = _results = None


def _load() -> None:
    global _caching, _results
    from .. import _caching, _results


class CachePlan:
    __slots__ = ("call", "store", "key", "lock", "refresh")

    def __init__(self, call: Any, store: _results.ResultStore, key: str,
                 lock: _results.KeyLock | _results.ManagedLock | None,
                 refresh: bool) -> None:
        self.call = call
        self.store = store
        self.key = key
        self.lock = lock
        self.refresh = refresh

    def _details(self, expires: float | None = None) -> StateDetails:
        run = self.call.run
        return StateDetails(flow_run_id=run.flow_run_id, task_run_id=run.id, cache_key=self.key,
                            cache_expiration=(dt.datetime.fromtimestamp(expires, tz=dt.timezone.utc)
                                              if expires else None))

    async def lookup(self, bridge: Bridge) -> State[Any] | None:
        """A `Cached` state if an unexpired record exists (and the run does not refresh), else None."""
        if self.lock is not None:  # SERIALIZABLE: one run per key computes; the others then hit
            await bridge.lock(self.lock)
        if self.refresh:
            return None
        value = self.store.memory_get(self.key)
        if value is _results.MISSING:
            value, warning = await bridge.io(self.store.read, self.key)
            if warning is not None:
                log(WARNING, self.call.label, f"Cache miss: {warning}.", self.call.ids)
            if value is _results.MISSING:
                return None
        self.release()
        return State(StateType.COMPLETED, "Cached", None, value, self._details())

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _result_store(task: Any, flow: Any, key_storage: Any = None) -> _results.ResultStore:
    """The task's result store (its cache policy's key_storage, else its options, else its flow's),
    reused while the location is the same."""
    options = task.caching
    storage = key_storage if key_storage is not None else options.storage if options.storage is not None else (
        flow.result_storage if flow is not None else None)
    serializer = options.serializer if options.serializer is not None else (
        flow.result_serializer if flow is not None else None)
    root = _results.storage_root(storage)
    cached = task.__dict__.get("_result_store")
    if cached is not None and cached.root == root and cached.serializer is _results.get_serializer(serializer):
        return cached
    store = _results.ResultStore(root, _results.get_serializer(serializer), task.cache_result_in_memory)
    task.__dict__["_result_store"] = store
    return store


def _persist(task: Any, flow: Any) -> bool:
    options = task.caching
    if options.run_persist is not None:  # the task's persist_result, else the tasks' default setting
        return options.run_persist
    if options.explicit:
        return True
    if flow is not None and flow.persist_result is not None:
        return flow.persist_result
    return options.persist_by_default


async def plan(call: Any, ctx: Any, parameters: dict[str, Any], bridge: Bridge) -> CachePlan | None:
    task = call.task
    options = task.caching
    flow_ctx = ctx.flow_context
    flow = flow_ctx.flow if flow_ctx is not None else None
    if not _persist(task, flow):
        return None
    if _caching is None:
        _load()
    policy = options.policy  # resolved at decoration (None: no key, unless a result_storage_key names one)
    if policy is None and options.storage_key is None:
        return None
    try:
        if options.storage_key is not None:
            from ..runtime import flow_run, task_run

            key: str | None = options.storage_key.format(parameters=parameters, flow_run=flow_run, task_run=task_run)
        elif type(policy) is _caching.CacheKeyFnPolicy and policy.cache_key_fn is not None:  # the common case
            key = policy.cache_key_fn(ctx, parameters)
            key = None if key is None else str(key)
        else:
            key = policy.compute_key(ctx, parameters, flow_ctx.parameters if flow_ctx is not None else None)
    except _caching.UnhashableKeyPart as exc:
        fix = (f"exclude it from the key (cache_policy=INPUTS - {exc.what.split(chr(39))[1]!r})"
               if exc.what.startswith("parameter") else "give the task a cache_key_fn")
        log(WARNING, call.label, f"Caching is disabled for this run: {exc}. To cache this task, {fix}.", call.ids)
        return None
    except Exception as exc:
        log(WARNING, call.label, f"The cache key could not be computed ({exc!r}); caching is disabled for this run.",
            call.ids)
        return None
    if key is None:
        return None
    settings = options.settings  # the policy as given: its storage, isolation level and lock manager
    store = _result_store(task, flow, settings.key_storage if settings is not None else None)
    txn = current_transaction.get()
    serializable = (settings is not None and settings.isolation_level == "SERIALIZABLE") or (
        txn is not None and txn.serializable)
    lock: _results.KeyLock | _results.ManagedLock | None = None
    if serializable:
        manager = settings.lock_manager if settings is not None else None
        lock = _results.ManagedLock(manager, key) if manager is not None else store.key_lock(key)
    return CachePlan(call, store, key, lock, options.refresh)


def open_run_transaction(task: Any) -> Transaction | None:
    """The run's own transaction (as in Prefect, each task run has one): opened when a transaction
    encloses the run or the task has commit/rollback hooks, else None (no cost for plain runs). Inside
    the run `get_transaction()` is it; its hooks get it, so they see the values the run set on it."""
    if current_transaction.get() is None and not (task.on_commit or task.on_rollback):
        return None
    from .._transactions import Transaction  # (imported by the first transaction: off the import path)

    own = Transaction()
    own._prepare()  # (no key and no store: no lock, no read)
    return own


async def close_run_transaction(own: Transaction, bridge: Bridge) -> None:
    """The run ended: its transaction commits (at the top, or EAGER) or hands its work to the
    enclosing one (LAZY); the hooks that are due run."""
    own._leave()
    if own._settles_in_place(False):
        hooks = own._settle(False)
    else:
        hooks = await bridge.io(own._settle, False)
    if hooks:
        from .._transactions import run_transaction_hooks

        await run_transaction_hooks(hooks, bridge.blocking)


def abandon_run_transaction(own: Transaction) -> None:
    """The run crashed or was cancelled: its transaction ends with nothing staged and no hooks."""
    own._leave()
    from .._transactions import TransactionState

    own._open = False
    own.state = TransactionState.ROLLED_BACK


async def completed(call: Any, plan: CachePlan | None, state: State[Any], bridge: Bridge) -> State[Any]:
    """After a completed attempt: write the result, or stage it in the run's own transaction when an
    enclosing transaction will commit it; stage the task's commit and rollback hooks there."""
    task = call.task
    own = current_transaction.get()  # the run's own transaction (or None: no transaction, no hooks)
    in_txn = own is not None and own._open_parent() is not None
    write = None
    if plan is not None:
        expiration = task.caching.expiration
        expires = get_clock().time() + expiration.total_seconds() if expiration is not None else None
        try:
            data = plan.store.encode(state.data, expires, task.name)
        except _results.SerializationError as exc:
            plan.release()
            return State(StateType.FAILED, "Failed", str(exc), exc, call.details)
        write = functools.partial(plan.store.write, plan.key, state.data, data, expires)
        state = State(state.type, state.name, state.message, state.data, plan._details(expires), state.ts)
    if own is not None and plan is not None:
        own.key = plan.key
    if in_txn:
        assert own is not None
        own._stage_run(write, list(task.on_commit), list(task.on_rollback),
                       rolled_back=functools.partial(_record_rolled_back, call),
                       release=plan.release if plan is not None else None)
        return state
    if write is not None:
        assert plan is not None
        try:
            await bridge.io(write)
        except _results.ResultWriteError as exc:  # a failed attempt (retries apply); the key lock stays
            return State(StateType.FAILED, "Failed", str(exc), exc, call.details)  # held until the run ends
        except BaseException:
            plan.release()
            raise
        plan.release()
    if own is not None:  # written already: its transaction commits when the run ends, and calls these
        own._stage_run(None, list(task.on_commit), list(task.on_rollback), None, None)
    return state


def _nothing() -> None:
    pass


def _record_rolled_back(call: Any) -> None:
    """The transaction this completed run belonged to rolled back: its history says so."""
    run = call.run
    state: State[Any] = State(StateType.COMPLETED, "RolledBack",
                              "Its transaction rolled back; its result was not written.", None, run.state.state_details)
    run.state = state
    get_store().record_state(run.id, state)
