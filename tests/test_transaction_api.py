"""The Transaction object as Prefect users use it: state checks, commit modes (LAZY at the outermost by
default, EAGER at once, OFF rolls back), commit()/rollback() by hand, get_parent, stage(value, hooks),
a keyed transaction's record, isolation levels, and each task run's own transaction."""

from __future__ import annotations

import threading

import pytest

from asyncflow import flow, task
from asyncflow.testing import isolated_home, state_names
from asyncflow.transactions import (
    CommitMode,
    IsolationLevel,
    Transaction,
    TransactionState,
    get_transaction,
    transaction,
)


# -- states --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", list(TransactionState))
def test_each_state_check_says_exactly_its_state(state):
    txn = Transaction(state=state)
    checks = {"PENDING": txn.is_pending(), "ACTIVE": txn.is_active(), "STAGED": txn.is_staged(),
              "COMMITTED": txn.is_committed(), "ROLLED_BACK": txn.is_rolled_back()}
    assert [name for name, true in checks.items() if true] == [state.value]


def test_a_transaction_goes_pending_active_committed():
    txn = Transaction()
    assert txn.is_pending() and txn.commit_mode is None
    with txn:
        assert txn.is_active() and get_transaction() is txn
    assert txn.is_committed() and get_transaction() is None


def test_an_exception_rolls_back_and_resets_the_current_transaction():
    with pytest.raises(ValueError, match="boom"), transaction() as txn:
        raise ValueError("boom")
    assert txn.is_rolled_back() and not txn.is_committed() and get_transaction() is None


def test_reentering_an_open_transaction_is_an_error():
    with transaction() as txn, pytest.raises(RuntimeError, match="already open"):
        txn.__enter__()


# -- commit modes --------------------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True], ids=["with", "async-with"])
async def test_lazy_is_the_default_and_commits_with_the_outermost(anyio_backend, is_async):
    async with _maybe(transaction(), is_async) as outer:
        assert outer.commit_mode is CommitMode.LAZY and outer.isolation_level is IsolationLevel.READ_COMMITTED
        async with _maybe(transaction(), is_async) as inner:
            assert inner.get_parent() is outer and outer.get_parent() is None
        assert not inner.is_committed() and not outer.is_committed()
    assert outer.is_committed() and inner.is_committed()


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True], ids=["with", "async-with"])
async def test_eager_commits_when_its_block_ends_and_is_inherited(anyio_backend, is_async):
    async with _maybe(transaction(commit_mode=CommitMode.EAGER), is_async) as outer:
        async with _maybe(transaction(), is_async) as inherits:
            pass
        assert inherits.commit_mode is CommitMode.EAGER and inherits.is_committed()
        assert not outer.is_committed()
    assert outer.is_committed()
    async with _maybe(transaction(commit_mode="LAZY"), is_async) as lazy:
        async with _maybe(transaction(commit_mode="EAGER"), is_async) as eager:
            pass
        assert eager.is_committed() and not lazy.is_committed()


def test_off_rolls_back_unless_committed_by_hand():
    with transaction(commit_mode=CommitMode.OFF) as txn:
        pass
    assert txn.is_rolled_back()
    with transaction(commit_mode=CommitMode.OFF) as txn:
        assert txn.commit() is True
    assert txn.is_committed() and not txn.is_rolled_back()


def test_rollback_by_hand_rolls_back_every_enclosing_transaction():
    events = []
    with transaction() as outer:
        outer.stage(None, on_rollback_hooks=[lambda t: events.append("outer")])
        with transaction() as middle:
            with transaction() as inner:
                assert inner.rollback() is True and inner.rollback() is False
                assert inner.is_rolled_back() and not middle.is_rolled_back()
            assert middle.is_rolled_back()
    assert outer.is_rolled_back() and events == ["outer"]


def test_commit_by_hand_runs_the_hooks_once():
    events = []
    with transaction() as txn:
        txn.stage("value", on_commit_hooks=[lambda t: events.append(t.state)])
        assert txn.is_staged()
        assert txn.commit() is True and txn.commit() is False
        assert events == [TransactionState.COMMITTED]
    assert events == [TransactionState.COMMITTED]


