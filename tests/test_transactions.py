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

    with pytest.raises(RuntimeError), transaction() as txn:
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

    with pytest.raises(KeyError), transaction():
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


class _Threads:
    """Spy (the review's r19): which thread each call ran on, the event loop's own or another."""

    def __init__(self):
        import threading

        self.loop_thread = threading.current_thread()
        self.calls = []

    def note(self, what):
        import threading

        self.calls.append((what, "loop thread" if threading.current_thread() is self.loop_thread else "worker thread"))


async def _suspend():
    """A checkpoint on whatever loop runs the hook: the hook must really be awaited, not just called."""
    import anyio.lowlevel

    await anyio.lowlevel.checkpoint()


def _spy_on_result_writes(monkeypatch, threads):
    from asyncflow import _results

    original = _results.ResultStore.write

    def write(self, *args, **kwargs):
        threads.note("write")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_results.ResultStore, "write", write)


@pytest.mark.anyio
async def test_sync_form_in_async_code_runs_commit_and_hooks_off_the_loop_and_awaits_async_hooks(
        anyio_backend, monkeypatch, capsys):
    """The review's r6 (B12): async hooks failed with "Already running ... in this thread" and were never
    awaited; sync hooks and the result writes ran on the event-loop thread."""
    import sniffio

    threads = _Threads()
    _spy_on_result_writes(monkeypatch, threads)

    async def async_commit(txn):
        await _suspend()
        threads.note(("async on_commit", sniffio.current_async_library(), txn.state.value))

    def sync_commit(txn):
        threads.note(("sync on_commit", txn.state.value))

    @task(on_commit=[async_commit, sync_commit], persist_result=True)
    async def step(x):
        return x

    @flow
    async def f():
        with transaction():
            await step(1)
            await step(2)
            assert threads.calls == []  # staged, not written
        return list(threads.calls)  # __exit__ waited for the commit and its hooks

    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    seen = await f()
    assert seen == [("write", "worker thread")] * 2 + [
        (("async on_commit", backend, "COMMITTED"), "worker thread"),
        (("sync on_commit", "COMMITTED"), "worker thread"),
    ] * 2
    err = capsys.readouterr().err
    assert "Already running" not in err and "An error was encountered" not in err


@pytest.mark.anyio
async def test_sync_form_in_async_code_runs_rollback_hooks_off_the_loop_and_records_the_rollback(
        anyio_backend, tmp_path):
    """B12 on the failure path, with a real SQLite store: rollback hooks (async ones awaited) run newest
    first in a worker thread, nothing is written, and the rolled-back run's history says so."""
    import sniffio

    from asyncflow.testing import isolated_home, state_names

    threads = _Threads()
    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]

    async def undo_async(txn):
        await _suspend()
        threads.note(("undo async", sniffio.current_async_library()))

    def undo_sync(txn):
        threads.note("undo sync")

    @task(result_storage=tmp_path / "results", cache_key_fn=lambda ctx, p: f"k-{p['x']}")
    async def step(x):
        return x

    @flow
    async def f():
        with transaction():
            await step.with_options(on_rollback=[undo_sync])(1)
            await step.with_options(on_rollback=[undo_async])(2)
            raise RuntimeError("later failure")

    with isolated_home(tmp_path / "home") as store:
        state = await f(return_state=True)
        assert state.is_failed()
        assert threads.calls == [(("undo async", backend), "worker thread"), ("undo sync", "worker thread")]
        assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("k-*"))
        store.flush()
        histories = sorted(state_names(store, run.id) for run in store.read_task_runs())
        assert histories == [["Pending", "Running", "Completed", "RolledBack"]] * 2


@pytest.mark.anyio
async def test_async_form_writes_staged_results_and_runs_sync_hooks_in_worker_threads(anyio_backend, monkeypatch):
    """The review's r19 (B13): `async with transaction()` wrote every staged result on the loop thread."""
    threads = _Threads()
    _spy_on_result_writes(monkeypatch, threads)
    awaited = []

    async def async_commit(txn):
        await _suspend()
        awaited.append(txn.state.value)

    def sync_commit(txn):
        threads.note("sync on_commit")

    @task(persist_result=True, on_commit=[sync_commit, async_commit])
    async def step(x):
        return x

    @flow
    async def f():
        await step(0)  # outside a transaction: written in a worker thread already
        async with transaction():
            for i in range(1, 4):
                await step(i)  # staged, written at commit

    await f()
    assert threads.calls == [("write", "worker thread"), ("sync on_commit", "worker thread")] + [
        ("write", "worker thread")] * 3 + [("sync on_commit", "worker thread")] * 3
    assert awaited == ["COMMITTED"] * 4


@pytest.mark.anyio
async def test_async_form_rollback_runs_sync_hooks_in_a_worker_thread(anyio_backend):
    threads = _Threads()
    events = []

    async def undo_async(txn):
        await _suspend()
        events.append("undo async")

    def undo_sync(txn):
        threads.note("undo sync")
        events.append("undo sync")

    @task(on_rollback=[undo_sync, undo_async])
    async def step():
        return 1

    with pytest.raises(KeyError):
        async with transaction() as txn:
            await step()
            raise KeyError("x")
    assert txn.state is TransactionState.ROLLED_BACK
    assert events == ["undo async", "undo sync"]  # newest first
    assert threads.calls == [("undo sync", "worker thread")]
