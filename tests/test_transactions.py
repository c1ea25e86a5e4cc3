"""Transactions (SPEC §5): results are written when the block succeeds; on failure the rollback
hooks run (newest first) and nothing is written; commit hooks run after a commit."""

import pytest

from asyncflow import flow, task
from asyncflow.transactions import CommitMode, IsolationLevel, TransactionState, get_transaction, transaction


def _recorder():
    events = []

    def make(name):
        def hook(txn):
            events.append(name)

        hook.__name__ = name
        return hook

    return events, make


def test_results_are_written_when_the_block_commits(store, tmp_path):
    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "txn-key")
    def work():
        return 1

    with transaction() as txn:
        work()
        assert not (tmp_path / "txn-key").exists()  # staged, not written
        assert txn.state is TransactionState.ACTIVE
    assert (tmp_path / "txn-key").exists() and txn.state is TransactionState.COMMITTED


def test_failure_runs_rollback_hooks_newest_first_and_writes_nothing(store, tmp_path):
    events, make = _recorder()

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: f"k-{p['name']}",
          on_commit=[make("commit")])
    def step(name):
        return name

    first = step.with_options(on_rollback=[make("undo first")])
    second = step.with_options(on_rollback=[make("undo second")])

    with pytest.raises(RuntimeError):
        with transaction() as txn:
            first("a")
            second("b")
            raise RuntimeError("later failure")
    assert events == ["undo second", "undo first"]
    assert txn.state is TransactionState.ROLLED_BACK
    assert not list(tmp_path.glob("k-*"))
    histories = [[s.name for s in store.read_states(r.id)] for r in store.read_task_runs()]
    assert histories == [["Pending", "Running", "Completed", "RolledBack"]] * 2


def test_a_failing_task_rolls_back_earlier_ones_but_not_itself(store):
    events, make = _recorder()

    @task(on_rollback=[make("undo ok")])
    def ok():
        return 1

    @task(on_rollback=[make("undo bad")])
    def bad():
        raise ValueError("nope")

    @flow
    def f():
        with transaction():
            ok()
            bad()

    assert f(return_state=True).is_failed()
    assert events == ["undo ok"]


def test_commit_hooks_run_after_commit_and_never_on_rollback(store):
    events, make = _recorder()

    @task(on_commit=[make("committed")])
    def work():
        return 1

    with transaction():
        work()
        assert events == []
    assert events == ["committed"]

    with pytest.raises(KeyError):
        with transaction():
            work()
            raise KeyError("x")
    assert events == ["committed"]


def test_commit_hook_without_a_transaction_runs_when_the_task_completes(store):
    events, make = _recorder()

    @task
    def work():
        return 1

    work.on_commit(make("decorated"))
    work()
    assert events == ["decorated"]


def test_nested_transactions_commit_with_the_outermost_unless_eager(store, tmp_path):
    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: p["key"])
    def work(key):
        return key

    with transaction():
        with transaction():
            work("lazy")
        assert not (tmp_path / "lazy").exists()
        with transaction(commit_mode=CommitMode.EAGER):
            work("eager")
        assert (tmp_path / "eager").exists()
    assert (tmp_path / "lazy").exists()


def test_values_are_visible_to_nested_transactions_and_copied():
    with transaction() as outer:
        outer.set("config", {"retries": 1})
        with transaction() as inner:
            value = inner.get("config")
            value["retries"] = 99
            assert outer.get("config") == {"retries": 1}
            outer.set("late", 2)
            assert inner.get("late") == 2
            assert inner.get("missing", "default") == "default"
            with pytest.raises(ValueError, match="unknown key 'missing'"):
                inner.get("missing")
            assert get_transaction() is inner
    assert get_transaction() is None


@pytest.mark.anyio
async def test_async_transactions_and_async_hooks(store):
    events = []

    async def committed(txn):
        events.append(("commit", txn.state.value))

    @task(on_commit=[committed])
    async def work():
        return 1

    async with transaction(isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        await work()
        assert txn.serializable
    assert events == [("commit", "COMMITTED")]


def test_a_failing_commit_hook_is_logged_and_the_others_run(store, capsys):
    events, make = _recorder()

    def broken(txn):
        raise RuntimeError("hook bug")

    @task(on_commit=[broken, make("second")])
    def work():
        return 1

    with transaction():
        work()
    assert events == ["second"]
    assert "An error was encountered while running commit hook 'broken'" in capsys.readouterr().err
