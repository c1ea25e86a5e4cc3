"""SPEC §2: in sync code a call behaves like a function call; in async code every call is awaited."""

import asyncio
import inspect
import threading

import anyio
import anyio.lowlevel
import pytest

from asyncflow import flow, task
from asyncflow.exceptions import BlockingResultError, MissingContextError


@task
def double(x):
    return 2 * x


@task
async def double_async(x):
    await anyio.lowlevel.checkpoint()
    return 2 * x


def test_sync_task_called_from_sync_code_returns_its_value():
    assert double(2) == 4


def test_async_task_called_from_sync_code_returns_a_coroutine():
    coro = double_async(2)
    assert inspect.iscoroutine(coro)
    assert asyncio.run(coro) == 4


def test_async_task_runs_under_trio_run():
    import trio

    async def main():
        return await double_async(3)

    assert trio.run(main) == 6


@pytest.mark.anyio
async def test_sync_task_called_from_async_code_is_awaitable_and_runs_off_the_loop_thread():
    loop_thread = threading.get_ident()
    seen = []

    @task
    def where():
        seen.append(threading.get_ident())
        return "done"

    pending = where()
    assert inspect.isawaitable(pending)
    assert await pending == "done"
    assert seen and seen[0] != loop_thread


@pytest.mark.anyio
async def test_sync_flow_called_from_async_code_runs_its_body_off_the_loop_thread():
    loop_thread = threading.get_ident()

    @flow
    def body_thread():
        return threading.get_ident(), double(4)

    thread_id, value = await body_thread()
    assert thread_id != loop_thread and value == 8


def test_sync_task_inside_sync_flow_runs_in_the_callers_thread():
    @task
    def thread_of_task():
        return threading.get_ident()

    @flow
    def f():
        return thread_of_task()

    assert f() == threading.get_ident()


def test_return_state_returns_the_final_state_without_raising():
    @task
    def boom():
        raise ValueError("nope")

    state = boom(return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ValueError)


@pytest.mark.anyio
async def test_return_state_is_awaitable_in_async_code():
    state = await double(5, return_state=True)
    assert state.is_completed() and await state.result() == 10
    flow_state = await flow(lambda: 1)(return_state=True)
    assert flow_state.is_completed()


def test_failing_task_raises_into_the_caller_and_fails_the_flow():
    @task
    def boom():
        raise ValueError("bad code")

    @flow
    def f():
        return boom()

    with pytest.raises(ValueError, match="bad code"):
        f()
    state = f(return_state=True)
    assert state.is_failed()
    assert state.message == "Flow run encountered an exception ValueError: bad code"


def test_tasks_work_outside_any_flow_and_inside_other_tasks():
    @task
    def outer(x):
        return double(x) + double.submit(x).result()

    assert outer(3) == 12


@pytest.mark.anyio
async def test_async_task_can_submit_and_await_outside_a_flow():
    @task
    async def outer(x):
        future = double.submit(x)
        return await double_async(x) + await future

    assert await outer(2) == 8


def test_submit_outside_a_run_raises_a_clear_error():
    with pytest.raises(MissingContextError, match="outside of a flow or task run"):
        double.submit(1)


@pytest.mark.anyio
async def test_blocking_result_on_the_event_loop_raises_instead_of_deadlocking():
    gate = anyio.Event()

    @task
    async def slow():
        await gate.wait()
        return 1

    @flow
    async def f():
        future = slow.submit()
        with pytest.raises(BlockingResultError, match="await future"):
            future.result()
        gate.set()
        return await future

    assert await f() == 1


@pytest.mark.anyio
async def test_many_flows_run_concurrently_on_one_loop():
    """Ten concurrent calls of an async flow whose task waits overlap instead of queueing."""
    in_flight = 0
    peak = 0
    release = anyio.Event()

    @task
    async def wait_a_bit():
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 10:
            release.set()
        with anyio.fail_after(60):
            await release.wait()
        in_flight -= 1
        return 1

    @flow
    async def service_call():
        return await wait_a_bit()

    results = []

    async def one():
        results.append(await service_call())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert results == [1] * 10 and peak == 10


def test_ten_concurrent_flows_take_about_as_long_as_one_under_virtual_time():
    import trio
    import trio.testing

    @task
    async def io_call():
        await anyio.sleep(0.3)

    @flow
    async def handler():
        await io_call()

    async def main():
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(handler)
        return trio.current_time() - start

    elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert elapsed == pytest.approx(0.3)


def test_flow_called_inside_an_already_running_loop_from_another_thread():
    """A sync script that already runs a loop elsewhere can still call flows normally."""
    results = []

    async def server():
        @flow
        async def inner():
            return await double_async(21)

        results.append(await inner())

    thread = threading.Thread(target=asyncio.run, args=(server(),))
    thread.start()
    thread.join(10)

    @flow
    def sync_flow():
        return double(1)

    assert results == [42] and sync_flow() == 2