def test_a_failing_commit_rolls_back():
    class Unwritable:
        def write(self, *args):
            raise OSError("disk full")

        def encode(self, value, expiration, name):
            return b""

    events = []
    with transaction() as txn:
        txn.key, txn.store = "k", Unwritable()
        txn.stage("value", on_rollback_hooks=[lambda t: events.append("undone")])
    assert txn.is_rolled_back() and events == ["undone"]


# -- hooks and values ----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_hooks_staged_by_hand_get_their_transaction_and_async_ones_are_awaited(anyio_backend):
    import anyio

    seen = []

    async def on_commit(txn):
        await anyio.lowlevel.checkpoint()
        seen.append(("commit", txn))

    async with transaction() as txn:
        txn.stage("v", on_commit_hooks=[on_commit, lambda t: seen.append(("sync", t))])
    assert seen == [("commit", txn), ("sync", txn)]

    with pytest.raises(RuntimeError):
        async with transaction() as failed:
            failed.stage("v", on_rollback_hooks=[on_commit])
            raise RuntimeError("later")
    assert seen[-1] == ("commit", failed)


def test_stage_rejects_hooks_that_are_not_a_list_of_callables():
    with transaction() as txn:
        with pytest.raises(TypeError, match="on_commit_hooks takes a list"):
            txn.stage(1, on_commit_hooks=print)
        with pytest.raises(TypeError, match="is not callable"):
            txn.stage(1, on_rollback_hooks=["undo"])


def test_get_parent_in_a_rollback_hook_after_the_block_ended():
    parents = []
    with pytest.raises(ValueError), transaction() as outer:
        with transaction() as first:
            first.stage("x", on_rollback_hooks=[lambda t: parents.append(t.get_parent())])
        with transaction():
            raise ValueError("second part fails")
    assert parents == [outer]


def test_values_set_on_a_parent_after_the_child_opened_are_visible_and_copied():
    parent, child = Transaction(), Transaction()
    parent.__enter__()
    child.__enter__()
    try:
        parent.set("list", [1, 2])
        child.get("list").append(3)
        assert child.get("list") == [1, 2]
        child.set("list", [1, 2, 3])
        assert child.get("list") == [1, 2, 3] and parent.get("list") == [1, 2]
    finally:
        child.__exit__(None, None, None)
        parent.__exit__(None, None, None)


def test_each_tasks_hooks_see_the_values_its_run_set(store):
    seen = {}

    @task
    def first():
        get_transaction().set("who", "first")

    @task
    def second():
        get_transaction().set("who", "second")

    @first.on_rollback
    def undo_first(txn):
        seen["first"] = txn.get("who")

    @second.on_rollback
    def undo_second(txn):
        seen["second"] = txn.get("who")

    @second.on_commit
    def never(txn):
        seen["committed"] = True

    @flow
    def f():
        with transaction() as txn:
            txn.set("shared", 1)
            first()
            second()
            raise ValueError("undo both")

    assert f(return_state=True).is_failed()
    assert seen == {"first": "first", "second": "second"}


@pytest.mark.anyio
async def test_an_async_tasks_commit_hook_sees_its_values_and_the_parents(anyio_backend, tmp_path):
    seen = []

    @task(persist_result=True)
    async def work(x):
        get_transaction().set("x", x)
        return x

    @work.on_commit
    def committed(txn):
        seen.append((txn.get("x"), txn.get("batch"), txn.is_committed(), txn.get_parent() is outer))

    with isolated_home(tmp_path / "home") as sqlite_store:
        async with transaction() as outer:
            outer.set("batch", "b1")
            assert [await work(1), await work(2)] == [1, 2]
            assert seen == []
        assert seen == [(1, "b1", True, True), (2, "b1", True, True)]
        sqlite_store.flush()
        assert sorted(state_names(sqlite_store, r.id) for r in sqlite_store.read_task_runs()) == [
            ["Pending", "Running", "Completed"]] * 2


def test_inside_a_task_get_transaction_is_the_runs_own_under_the_enclosing_one(store):
    @task
    def work():
        return get_transaction()

    with transaction(isolation_level=IsolationLevel.SERIALIZABLE) as outer:
        own = work()
    assert own is not outer and own.get_parent() is outer
    assert own.isolation_level is IsolationLevel.SERIALIZABLE and own.is_committed()


