"""Scenarios shared by the tests of the runners whose work leaves the flow's process (process pool,
Dask, Ray). Each takes a runner and runs a real flow with it; the task functions travel by pickle.

Task functions here refer only to modules and asyncflow by name (they travel by value, and their
module, `runner_cases`, need not be importable where they run).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel

from asyncflow import flow, get_run_logger, task
from asyncflow.runtime import flow_run, task_run
from asyncflow.testing import isolated_home, state_names


@task
def double_where(x: int) -> tuple[int, int]:
    return 2 * x, os.getpid()


@task
async def async_double_where(x: int) -> tuple[int, int]:
    await anyio.lowlevel.checkpoint()
    return 2 * x, os.getpid()


@task
def add(a: int, b: int) -> int:
    return a + b


@task(retries=2)
def fails_on_the_first_attempt() -> tuple[int, int]:
    if task_run.run_count == 1:
        raise ValueError("the first attempt fails")
    return task_run.run_count, os.getpid()


@task
def logs_remotely(x: int) -> str:
    get_run_logger().info(f"remote line {x} from {task_run.name} of {flow_run.name}")
    print(f"printed in the worker: {x}")
    return f"{task_run.name}|{flow_run.name}|{task_run.run_count}"


@task
def uses(resource: Any) -> int:
    return 1


@task
def returns_a_lock() -> Any:
    return threading.Lock()


@task(timeout_seconds=1)
def sleeps_past_its_deadline(pidfile: str) -> str:
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(30)
    return "too late"


@task(timeout_seconds=2)
def naps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def a_deadline_counts_from_the_start_not_from_the_queue(runner: Any, n: int) -> None:
    """`n` runs of 0.6 s each with a 2 s timeout, more than the workers can run at once: the later ones
    wait longer than 2 s in all, yet none times out."""
    @flow(task_runner=runner)
    async def f() -> list[Any]:
        return [await future for future in naps.map([0.6] * n)]

    assert await f() == [0.6] * n


def remote_pids(runner: Any, n: int) -> set[int]:
    @flow(task_runner=runner)
    def pids() -> set[int]:
        return {pid for _, pid in double_where.map(range(n)).result()}

    return pids()


async def mapped_sync_and_async_tasks(runner: Any) -> None:
    @flow(task_runner=runner)
    async def f() -> tuple[list[Any], list[Any]]:
        sync = [await future for future in double_where.map(range(6))]
        asynchronous = [await future for future in async_double_where.map(range(3))]
        return sync, asynchronous

    sync, asynchronous = await f()
    assert [value for value, _ in sync] == [0, 2, 4, 6, 8, 10]
    assert [value for value, _ in asynchronous] == [0, 2, 4]
    assert os.getpid() not in {pid for _, pid in sync + asynchronous}


async def futures_as_inputs(runner: Any) -> None:
    @flow(task_runner=runner)
    async def f() -> int:
        a = add.submit(1, 2)
        b = add.submit(a, 10)
        c = add.submit(a, b)
        return await c

    assert await f() == 16


async def retries_across_workers(runner: Any) -> None:
    with isolated_home() as store:
        @flow(task_runner=runner)
        async def f() -> Any:
            future = fails_on_the_first_attempt.submit()
            return await future, future.task_run.id

        (attempts, pid), run_id = await f()
        assert attempts == 2 and pid != os.getpid()
        assert state_names(store, run_id) == [
            "Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]


async def remote_logs_land_in_the_flow_runs_logs(runner: Any) -> None:
    with isolated_home() as store:
        @flow(task_runner=runner, log_prints=True)
        async def logging_flow() -> Any:
            future = logs_remotely.submit(7)
            return await future, future.task_run.id

        (seen, run_id), = [await logging_flow()]
        task_run_record = store.read_task_run(run_id)
        flow_run_id = task_run_record.flow_run_id
        flow_run_record = store.read_flow_run(flow_run_id)
        # asyncflow.runtime works in the worker, from the run's snapshot
        assert seen == f"{task_run_record.name}|{flow_run_record.name}|1"
        messages = [record.message for record in store.read_logs(task_run_id=str(run_id))]
        assert f"remote line 7 from {task_run_record.name} of {flow_run_record.name}" in messages
        assert "printed in the worker: 7" in messages
        flow_messages = [record.message for record in store.read_logs(flow_run_id=str(flow_run_id))]
        assert f"remote line 7 from {task_run_record.name} of {flow_run_record.name}" in flow_messages
        assert state_names(store, run_id) == ["Pending", "Running", "Completed"]


async def unpicklable_argument_fails_before_anything_is_sent(runner: Any) -> None:
    @flow(task_runner=runner)
    async def f() -> Any:
        state = await uses.submit(threading.Lock(), return_state=True)
        return state.name, state.message

    name, message = await f()
    assert name == "Failed"
    assert "'uses'" in message and "parameter 'resource'" in message and "_thread.lock" in message
    assert "cannot be pickled" in message


async def unpicklable_result_is_a_clear_error(runner: Any) -> None:
    @flow(task_runner=runner)
    async def f() -> Any:
        state = await returns_a_lock.submit(return_state=True)
        return state.name, state.message

    name, message = await f()
    assert name == "Failed"
    assert "'returns_a_lock'" in message and "_thread.lock" in message and "cannot be pickled" in message


@flow
def plus_one_flow(x: int) -> int:
    return x + 1


@task
def calls_a_subflow(x: int) -> int:
    return plus_one_flow(x)
