"""Flow retries and the work done in earlier attempts of the same flow run (Prefect 3's rules):

- a task whose result was persisted in an earlier attempt is not run again: its result is read back
  and its run ends `Cached` (the default cache policy includes the flow run's id, which a retry keeps);
- a task whose result was not persisted, or with `cache_policy=NO_CACHE` or `refresh_cache=True`,
  runs again, as do tasks that failed or did not run;
- a subflow that completed in an earlier attempt is not run again: the call returns its final state
  from that attempt; a subflow that failed runs again as a new flow run.
"""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from asyncflow import flow, task
from asyncflow.cache_policies import NO_CACHE
from asyncflow.runtime import flow_run
from asyncflow.testing import fake_clock, state_names


def _task_states(store, flow_run_id) -> list[str]:
    return [run.state.name for run in store.read_task_runs(flow_run_id=flow_run_id)]


def test_a_flow_retry_does_not_rerun_tasks_that_completed_in_an_earlier_attempt(store):
    calls = {"double": 0, "flaky": 0, "flow": 0}

    @task
    def double(x):
        calls["double"] += 1
        return x * 2

    @task
    def flaky(x):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first attempt")
        return x + 1

    @task
    def last(x):
        return x

    @flow(retries=2, retry_delay_seconds=10, persist_result=True)
    def pipeline():
        calls["flow"] += 1
        a = double(1)
        b = double(2)
        c = flaky(a + b)  # fails in the first attempt: the flow fails there, `last` never runs
        return last(c)

    with fake_clock() as clock:
        state = pipeline(return_state=True)
    assert state.result() == 7
    assert calls == {"double": 2, "flaky": 2, "flow": 2}
    assert clock.slept == [10.0]
    run_id = state.state_details.flow_run_id
    assert state_names(store, run_id) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    # attempt 1: double, double, flaky (failed); attempt 2: both doubles read back, flaky and last run
    assert _task_states(store, run_id) == ["Completed", "Completed", "Failed", "Cached", "Cached",
                                           "Completed", "Completed"]


def test_a_task_reused_by_a_flow_retry_ends_cached_with_its_earlier_result_and_key(store):
    seen = []

    @task(persist_result=True)
    def fetch(x):
        return {"value": x}

    @flow(retries=1)
    def pipeline():
        seen.append(fetch(3, return_state=True))
        if len(seen) == 1:
            raise RuntimeError("flow fails after its task completed")

    pipeline()
    first, second = seen
    assert (first.name, second.name) == ("Completed", "Cached")
    assert second.is_completed() and second.message is None  # Prefect's `Cached(type=COMPLETED)`
    assert second.result() == {"value": 3}
    assert second.state_details.cache_key == first.state_details.cache_key
    assert second.state_details.task_run_id != first.state_details.task_run_id  # a new task run, read back


def test_a_flow_retry_reruns_tasks_whose_results_are_not_persisted():
    """Prefect's default (results not persisted): a retry runs every task again, so a flow that polls
    through a task sees fresh values."""
    statuses = iter(["pending", "pending", "done"])
    calls = []

    @task
    def check_status():
        calls.append(1)
        return next(statuses)

    @flow(retries=5)
    def wait_until_done():
        if check_status() != "done":
            raise RuntimeError("not yet")
        return flow_run.run_count

    assert wait_until_done() == 3 and len(calls) == 3


@pytest.mark.parametrize("options", [{"cache_policy": NO_CACHE}, {"refresh_cache": True}],
                         ids=["no_cache", "refresh_cache"])
def test_a_flow_retry_reruns_persisted_tasks_with_no_cache_or_refresh_cache(store, options):
    calls = []

    @task(persist_result=True, **options)
    def step(x):
        calls.append(x)
        return x

    @flow(retries=1, persist_result=True)
    def pipeline():
        value = step(1)
        if len(calls) == 1:
            raise RuntimeError("fail after the task")
        return value

    state = pipeline(return_state=True)
    assert state.result() == 1 and calls == [1, 1]
    assert _task_states(store, state.state_details.flow_run_id) == ["Completed", "Completed"]


