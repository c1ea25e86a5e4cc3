"""SPEC §2: "async code" is decided by the caller's frame, not by whether an event loop runs in the thread.

Code inside an `async def` (and a notebook cell with top-level `await`) awaits every call; plain sync
code gets values even where a loop runs: a sync helper that async code calls, a sync callback a library
runs on the loop, a notebook cell without `await`. Comprehensions, generator expressions and lambdas
count as the function they are written in.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asyncflow import flow, task
from asyncflow.exceptions import BlockingResultError
from asyncflow.states import State

pytestmark = pytest.mark.timeout(60)  # a call that blocks the loop cannot be stopped by a cancel scope


@task
def double(x):
    return 2 * x


@task
async def double_async(x):
    await anyio.lowlevel.checkpoint()
    return 2 * x


@flow
def sync_flow(x):
    return double(x) + double.submit(x).result() + double_async.submit(x).result()


@flow
async def async_flow(x):
    return await double(x) + await double_async(x)


SYNC = {"sync task": (double, 4), "sync flow": (sync_flow, 12)}  # called with 2: the value it returns
ASYNC = {"async task": (double_async, 4), "async flow": (async_flow, 8)}
EVERY = {**SYNC, **ASYNC}


def is_pending_call(value: Any) -> bool:
    return inspect.iscoroutine(value)


async def settle(value: Any) -> Any:
    """Await what a call returned in async code (it must be awaitable)."""
    assert is_pending_call(value), f"expected an awaitable, got {value!r}"
    return await value


# -- sync code with no loop ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(SYNC))
def test_sync_code_without_a_loop_gets_the_value_of_a_sync_task_or_flow(kind):
    fn, expected = SYNC[kind]
    assert fn(2) == expected


@pytest.mark.parametrize("kind", sorted(ASYNC))
def test_sync_code_gets_a_coroutine_from_an_async_task_or_flow(kind):
    fn, expected = ASYNC[kind]
    pending = fn(2)
    assert is_pending_call(pending)
    assert asyncio.run(pending) == expected


# -- async def -----------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(EVERY))
async def test_async_def_gets_an_awaitable_from_every_task_and_flow(kind):
    fn, expected = EVERY[kind]
    with anyio.fail_after(10):
        assert await settle(fn(2)) == expected


# -- a sync helper called from async code, on the loop thread -------------------------------------
def sync_helper(fn, x):
    return fn(x)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(SYNC))
async def test_a_sync_helper_on_the_loop_thread_gets_the_value_of_a_sync_task_or_flow(kind):
    fn, expected = SYNC[kind]
    assert sync_helper(fn, 2) == expected  # (blocking the loop: pytest-timeout is the guard)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(ASYNC))
async def test_a_sync_helper_gets_a_coroutine_from_an_async_task_or_flow_which_async_code_awaits(kind):
    fn, expected = ASYNC[kind]
    pending = sync_helper(fn, 2)
    with anyio.fail_after(10):
        assert await settle(pending) == expected


@pytest.mark.anyio
async def test_sync_work_called_from_a_sync_helper_runs_inline_on_the_loop_thread():
    loop_thread = threading.get_ident()

    @task
    def where():
        return threading.get_ident()

    @flow
    def body():
        return threading.get_ident(), where()

    assert sync_helper(lambda _: where(), None) == loop_thread
    assert sync_helper(lambda _: body(), None) == (loop_thread, loop_thread)


@pytest.mark.anyio
async def test_a_sync_task_called_by_a_sync_helper_inside_an_async_flow_is_a_run_of_that_flow():
    @flow
    async def outer():
        from asyncflow.runtime import flow_run

        return flow_run.id, sync_helper(lambda x: double(x, return_state=True), 5)

    with anyio.fail_after(10):
        flow_run_id, state = await outer()
    assert state.is_completed() and await state.result() == 10
    assert str(state.state_details.flow_run_id) == str(flow_run_id)


# -- comprehensions, generator expressions, lambdas -----------------------------------------------
@pytest.mark.anyio
async def test_comprehensions_and_lambdas_in_async_def_count_as_async_code():
    with anyio.fail_after(10):
        listed = [double(x) for x in (1, 2)]
        assert all(is_pending_call(p) for p in listed)
        assert [await p for p in listed] == [2, 4]
        assert await asyncio_free_gather(double(x) for x in (3,)) == [6]
        as_dict = {x: double(x) for x in (1,)}
        assert await settle(as_dict[1]) == 2
        as_set = {sync_flow(x) for x in (1,)}
        assert await settle(as_set.pop()) == 6
        call = lambda x: double(x)  # noqa: E731 - a lambda is the point
        assert await settle(call(4)) == 8


async def asyncio_free_gather(pending):
    """Await each item of an iterable (a generator expression, consumed here: an async frame)."""
    return [await settle(p) for p in list(pending)]


def comprehensions_in_sync_code():
    call = lambda x: double(x)  # noqa: E731
    return ([double(x) for x in (1, 2)], list(double(x) for x in (3,)), {x: double(x) for x in (4,)},
            {sync_flow(x) for x in (1,)}, call(5))


def test_comprehensions_and_lambdas_in_sync_code_without_a_loop_get_values():
    assert comprehensions_in_sync_code() == ([2, 4], [6], {4: 8}, {6}, 10)


@pytest.mark.anyio
async def test_comprehensions_and_lambdas_in_a_sync_helper_on_the_loop_thread_get_values():
    assert comprehensions_in_sync_code() == ([2, 4], [6], {4: 8}, {6}, 10)


# -- a sync callback the loop runs ---------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(EVERY))
async def test_a_sync_callback_scheduled_on_the_loop_follows_the_sync_rule(kind, anyio_backend):
    fn, expected = EVERY[kind]
    seen: list[Any] = []
    called = anyio.Event()

    def callback():
        seen.append((threading.get_ident(), fn(2)))
        called.set()

    if anyio_backend == "trio":
        import trio

        trio.lowlevel.current_trio_token().run_sync_soon(callback)
    else:
        asyncio.get_running_loop().call_soon(callback)
    with anyio.fail_after(10):
        await called.wait()
        thread, value = seen[0]
        assert thread == threading.get_ident()
        if kind in SYNC:
            assert value == expected
        else:
            assert await settle(value) == expected


# -- methods -------------------------------------------------------------------------------------
class Doubler:
    @task
    def twice(self, x):
        return 2 * x


@pytest.mark.anyio
async def test_a_task_method_follows_the_callers_frame_not_the_bound_wrapper():
    d = Doubler()
    with anyio.fail_after(10):
        assert await settle(d.twice(3)) == 6
        assert sync_helper(d.twice, 3) == 6


# -- State.result() ------------------------------------------------------------------------------
def test_state_result_in_sync_code_is_the_value():
    state = double(2, return_state=True)
    assert state.result() == 4
    assert [s.result() for s in (state,)] == [4]


@pytest.mark.anyio
async def test_state_result_in_async_code_is_awaitable_and_a_value_in_a_sync_helper():
    state = await double(2, return_state=True)
    with anyio.fail_after(10):
        assert await state.result() == 4
        assert [await s.result() for s in (state,)] == [4]
        assert await state.aresult() == 4
    assert sync_helper(lambda s: s.result(), state) == 4


@pytest.mark.anyio
async def test_state_result_of_a_failed_run_raises_when_awaited_in_async_code():
    @task
    def boom():
        raise ValueError("nope")

    state = await boom(return_state=True)
    pending = state.result()
    with pytest.raises(ValueError, match="nope"):
        await pending
    assert isinstance(await state.result(raise_on_failure=False), ValueError)


# -- the blocking wait on the loop thread --------------------------------------------------------
@pytest.mark.anyio
async def test_a_blocking_result_in_a_sync_helper_of_an_async_flow_raises_instead_of_deadlocking():
    gate = anyio.Event()

    @task
    async def slow():
        await gate.wait()
        return 1

    @flow
    async def f():
        future = slow.submit()
        with pytest.raises(BlockingResultError, match="await future"):
            sync_helper(lambda fut: fut.result(), future)
        with pytest.raises(BlockingResultError, match="await"):
            sync_helper(lambda fut: fut.wait(), future)
        gate.set()
        return await future

    with anyio.fail_after(10):
        assert await f() == 1


@pytest.mark.anyio
async def test_a_sync_flow_inline_on_the_loop_thread_blocks_on_its_own_futures():
    """Its submitted runs execute on a helper loop and in pool threads, never on the blocked loop."""

    @task
    def slow_sync(x):
        import time

        time.sleep(0.05)
        return x

    @task
    async def slow_async(x):
        await anyio.sleep(0.05)
        return x

    @flow
    def body():
        futures = [slow_sync.submit(1), slow_async.submit(2)]
        mapped = slow_async.map([3, 4], return_state=True)
        return [f.result() for f in futures] + [s.result() for s in mapped]

    assert sync_helper(lambda _: body(), None) == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_async_hooks_of_a_sync_flow_inline_on_the_loop_thread_run_on_a_loop_of_their_own():
    seen = []

    async def remember(flow_, run, state):
        await anyio.lowlevel.checkpoint()
        seen.append(state.name)

    @flow(on_completion=[remember])
    def body():
        return 1

    assert sync_helper(lambda _: body(), None) == 1
    assert seen == ["Completed"]


@pytest.mark.anyio
async def test_a_sync_generator_task_follows_the_callers_frame():
    @task
    def count(n):
        yield from range(n)

    with anyio.fail_after(10):
        assert [x async for x in count(3)] == [0, 1, 2]
        assert sync_helper(lambda n: list(count(n)), 3) == [0, 1, 2]


# -- an un-awaited call --------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(EVERY))
async def test_an_unawaited_call_in_async_code_warns_naming_it_and_the_fix(kind):
    fn, _ = EVERY[kind]
    with pytest.warns(RuntimeWarning) as caught:
        fn(2)  # forgot await: the returned call is dropped at once
    message = str(caught[0].message)
    what = "task" if "task" in kind else "flow"
    assert message.startswith(f"coroutine '{fn.name}() [an asyncflow {what} called without await: "
                              f"in async code write `await {fn.name}(...)`") and "was never awaited" in message
    assert caught[0].filename == __file__  # it points at the call


def test_an_unawaited_async_call_in_sync_code_warns_too():
    with pytest.warns(RuntimeWarning, match=r"double_async\(\) \[an asyncflow task called without await.*asyncio.run"):
        double_async(1)


@pytest.mark.anyio
async def test_an_awaited_or_started_call_never_warns(anyio_backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with anyio.fail_after(10):
            assert await double(1) == 2
            async with anyio.create_task_group() as tg:
                tg.start_soon(async_flow, 1)  # started by the task group
            pending = double(1)
            pending.close()  # closed before it started: deliberate, so silent
            del pending
    if anyio_backend == "asyncio":
        assert await asyncio.gather(double(1), double_async(1)) == [2, 2]
        assert await asyncio.wait_for(async_flow(1), 10) == 4


def test_asyncio_run_and_trio_run_take_the_returned_call():
    import trio

    assert asyncio.run(async_flow(1)) == 4
    assert trio.run(async_flow, 1) == 4
    assert anyio.run(double_async, 2, backend="trio") == 4


@pytest.mark.anyio
async def test_a_flow_returning_states_gives_states_whose_result_follows_the_rule():
    @flow
    def returns_state():
        return double(1, return_state=True)

    state = sync_helper(lambda _: returns_state(), None)
    assert isinstance(state, State) and sync_helper(lambda s: s.result(), state) == 2
    assert await state.result() == 2


@pytest.mark.anyio
async def test_a_transaction_with_async_commit_hooks_inside_a_sync_flow_inline_on_the_loop_thread():
    from asyncflow.transactions import transaction

    events = []

    async def committed(txn):
        await anyio.lowlevel.checkpoint()
        events.append(("commit", threading.get_ident()))

    @task(on_commit=[committed])
    def work():
        return 1

    @flow
    def body():
        with transaction():
            work()
        return "done"

    assert sync_helper(lambda _: body(), None) == "done"
    assert len(events) == 1 and events[0][1] != threading.get_ident()  # on a loop of its own, elsewhere


@pytest.mark.anyio
async def test_a_sync_flow_with_a_timeout_inline_on_the_loop_thread_times_out():
    import time

    @flow(timeout_seconds=0.2)
    def slow():
        for _ in range(200):  # short sleeps: the stopped thread leaves at the next one
            time.sleep(0.02)

    started = time.monotonic()
    state = sync_helper(lambda _: slow(return_state=True), None)
    assert state.is_failed() and "timeout" in state.message.lower()
    assert time.monotonic() - started < 4