def test_a_task_hook_without_any_transaction_gets_the_runs_committed_transaction(store):
    got = []

    @task
    def work():
        get_transaction().set("n", 5)
        return 1

    work.on_commit(lambda txn: got.append((txn.get("n"), txn.is_committed(), txn.get_parent())))
    assert work() == 1 and got == [(5, True, None)]


# -- a keyed transaction's record ----------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True], ids=["with", "async-with"])
async def test_a_keyed_transaction_writes_what_it_staged_and_is_then_committed(anyio_backend, is_async, tmp_path):
    async with _maybe(transaction(key="report", store=tmp_path), is_async) as txn:
        assert txn.read() is None
        txn.stage({"rows": 3})
        assert not (tmp_path / "report").exists()
    assert txn.read().result == {"rows": 3}
    async with _maybe(transaction(key="report", store=tmp_path), is_async) as again:
        assert again.is_committed()  # the work is done: a second run can skip it
    async with _maybe(transaction(key="report", store=tmp_path, overwrite=True), is_async) as redo:
        assert redo.is_active()
        redo.stage({"rows": 4})
    assert redo.read().result == {"rows": 4}


def test_write_on_commit_false_commits_without_writing(tmp_path):
    with transaction(key="k", store=tmp_path, write_on_commit=False) as txn:
        txn.stage("value")
    assert txn.is_committed() and txn.read() is None


def test_a_keyed_transaction_defaults_to_the_result_storage(store):
    with transaction(key="default-place") as txn:
        txn.stage(42)
    assert txn.store is not None and txn.read().result == 42
    assert transaction().store is None


def test_serializable_keyed_transactions_take_turns_on_the_key(tmp_path):
    """The second writer waits for the first's lock; it then finds the record and does not write."""
    opened, done = threading.Event(), threading.Event()

    def first():
        with transaction(key="k", store=tmp_path, isolation_level="SERIALIZABLE") as txn:
            opened.set()
            done.wait(5)
            txn.stage("first")

    thread = threading.Thread(target=first)
    thread.start()
    assert opened.wait(5)
    threading.Timer(0.05, done.set).start()
    with transaction(key="k", store=tmp_path, isolation_level=IsolationLevel.SERIALIZABLE) as second:
        assert second.is_committed()
        second.stage("second")
    thread.join(5)
    assert second.read().result == "first"


def test_isolation_level_is_inherited_and_bad_values_are_rejected():
    with transaction(isolation_level="SERIALIZABLE") as outer, transaction() as inner:
        assert inner.isolation_level is outer.isolation_level is IsolationLevel.SERIALIZABLE
    with pytest.raises(ValueError):
        transaction(isolation_level="SNAPSHOT")
    with pytest.raises(TypeError, match="takes a result storage location"):
        transaction(key="k", store=3)


def _maybe(txn, is_async):
    """An async context manager over `with txn` or `async with txn`, so one test body covers both."""
    import contextlib

    @contextlib.asynccontextmanager
    async def wrapper():
        if is_async:
            async with txn as entered:
                yield entered
        else:
            with txn as entered:
                yield entered

    return wrapper()


# -- atransaction: Prefect's async form ----------------------------------------------------------------------
@pytest.mark.anyio
async def test_atransaction_commits_and_rolls_back_when_awaited(anyio_backend, tmp_path):
    from asyncflow.transactions import AsyncTransaction, atransaction

    events = []

    async def undo(txn):
        events.append(("undo", txn.is_rolled_back()))

    async with atransaction(key="a", store=tmp_path) as txn:
        assert isinstance(txn, AsyncTransaction) and txn.is_active()
        txn.stage("value", on_rollback_hooks=[undo], on_commit_hooks=[lambda t: events.append("commit")])
        assert await txn.rollback() is True and await txn.rollback() is False
    assert txn.is_rolled_back() and txn.read() is None and events == [("undo", True)]

    async with atransaction(key="b", store=tmp_path, commit_mode=CommitMode.OFF) as txn:
        txn.stage("kept", on_commit_hooks=[lambda t: events.append("commit")])
        assert await txn.commit() is True
    assert txn.is_committed() and txn.read().result == "kept" and events[-1] == "commit"
    with pytest.raises(TypeError, match="used with `async with`"), atransaction():
        pass