def test_task_retries_start_again_in_each_flow_attempt():
    """Prefect's test_flow_retry_with_error_in_flow_and_one_failed_task_with_retries: a task that fails
    in an attempt is retried there, and gets all its retries again in the next attempt."""
    calls = {"task": 0, "flow": 0, "in_attempt": 0}

    @task(retries=1, persist_result=True)
    def step():
        calls["task"] += 1
        calls["in_attempt"] += 1
        if calls["flow"] == 1 or calls["in_attempt"] == 1:
            raise ValueError("fails")
        return "hello"

    @flow(retries=1)
    def pipeline():
        calls["flow"] += 1
        calls["in_attempt"] = 0
        return step()

    assert pipeline() == "hello" and calls["task"] == 4


def test_the_reuse_is_within_one_flow_run_never_across_flow_runs():
    calls = []

    @task(persist_result=True)
    def step(x):
        calls.append(x)
        return x

    @flow(retries=1)
    def pipeline():
        step(1)
        if flow_run.run_count == 1:
            raise RuntimeError("fail once")

    pipeline()
    pipeline()  # a new flow run: its tasks run (the default policy's key includes the flow run id)
    assert calls == [1, 1]


@pytest.mark.anyio
async def test_an_async_flow_retry_reuses_submitted_and_mapped_tasks_that_completed():
    calls = {"square": [], "add": [], "flow": 0}

    @task
    async def square(x):
        calls["square"].append(x)
        return x * x

    @task
    def add(x, y):
        calls["add"].append((x, y))
        return x + y

    @flow(retries=1, persist_result=True)
    async def pipeline():
        calls["flow"] += 1
        squares = square.map([1, 2, 3])
        total = add.submit(squares[0], squares[2])
        values = [await f for f in squares], await total
        if calls["flow"] == 1:
            raise RuntimeError("fail after the tasks completed")
        return values

    assert await pipeline() == ([1, 4, 9], 10)
    assert sorted(calls["square"]) == [1, 2, 3] and calls["add"] == [(1, 9)] and calls["flow"] == 2


@pytest.mark.anyio
async def test_an_async_flow_retry_runs_the_mapped_tasks_that_failed_and_reuses_the_rest():
    calls = []

    @task
    async def maybe_fail(x):
        calls.append(x)
        if x == 2 and calls.count(2) == 1:
            raise ValueError("2 fails once")
        return x

    @flow(retries=1, persist_result=True)
    async def pipeline():
        return [await f for f in maybe_fail.map([1, 2, 3])]

    assert await pipeline() == [1, 2, 3]
    assert sorted(calls) == [1, 2, 2, 3]


def test_a_flow_retry_does_not_rerun_a_subflow_that_completed_in_an_earlier_attempt(store):
    calls = {"child": 0, "parent": 0}

    @flow
    def child(x):
        calls["child"] += 1
        return x * 10

    @flow(retries=1)
    def parent():
        calls["parent"] += 1
        first = child(1, return_state=True)
        if calls["parent"] == 1:
            raise RuntimeError("parent fails after its subflow completed")
        return first

    state = parent(return_state=True)
    child_state = state.result()
    assert calls == {"child": 1, "parent": 2}
    assert child_state.name == "Completed" and child_state.result() == 10
    # the earlier child run is the one returned; no second child run was created
    children = [run for run in store.read_flow_runs(flow_name="child")]
    assert [run.id for run in children] == [child_state.state_details.flow_run_id]


def test_a_subflow_that_completed_is_reused_with_its_result_when_results_are_persisted():
    """Prefect's test_flow_retry_with_error_in_flow_and_one_successful_child_flow."""
    calls = {"child": 0, "parent": 0}

    @flow(persist_result=True)
    def child():
        calls["child"] += 1
        return "hello"

    @flow(retries=1, persist_result=True)
    def parent():
        calls["parent"] += 1
        result = child()
        if calls["parent"] == 1:
            raise RuntimeError("fail")
        return result

    assert parent() == "hello" and calls == {"child": 1, "parent": 2}


