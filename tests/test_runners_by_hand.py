"""A task runner used by hand, outside a flow (Prefect's `with ThreadPoolTaskRunner() as r: r.submit(task,
parameters)`): submit and map return futures, the block owns the runs and waits for them, the runs are
recorded in the store like any task run."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from asyncflow import allow_failure, tags, task, unmapped
from asyncflow.futures import TaskRunFuture
from asyncflow.runtime import task_run as current_task_run
from asyncflow.task_runners import ProcessPoolTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner
from asyncflow.testing import isolated_home, state_names


@task
def pair(a, b):
    return a, b


@task
async def pair_async(a, b):
    await anyio.lowlevel.checkpoint()
    return a, b


@task
def current_tags():
    return set(current_task_run.tags)


@task
def fails():
    raise ValueError("broken")


@task
def thread_id():
    return threading.get_ident()


@pytest.mark.parametrize("fn", [pair, pair_async], ids=["sync", "async"])
def test_a_runner_used_by_hand_submits_a_task_and_returns_its_future(fn):
    with isolated_home() as store:
        with ThreadPoolTaskRunner(max_workers=2) as runner:
            future = runner.submit(fn, {"a": 1, "b": 2})
            assert isinstance(future, TaskRunFuture)
            assert future.result() == (1, 2)
        store.flush()
        run = store.read_task_run(future.task_run_id)
        assert run.task_name == fn.name and run.flow_run_id is None
        assert state_names(store, run.id) == ["Pending", "Running", "Completed"]


@pytest.mark.parametrize("fn", [pair, pair_async], ids=["sync", "async"])
def test_a_runner_used_by_hand_maps_a_task_over_the_iterables_in_its_parameters(fn):
    with ThreadPoolTaskRunner() as runner:
        futures = runner.map(fn, {"a": [1, 2, 3], "b": unmapped([0])})
        assert all(isinstance(f, TaskRunFuture) for f in futures)
        assert futures.result() == [(1, [0]), (2, [0]), (3, [0])]
        assert runner.map(fn, {"a": [1, 2], "b": [3, 4]}).result() == [(1, 3), (2, 4)]


def test_futures_given_to_a_runner_used_by_hand_are_resolved_and_mapped_over():
    with ThreadPoolTaskRunner() as runner:
        upstream = runner.submit(pair, {"a": 1, "b": 2})
        assert runner.submit(pair, {"a": upstream, "b": 3}).result() == ((1, 2), 3)
        assert runner.map(pair, {"a": upstream, "b": upstream}).result() == [(1, 1), (2, 2)]


def test_runs_submitted_by_hand_see_the_tags_of_the_block_they_were_submitted_in():
    with tags("outer"), ThreadPoolTaskRunner() as runner:
        with tags("inner"):
            future = runner.submit(current_tags, {})
        assert future.result() == {"outer", "inner"}


def test_sync_runs_submitted_by_hand_run_in_the_runner_s_threads_up_to_max_workers():
    with ThreadPoolTaskRunner(max_workers=2) as runner:
        idents = [runner.submit(thread_id, {}) for _ in range(6)]
        assert threading.get_ident() not in {f.result() for f in idents}


def test_leaving_the_block_waits_for_every_run_it_started():
    release = threading.Event()

    @task
    def slow():
        release.wait(5)
        return "done"

    with ThreadPoolTaskRunner() as runner:
        future = runner.submit(slow, {})
        threading.Timer(0.05, release.set).start()
    assert future.done() and future.result() == "done"


def test_a_failed_run_submitted_by_hand_raises_from_its_future_only():
    with ThreadPoolTaskRunner() as runner:
        future = runner.submit(fails, {})
        with pytest.raises(ValueError, match="broken"):
            future.result()
        assert future.state.is_failed()
        assert runner.submit(pair, {"a": allow_failure(future), "b": 1}).result()[0].args == ("broken",)


def test_a_sequential_runner_used_by_hand_runs_its_runs_in_submission_order():
    order = []

    @task
    def record(i):
        order.append(i)

    with SequentialTaskRunner() as runner:
        runner.map(record, {"i": range(5)})
    assert order == [0, 1, 2, 3, 4]


def test_a_process_pool_runner_used_by_hand_runs_the_task_in_another_process():
    import os

    with ProcessPoolTaskRunner(max_workers=1) as runner:
        pid = runner.submit(getpid, {}).result()
    assert pid != os.getpid()


@task
def getpid():
    import os

    return os.getpid()


def test_a_runner_not_entered_refuses_submit_and_map_naming_the_fix():
    runner = ThreadPoolTaskRunner()
    with pytest.raises(RuntimeError, match=r"not started.*with ThreadPoolTaskRunner"):
        runner.submit(pair, {"a": 1, "b": 2})
    with pytest.raises(RuntimeError, match="not started"):
        runner.map(pair, {"a": [1], "b": [2]})
    with runner:
        pass
    with pytest.raises(RuntimeError, match="not started"):  # nor after the block
        runner.submit(pair, {"a": 1, "b": 2})


def test_bad_arguments_to_a_runner_used_by_hand_are_refused_naming_the_fix():
    with ThreadPoolTaskRunner() as runner:
        with pytest.raises(TypeError, match="takes a @task"):
            runner.submit(lambda: 1, {})
        with pytest.raises(TypeError, match="must be a dict"):
            runner.submit(pair, [1, 2])
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'c'|'c'"):
            runner.submit(pair, {"a": 1, "b": 2, "c": 3})


@pytest.mark.anyio
async def test_a_runner_used_by_hand_in_async_code_gives_awaitable_futures(anyio_backend):
    async with ThreadPoolTaskRunner(max_workers=2) as runner:
        first = runner.submit(pair_async, {"a": 1, "b": 2})
        second = runner.submit(pair, {"a": 3, "b": 4})
        mapped = runner.map(pair, {"a": [5, 6], "b": 0})
        assert await first == (1, 2)
        assert await second == (3, 4)
        assert [await f for f in mapped] == [(5, 0), (6, 0)]