def test_a_flow_retry_reruns_a_subflow_that_failed_as_a_new_flow_run(store):
    calls = {"child": 0, "parent": 0}

    @flow
    def child():
        calls["child"] += 1
        if calls["parent"] == 1:
            raise ValueError("child fails in the first attempt")
        return "hello"

    @flow(retries=1)
    def parent():
        calls["parent"] += 1
        state = child(return_state=True)
        if calls["parent"] == 1:
            raise RuntimeError("fail")
        return state

    child_state = parent()
    assert child_state.result() == "hello" and calls == {"child": 2, "parent": 2}
    runs = store.read_flow_runs(flow_name="child")
    assert sorted(run.state.name for run in runs) == ["Completed", "Failed"]


def test_a_subflow_called_with_other_parameters_in_the_retry_runs():
    """Prefect matches a subflow to its earlier run by call order only (its xfail
    test_flow_retry_with_branched_tasks); here the parameters must match too."""
    calls = []

    @flow
    def child(x):
        calls.append(x)
        return x

    @flow(retries=1)
    def parent():
        if not calls:
            child("foo")
            raise RuntimeError("fail")
        return child("bar")

    assert parent() == "bar" and calls == ["foo", "bar"]


def test_each_call_of_a_subflow_is_matched_to_the_same_call_of_the_earlier_attempt():
    calls = []

    @flow
    def child(x):
        calls.append(x)
        return x

    @flow(retries=1)
    def parent():
        results = [child(1), child(1), child(2)]
        if flow_run.run_count == 1:
            raise RuntimeError("fail after three subflows")
        return [*results, child(1)]  # a third call with 1: it did not run in the first attempt

    assert parent() == [1, 1, 2, 1] and calls == [1, 1, 2, 1]


@pytest.mark.anyio
async def test_an_async_flow_retry_does_not_rerun_concurrent_subflows_that_completed():
    calls = []

    @flow
    async def child(x):
        calls.append(x)
        await anyio.lowlevel.checkpoint()
        if x == 3 and calls.count(3) == 1:
            raise ValueError("3 fails once")
        return x

    @flow(retries=1)
    async def parent():
        results = {}

        async def call(x):
            results[x] = await child(x)

        async with anyio.create_task_group() as tg:
            for x in (1, 2, 3):
                tg.start_soon(call, x)
        return [results[x] for x in (1, 2, 3)]

    assert await parent() == [1, 2, 3]
    assert sorted(calls) == [1, 2, 3, 3]


@pytest.mark.anyio
async def test_a_subflow_given_a_future_is_matched_by_the_future_s_value():
    calls = {"child": 0, "parent": 0}

    @task(persist_result=True)
    def produce():
        return 5

    @flow
    async def child(x):
        calls["child"] += 1
        return x + 1

    @flow(retries=1)
    async def parent():
        calls["parent"] += 1
        result = await child(produce.submit())
        if calls["parent"] == 1:
            raise RuntimeError("fail")
        return result

    assert await parent() == 6 and calls == {"child": 1, "parent": 2}


def test_a_subflow_whose_parameters_cannot_be_hashed_runs_again_with_a_warning(capsys):
    calls = []

    @flow
    def child(lock):
        calls.append(1)

    @flow(retries=1)
    def parent():
        child(threading.Lock())
        if len(calls) == 1:
            raise RuntimeError("fail")

    parent()
    assert len(calls) == 2
    assert "cannot be matched with its run in an earlier attempt" in capsys.readouterr().err


def test_a_subflow_called_in_a_process_pool_task_of_a_flow_with_retries_runs():
    """The worker process has a copy of the flow run's context without the flow: nothing to reuse there."""
    import runner_cases as cases

    from asyncflow.task_runners import ProcessPoolTaskRunner

    @flow(retries=1, task_runner=ProcessPoolTaskRunner(max_workers=1))
    def parent():
        value = cases.calls_a_subflow.submit(1).result()
        if flow_run.run_count == 1:
            raise RuntimeError("fail after the task")
        return value

    assert parent() == 2
