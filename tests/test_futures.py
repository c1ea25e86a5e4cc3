"""TaskRunFuture, `asyncflow.futures.wait` / `as_completed`, flows returning futures, dependencies
between submitted runs (failed upstream, allow_failure, wait_for) and the structured flow scope.

SPEC §2 (calling rules), §3 (runs, states and structure); reference sections 3.5 and 4, items D.46-D.67.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import add, add_async, run_in_thread

from asyncflow import allow_failure, flow, task
from asyncflow.exceptions import BlockingResultError
from asyncflow.futures import TaskRunFuture, as_completed, wait
from asyncflow.states import State, StateType
from asyncflow.testing import state_names

GATE_TIMEOUT = 5.0  # a gated task never blocks longer than this, so a broken test cannot hang forever


# -- helpers ---------------------------------------------------------------------------------------


@task
def explode(message: str = "boom") -> int:
    raise ValueError(message)


@task
async def explode_async(message: str = "boom") -> int:
    await anyio.lowlevel.checkpoint()
    raise ValueError(message)


@task
def gated(gate: threading.Event, value: Any = "done") -> Any:
    """Finishes only once `gate` is set (or after GATE_TIMEOUT as a safety net)."""
    gate.wait(GATE_TIMEOUT)
    return value


@task
def receive(value: Any) -> Any:
    return value


# -- TaskRunFuture: result ------------------------------------------------------------------------
def test_submit_returns_a_future_whose_result_is_the_task_value():
    @flow
    def f() -> Any:
        future = add.submit(1, 2)
        assert isinstance(future, TaskRunFuture)
        return future.result()

    assert run_in_thread(f) == 3


def test_submit_of_async_task_in_sync_flow_returns_future_with_result():
    @flow
    def f() -> int:
        return add_async.submit(2, 3).result()

    assert run_in_thread(f) == 5


def test_submit_outside_a_flow_raises_runtime_error():
    with pytest.raises(RuntimeError):
        add.submit(1, 2)


def test_future_result_raises_the_task_exception():
    @flow
    def f() -> str:
        future = explode.submit("nope")
        with pytest.raises(ValueError, match="nope"):
            future.result()
        return "caught"

    assert run_in_thread(f) == "caught"


def test_future_result_with_raise_on_failure_false_returns_the_exception():
    @flow
    def f() -> Any:
        return explode.submit("returned, not raised").result(raise_on_failure=False)

    exc = run_in_thread(f)
    assert isinstance(exc, ValueError)
    assert str(exc) == "returned, not raised"


def test_future_result_with_timeout_raises_timeout_error_while_run_is_unfinished():
    gate = threading.Event()

    @flow
    def f() -> Any:
        future = gated.submit(gate)
        try:
            with pytest.raises(TimeoutError):
                future.result(timeout=0.01)
        finally:
            gate.set()
        return future.result()

    assert run_in_thread(f) == "done"


def test_future_result_timeout_leaves_the_run_going():
    gate = threading.Event()

    @flow
    def f() -> tuple[bool, Any]:
        future = gated.submit(gate, "late")
        try:
            with pytest.raises(TimeoutError):
                future.result(timeout=0.01)
            still_running = not future.state.is_final()
        finally:
            gate.set()
        return still_running, future.result(timeout=GATE_TIMEOUT)

    assert run_in_thread(f) == (True, "late")


# -- TaskRunFuture: wait, state, task_run_id ----------------------------------------------------------
def test_future_wait_blocks_until_the_run_is_final():
    @flow
    def f() -> dict[str, State]:
        future = add.submit(1, 1)
        assert future.wait() is None
        return {"state": future.state}  # in a dict, so the flow does not aggregate it

    state = run_in_thread(f)["state"]
    assert state.is_completed()
    assert state.result() == 2


def test_future_wait_with_timeout_returns_quietly_with_a_non_final_state():
    gate = threading.Event()

    @flow
    def f() -> tuple[Any, bool, bool]:
        future = gated.submit(gate)
        try:
            returned = future.wait(0.01)
            state = future.state
            final_before = state.is_final()
        finally:
            gate.set()
        future.wait()
        return returned, final_before, future.state.is_completed()

    returned, final_before, completed_after = run_in_thread(f)
    assert returned is None
    assert final_before is False
    assert completed_after is True


def test_future_state_of_failed_run_is_failed_and_carries_the_exception():
    @flow
    def f() -> dict[str, State]:
        future = explode.submit("bad")
        future.wait()
        return {"state": future.state}

    state = run_in_thread(f)["state"]
    assert isinstance(state, State)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ValueError) and str(exc) == "bad"


def test_future_task_run_id_identifies_the_run_in_the_store(store):
    @flow
    def f() -> tuple[Any, Any]:
        future = add.submit(3, 4)
        future.wait()
        return future.task_run_id, future.state.state_details.task_run_id

    run_id, state_run_id = run_in_thread(f)
    assert run_id is not None
    assert run_id == state_run_id
    assert state_names(store, run_id) == ["Pending", "Running", "Completed"]


def test_each_submitted_run_has_its_own_task_run_id():
    @flow
    def f() -> list[Any]:
        futures = [add.submit(i, i) for i in range(3)]
        return [fut.task_run_id for fut in futures]

    ids = run_in_thread(f)
    assert len(set(ids)) == 3


# -- TaskRunFuture: add_done_callback ------------------------------------------------------------------
def test_add_done_callback_is_called_with_the_future_when_the_run_finishes():
    gate = threading.Event()
    called = threading.Event()
    seen: list[Any] = []

    def callback(fut: Any) -> None:
        seen.append(fut)
        called.set()

    @flow
    def f() -> tuple[Any, bool]:
        future = gated.submit(gate)
        try:
            future.add_done_callback(callback)
            called_early = called.is_set()
        finally:
            gate.set()
        future.wait()
        return future.task_run_id, called_early

    task_run_id, called_early = run_in_thread(f)
    assert called_early is False
    assert called.wait(GATE_TIMEOUT)
    assert len(seen) == 1
    assert isinstance(seen[0], TaskRunFuture)
    assert seen[0].task_run_id == task_run_id
    assert seen[0].state.is_completed()


def test_add_done_callback_on_an_already_finished_future_is_called_at_once():
    seen: list[Any] = []

    @flow
    def f() -> bool:
        future = add.submit(1, 2)
        future.wait()
        future.add_done_callback(seen.append)
        return len(seen) == 1 and seen[0] is future  # checked right after add_done_callback returned

    assert run_in_thread(f) is True
    assert len(seen) == 1


def test_add_done_callback_is_called_for_failed_runs_too():
    called = threading.Event()
    states: list[State] = []

    def callback(fut: Any) -> None:
        states.append(fut.state)
        called.set()

    @flow
    def f() -> None:
        future = explode.submit()
        future.add_done_callback(callback)
        future.wait()

    run_in_thread(f)
    assert called.wait(GATE_TIMEOUT)
    assert len(states) == 1 and states[0].is_failed()


# -- futures in async flows -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_awaiting_a_future_in_an_async_flow_returns_the_result():
    @flow
    async def f() -> tuple[int, int]:
        sync_future = add.submit(1, 2)
        async_future = add_async.submit(3, 4)
        return await sync_future, await async_future

    with anyio.fail_after(10):
        assert await f() == (3, 7)


@pytest.mark.anyio
async def test_awaiting_a_failed_future_raises_the_task_exception():
    @flow
    async def f() -> str:
        futures = [explode.submit("sync-fail"), explode_async.submit("async-fail")]
        for future, message in zip(futures, ["sync-fail", "async-fail"], strict=True):
            with pytest.raises(ValueError, match=message):
                await future
        return "ok"

    with anyio.fail_after(10):
        assert await f() == "ok"


@pytest.mark.anyio
async def test_awaiting_a_future_twice_gives_the_same_result():
    @flow
    async def f() -> tuple[int, int]:
        future = add_async.submit(20, 22)
        return await future, await future

    with anyio.fail_after(10):
        assert await f() == (42, 42)


@pytest.mark.anyio
async def test_awaiting_a_future_cancelled_with_the_caller_is_a_cancellation_the_caller_catches(store):
    """docs/calling-rules.md's `move_on_after` example, at the interleaving that failed under load: the
    caller's scope is cancelled, the submitted run ends Cancelled before it starts, and only then does the
    flow body await its (already final) future. That await is the caller's cancellation, which
    `move_on_after` absorbs; it is not a CancelledRun that escapes it."""
    @task
    async def nap() -> int:
        await anyio.sleep(10)
        return 1

    @flow
    async def f(outer) -> int:  # (annotated, pydantic cannot build a validator for CancelScope)
        future = nap.submit()
        outer.cancel()
        with anyio.CancelScope(shield=True):
            await future.wait_async()  # the run ends Cancelled; the body has not seen the cancellation
        assert future.state.is_cancelled()
        return await future

    with anyio.fail_after(10):
        with anyio.CancelScope() as outer:
            await f(outer)
    assert outer.cancelled_caught


@pytest.mark.anyio
async def test_blocking_result_on_the_event_loop_thread_raises_an_error_that_says_to_await():
    gate = threading.Event()

    @flow
    async def f() -> Any:
        future = gated.submit(gate, "finally")
        try:
            with pytest.raises(BlockingResultError) as info:
                future.result()
            assert "await" in str(info.value)
        finally:
            gate.set()
        # the failed blocking call changed nothing: the run still finishes and can be awaited
        return await future

    with anyio.fail_after(10):
        assert await f() == "finally"


@pytest.mark.anyio
async def test_blocking_result_with_timeout_on_the_event_loop_thread_raises_instead_of_blocking():
    gate = threading.Event()

    @flow
    async def f() -> Any:
        future = gated.submit(gate)
        try:
            with pytest.raises(BlockingResultError, match="await"):
                future.result(timeout=1)
        finally:
            gate.set()
        return await future

    with anyio.fail_after(10):
        assert await f() == "done"


@pytest.mark.anyio
async def test_result_on_the_event_loop_thread_after_the_run_finished_returns_the_value():
    @flow
    async def f() -> int:
        future = add_async.submit(5, 5)
        await future
        return future.result()

    with anyio.fail_after(10):
        assert await f() == 10


@pytest.mark.anyio
async def test_submit_with_return_state_is_awaitable_in_async_flow():
    @flow
    async def f() -> State:
        return await add.submit(1, 2, return_state=True)

    with anyio.fail_after(10):
        state = await f()
    assert isinstance(state, State)
    assert state.is_completed() and await state.result() == 3


def test_submit_with_return_state_returns_the_final_state_in_sync_flow():
    @flow
    def f() -> dict[str, State]:
        return {"ok": add.submit(1, 2, return_state=True), "bad": explode.submit(return_state=True)}

    states = run_in_thread(f)
    ok, bad = states["ok"], states["bad"]
    assert isinstance(ok, State) and ok.is_completed() and ok.result() == 3
    assert isinstance(bad, State) and bad.is_failed()


# -- asyncflow.futures.wait ----------------------------------------------------------------------
def test_wait_without_timeout_returns_every_future_done():
    @flow
    def f() -> list[bool]:
        futures = [add.submit(i, 1) for i in range(3)]
        result = wait(futures)
        done, not_done = result  # unpacks like Prefect's DoneAndNotDoneFutures
        return [
            result.done == set(futures),
            result.not_done == set(),
            done == set(futures) and not_done == set(),
            all(fut.state.is_completed() for fut in futures),
        ]

    assert run_in_thread(f) == [True, True, True, True]


def test_wait_with_timeout_splits_done_and_not_done_and_does_not_raise():
    gate = threading.Event()

    @flow
    def f() -> tuple[bool, bool]:
        quick = add.submit(1, 2)
        quick.wait()
        slow = gated.submit(gate)
        try:
            done, not_done = wait([quick, slow], timeout=0.05)
            ok = done == {quick} and not_done == {slow}
        finally:
            gate.set()
        done_after, not_done_after = wait([quick, slow])
        return ok, done_after == {quick, slow} and not not_done_after

    assert run_in_thread(f) == (True, True)


def test_wait_with_negative_timeout_raises_value_error():
    @flow
    def f() -> str:
        future = add.submit(1, 2)
        with pytest.raises(ValueError, match="non-negative"):
            wait([future], timeout=-1)
        return "ok"

    assert run_in_thread(f) == "ok"


def test_wait_deduplicates_futures():
    @flow
    def f() -> tuple[int, int]:
        future = add.submit(1, 2)
        done, not_done = wait([future, future, future])
        return len(done), len(not_done)

    assert run_in_thread(f) == (1, 0)


def test_wait_monitors_futures_concurrently_within_one_timeout():
    """One timeout shared by every future, not one per future: a timeout per future would make this wait
    last 80 x 0.5 = 40 s. The 30 s bound is a hang guard (60 times the shared timeout), not a performance
    check: a loaded machine stretches 0.5 s a little, never by 60x."""
    gate = threading.Event()
    count, timeout = 80, 0.5

    @task
    def held(i: int) -> int:
        gate.wait(120)  # released after the wait below
        return i

    @flow
    def f() -> tuple[float, int]:
        futures = [held.submit(i) for i in range(count)]
        try:
            start = time.monotonic()
            _, not_done = wait(futures, timeout=timeout)
            elapsed = time.monotonic() - start
        finally:
            gate.set()
        return elapsed, len(not_done)

    elapsed, unfinished = run_in_thread(f)
    assert unfinished == count
    assert timeout <= elapsed < 30


# -- asyncflow.futures.as_completed -----------------------------------------------------------------
def test_as_completed_yields_futures_in_completion_order():
    gates = {name: threading.Event() for name in "abc"}

    @flow
    def f() -> list[Any]:
        futures = {name: gated.submit(gates[name], name) for name in "abc"}
        order = []
        try:
            iterator = as_completed([futures["a"], futures["b"], futures["c"]])
            for name in ["c", "a", "b"]:
                gates[name].set()
                order.append(next(iterator).result())
            with pytest.raises(StopIteration):
                next(iterator)
        finally:
            for g in gates.values():
                g.set()
        return order

    assert run_in_thread(f) == ["c", "a", "b"]


def test_as_completed_yields_already_finished_futures_first():
    gate = threading.Event()

    @flow
    def f() -> Any:
        slow = gated.submit(gate, "slow")
        quick = add.submit(1, 1)
        quick.wait()
        try:
            first = next(iter(as_completed([slow, quick])))
            first_is_quick = first is quick
        finally:
            gate.set()
        return first_is_quick

    assert run_in_thread(f) is True


def test_as_completed_timeout_raises_timeout_error_naming_unfinished_futures():
    gates = [threading.Event(), threading.Event()]

    @flow
    def f() -> list[Any]:
        quick = add.submit(2, 2)
        quick.wait()
        slow = [gated.submit(g) for g in gates]
        yielded = []
        try:
            with pytest.raises(TimeoutError, match=r"2 \(of 3\) futures unfinished"):
                for future in as_completed([quick, *slow], timeout=0.05):
                    yielded.append(future.result())
        finally:
            for g in gates:
                g.set()
        return yielded

    assert run_in_thread(f) == [4]


def test_as_completed_with_zero_timeout_still_yields_finished_futures():
    gate = threading.Event()

    @flow
    def f() -> list[Any]:
        quick = add.submit(3, 3)
        quick.wait()
        slow = gated.submit(gate)
        yielded = []
        try:
            with pytest.raises(TimeoutError):
                for future in as_completed([quick, slow], timeout=0):
                    yielded.append(future.result())
        finally:
            gate.set()
        return yielded

    assert run_in_thread(f) == [6]


def test_as_completed_deduplicates_futures():
    @flow
    def f() -> list[Any]:
        a = add.submit(1, 0)
        b = add.submit(2, 0)
        return sorted(fut.result() for fut in as_completed([a, b, a, b, a]))

    assert run_in_thread(f) == [1, 2]


# -- the list of futures returned by .map ----------------------------------------------------------
def test_mapped_futures_result_keeps_input_order():
    gates = [threading.Event() for _ in range(3)]

    @flow
    def f() -> list[Any]:
        futures = gated.map(gates, ["first", "second", "third"])
        for g in reversed(gates):  # finish in reverse order
            g.set()
        return futures.result()

    assert run_in_thread(f) == ["first", "second", "third"]


def test_mapped_futures_result_fails_fast_on_the_first_failure():
    gate = threading.Event()

    @task
    def slow_or_fail(i: int) -> int:
        if i == 1:
            raise ValueError("fast failure")
        gate.wait(GATE_TIMEOUT)
        return i

    @flow
    def f() -> bool:
        futures = slow_or_fail.map([0, 1])
        try:
            with pytest.raises(ValueError, match="fast failure"):
                futures.result()
            first_still_running = not futures[0].state.is_final()
        finally:
            gate.set()
        futures[0].wait()
        return first_still_running

    assert run_in_thread(f) is True


def test_mapped_futures_result_with_raise_on_failure_false_returns_exceptions_in_place():
    @task
    def fail_odd(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd {i}")
        return i

    @flow
    def f() -> list[Any]:
        return fail_odd.map([0, 1, 2]).result(raise_on_failure=False)

    results = run_in_thread(f)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 1"


def test_mapped_futures_result_timeout_has_a_dedicated_message():
    gate = threading.Event()

    @flow
    def f() -> str:
        futures = gated.map([gate, gate])
        try:
            with pytest.raises(TimeoutError, match="Timed out waiting for all futures to complete within"):
                futures.result(timeout=0.05)
        finally:
            gate.set()
        return "ok"

    assert run_in_thread(f) == "ok"


def test_mapped_futures_result_with_negative_timeout_raises_value_error():
    @flow
    def f() -> str:
        futures = add.map([1, 2], [3, 4])
        with pytest.raises(ValueError, match="non-negative"):
            futures.result(timeout=-1)
        return "ok"

    assert run_in_thread(f) == "ok"


# -- a flow returning futures: final state aggregation --------------------------------------------------
def test_flow_returning_a_future_returns_the_task_state():
    @flow
    def f() -> Any:
        return add.submit(2, 3)

    state = run_in_thread(f)
    assert isinstance(state, State)
    assert state.is_completed()
    assert state.result() == 5


def test_flow_returning_a_future_is_completed_with_all_states_completed():
    @flow
    def f() -> Any:
        return add.submit(2, 3)

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.is_completed()
    assert flow_state.message == "All states completed."


def test_flow_returning_a_list_of_futures_returns_a_list_of_states():
    @flow
    def f() -> Any:
        return [add.submit(i, 10) for i in range(3)]

    states = run_in_thread(f)
    assert type(states) is list
    assert all(isinstance(s, State) and s.is_completed() for s in states)
    assert [s.result() for s in states] == [10, 11, 12]


def test_flow_returning_mapped_futures_returns_a_plain_list_of_states():
    @flow
    def f() -> Any:
        return add.map([1, 2, 3], [10, 20, 30])

    states = run_in_thread(f)
    assert type(states) is list
    assert all(isinstance(s, State) for s in states)
    assert [s.result() for s in states] == [11, 22, 33]


def test_flow_returning_only_completed_futures_is_completed_with_all_states_completed():
    @flow
    def f() -> Any:
        return add.map([1, 2, 3], [1, 1, 1])

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.type is StateType.COMPLETED
    assert flow_state.message == "All states completed."


def test_flow_returning_one_failed_of_three_futures_is_failed_with_count_message():
    @flow
    def f() -> Any:
        return [explode.submit("one of three"), add.submit(1, 1), add.submit(2, 2)]

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.is_failed()
    assert flow_state.message == "1/3 states failed."
    with pytest.raises(ValueError, match="one of three"):
        flow_state.result()


def test_flow_returning_two_failed_of_three_futures_says_two_of_three():
    @flow
    def f() -> Any:
        return explode.submit("a"), explode.submit("b"), add.submit(1, 1)

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.is_failed()
    assert flow_state.message == "2/3 states failed."


def test_calling_a_flow_that_returned_a_failed_future_raises_the_task_error():
    @flow
    def f() -> Any:
        return explode.submit("surfaced")

    with pytest.raises(ValueError, match="surfaced"):
        run_in_thread(f)


def test_failed_task_that_is_not_returned_does_not_fail_the_flow():
    @flow
    def f() -> str:
        explode.submit("ignored")
        return "flow value"

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.is_completed()
    assert flow_state.result() == "flow value"


@pytest.mark.anyio
async def test_async_flow_returning_futures_aggregates_their_states():
    @flow
    async def ok() -> Any:
        return [add_async.submit(1, 1), add.submit(2, 2)]

    @flow
    async def bad() -> Any:
        return [add_async.submit(1, 1), explode_async.submit(), add.submit(2, 2)]

    with anyio.fail_after(10):
        states = await ok()
        ok_state = await ok(return_state=True)
        bad_state = await bad(return_state=True)
    assert [await s.result() for s in states] == [2, 4]
    assert ok_state.is_completed() and ok_state.message == "All states completed."
    assert bad_state.is_failed() and bad_state.message == "1/3 states failed."


@pytest.mark.anyio
async def test_async_flow_returning_mapped_futures_returns_a_plain_list_of_states():
    @flow
    async def f() -> Any:
        return add_async.map([1, 2], [3, 4])

    with anyio.fail_after(10):
        states = await f()
    assert type(states) is list
    assert [await s.result() for s in states] == [4, 6]


# -- failed upstream, allow_failure ----------------------------------------------------------------------
def test_failed_upstream_leaves_downstream_not_ready_and_not_run(store):
    ran: list[Any] = []

    @task
    def downstream(value: Any) -> Any:
        ran.append(value)
        return value

    @flow
    def f() -> tuple[Any, State]:
        upstream = explode.submit("upstream broke")
        down = downstream.submit(upstream)
        down.wait()
        return down.task_run_id, down.state

    down_id, state = run_in_thread(f)
    assert ran == []
    assert state.name == "NotReady"
    assert state.type is StateType.PENDING
    assert state.message and "upstream" in state.message.lower()
    assert state_names(store, down_id) == ["Pending", "NotReady"]


def test_failed_upstream_nested_in_a_collection_leaves_downstream_not_ready():
    ran: list[Any] = []

    @task
    def downstream(values: Any) -> Any:
        ran.append(values)
        return values

    @flow
    def f() -> dict[str, State]:
        upstream = explode.submit()
        down = downstream.submit({"items": [1, upstream]})
        down.wait()
        return {"state": down.state}

    state = run_in_thread(f)["state"]
    assert ran == []
    assert state.name == "NotReady"


def test_not_ready_propagates_down_a_chain_of_tasks():
    ran: list[Any] = []

    @task
    def step(value: Any) -> Any:
        ran.append(value)
        return value

    @flow
    def f() -> list[str]:
        first = explode.submit()
        second = step.submit(first)
        third = step.submit(second)
        third.wait()
        return [second.state.name, third.state.name]

    assert run_in_thread(f) == ["NotReady", "NotReady"]
    assert ran == []


@pytest.mark.anyio
async def test_failed_upstream_leaves_downstream_not_ready_in_async_flow():
    ran: list[Any] = []

    @task
    async def downstream(value: Any) -> Any:
        ran.append(value)
        return value

    @flow
    async def f() -> dict[str, State]:
        upstream = explode_async.submit()
        down = downstream.submit(upstream)
        return {"state": await _state_of(down)}

    with anyio.fail_after(10):
        state = (await f())["state"]
    assert ran == []
    assert state.name == "NotReady"


async def _state_of(future: TaskRunFuture) -> State:
    with contextlib.suppress(Exception):  # only the state matters here
        await future
    return future.state


def test_allow_failure_lets_downstream_run_and_receive_the_exception():
    @flow
    def f() -> Any:
        upstream = explode.submit("allowed")
        return receive.submit(allow_failure(upstream)).result()

    received = run_in_thread(f)
    assert isinstance(received, ValueError)
    assert str(received) == "allowed"


def test_allow_failure_around_a_collection_gives_the_exception_inside_it():
    @flow
    def f() -> Any:
        upstream = explode.submit("in a list")
        return receive.submit(allow_failure([upstream, 7])).result()

    received = run_in_thread(f)
    assert isinstance(received, list)
    assert isinstance(received[0], ValueError) and str(received[0]) == "in a list"
    assert received[1] == 7


def test_allow_failure_with_a_completed_upstream_passes_the_value():
    @flow
    def f() -> Any:
        return receive.submit(allow_failure(add.submit(4, 5))).result()

    assert run_in_thread(f) == 9


@pytest.mark.anyio
async def test_allow_failure_in_async_flow():
    @flow
    async def f() -> Any:
        upstream = explode_async.submit("async allowed")
        return await receive.submit(allow_failure(upstream))

    with anyio.fail_after(10):
        received = await f()
    assert isinstance(received, ValueError) and str(received) == "async allowed"


# -- wait_for --------------------------------------------------------------------------------------
def test_wait_for_delays_the_downstream_until_the_upstream_finished():
    gate = threading.Event()
    events: list[str] = []

    @task
    def first(gate: threading.Event) -> str:
        gate.wait(GATE_TIMEOUT)
        events.append("first")
        return "first"

    @task
    def second() -> str:
        events.append("second")
        return "second"

    @flow
    def f() -> tuple[bool, Any]:
        a = first.submit(gate)
        try:
            b = second.submit(wait_for=[a])
            b.wait(0.1)
            second_waited = not b.state.is_final()
        finally:
            gate.set()
        return second_waited, b.result()

    second_waited, value = run_in_thread(f)
    assert second_waited is True
    assert value == "second"
    assert events == ["first", "second"]


def test_wait_for_on_a_direct_call_waits_for_the_upstream():
    gate = threading.Event()
    events: list[str] = []

    @task
    def first(gate: threading.Event) -> None:
        gate.wait(GATE_TIMEOUT)
        events.append("first")

    @task
    def second() -> str:
        events.append("second")
        return "second"

    @flow
    def f() -> str:
        a = first.submit(gate)
        threading.Timer(0.05, gate.set).start()
        return second(wait_for=[a])

    assert run_in_thread(f) == "second"
    assert events == ["first", "second"]


def test_wait_for_a_failed_upstream_leaves_downstream_not_ready_and_not_run():
    ran: list[str] = []

    @task
    def cleanup() -> str:
        ran.append("cleanup")
        return "cleaned"

    @flow
    def f() -> dict[str, State]:
        upstream = explode.submit()
        down = cleanup.submit(wait_for=[upstream])
        down.wait()
        return {"state": down.state}

    state = run_in_thread(f)["state"]
    assert ran == []
    assert state.name == "NotReady"
    assert state.type is StateType.PENDING


def test_wait_for_with_allow_failure_runs_after_a_failed_upstream():
    @task
    def cleanup() -> str:
        return "cleaned"

    @flow
    def f() -> Any:
        upstream = explode.submit()
        return cleanup.submit(wait_for=[allow_failure(upstream)]).result()

    assert run_in_thread(f) == "cleaned"


def test_wait_for_with_allow_failure_over_mapped_futures_runs_cleanup():
    @task
    def fail_odd(i: int) -> int:
        if i % 2:
            raise ValueError(i)
        return i

    @task
    def cleanup() -> str:
        return "cleaned"

    @flow
    def f() -> Any:
        mapped = fail_odd.map([0, 1, 2])
        return cleanup.submit(wait_for=[allow_failure(mapped)]).result()

    assert run_in_thread(f) == "cleaned"


@pytest.mark.anyio
async def test_wait_for_in_async_flow_orders_runs():
    events: list[str] = []

    @task
    async def first() -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        events.append("first")

    @task
    async def second() -> None:
        events.append("second")

    @flow
    async def f() -> None:
        a = first.submit()
        b = second.submit(wait_for=[a])
        await b

    with anyio.fail_after(10):
        await f()
    assert events == ["first", "second"]


# -- a task depending on its own future -------------------------------------------------------------
def test_task_depending_on_its_own_future_raises_an_error_mentioning_deadlock():
    gate = threading.Event()

    @task
    def say_hello(name: str) -> str:
        return f"Hello {name}!"

    @flow
    def f() -> Any:
        dependencies: list[Any] = [gated.submit(gate)]
        me = say_hello.submit("marvin", wait_for=dependencies)
        dependencies.append(me)  # the run now waits (through wait_for) on itself
        gate.set()
        return me.result()

    with pytest.raises(ValueError, match="deadlock"):
        run_in_thread(f)


# -- structured scope ---------------------------------------------------------------------------
def test_unresolved_futures_are_run_to_completion_before_a_sync_flow_ends(store):
    finished: list[str] = []

    @task
    def slow_sync() -> str:
        time.sleep(0.1)
        finished.append("sync")
        return "sync"

    @task
    async def slow_async() -> str:
        await anyio.sleep(0.1)
        finished.append("async")
        return "async"

    @flow
    def f() -> tuple[Any, Any]:
        a = slow_sync.submit()
        b = slow_async.submit()
        return a.task_run_id, b.task_run_id  # neither future is resolved here

    ids = run_in_thread(f)
    assert sorted(finished) == ["async", "sync"]
    for run_id in ids:
        assert state_names(store, run_id)[-1] == "Completed"


@pytest.mark.anyio
async def test_unresolved_futures_are_run_to_completion_before_an_async_flow_ends(store):
    finished: list[str] = []

    @task
    def slow_sync() -> str:
        time.sleep(0.1)
        finished.append("sync")
        return "sync"

    @task
    async def slow_async() -> str:
        await anyio.sleep(0.1)
        finished.append("async")
        return "async"

    @flow
    async def f() -> tuple[Any, Any]:
        a = slow_sync.submit()
        b = slow_async.submit()
        return a.task_run_id, b.task_run_id

    with anyio.fail_after(10):
        ids = await f()
    assert sorted(finished) == ["async", "sync"]
    for run_id in ids:
        assert state_names(store, run_id)[-1] == "Completed"


def test_flow_does_not_end_before_its_unresolved_runs_finish(store):
    gate = threading.Event()
    flow_returned = threading.Event()

    @flow
    def f() -> Any:
        future = gated.submit(gate)
        return future.task_run_id

    outcome: dict[str, Any] = {}

    def call_flow() -> None:
        outcome["state"] = f(return_state=True)
        flow_returned.set()

    thread = threading.Thread(target=call_flow, daemon=True)
    thread.start()
    try:
        # the flow body has returned, but its submitted run is gated: the flow must not be finished
        assert not flow_returned.wait(0.15)
    finally:
        gate.set()
    thread.join(10)
    assert flow_returned.is_set()
    flow_state = outcome["state"]
    task_run_id = flow_state.result()
    assert state_names(store, task_run_id) == ["Pending", "Running", "Completed"]
    assert flow_state.is_completed()


# -- errors never vanish: unobserved failures are reported ------------------------------------------------
@task
def unobserved_failure() -> None:
    raise ValueError("kaboom-unobserved")


def _warning_lines_about(err: str, needle: str) -> list[str]:
    return [line for line in err.splitlines() if "WARNING" in line and needle in line]


def test_unobserved_failed_submitted_task_is_reported_in_a_warning_at_flow_end(capsys):
    @flow
    def f() -> str:
        unobserved_failure.submit()
        return "done"

    assert f() == "done"
    err = capsys.readouterr().err
    assert _warning_lines_about(err, "unobserved_failure"), err


def test_observed_failed_submitted_task_is_not_reported_as_unobserved(capsys):
    @flow
    def f() -> str:
        future = unobserved_failure.submit()
        future.result(raise_on_failure=False)
        return "done"

    assert f() == "done"
    err = capsys.readouterr().err
    assert not _warning_lines_about(err, "unobserved_failure"), err


def test_failure_observed_by_a_downstream_with_allow_failure_is_not_reported_as_unobserved(capsys):
    @flow
    def f() -> Any:
        future = unobserved_failure.submit()
        return receive.submit(allow_failure(future)).result()

    assert isinstance(f(), ValueError)
    err = capsys.readouterr().err
    assert not _warning_lines_about(err, "unobserved_failure"), err


@pytest.mark.anyio
async def test_unobserved_failure_in_async_flow_is_reported_in_a_warning(capsys):
    @flow
    async def f() -> str:
        unobserved_failure.submit()
        return "done"

    with anyio.fail_after(10):
        assert await f() == "done"
    err = capsys.readouterr().err
    assert _warning_lines_about(err, "unobserved_failure"), err


@pytest.mark.anyio
async def test_awaited_failure_in_async_flow_is_not_reported_as_unobserved(capsys):
    @flow
    async def f() -> str:
        future = unobserved_failure.submit()
        with pytest.raises(ValueError):
            await future
        return "done"

    with anyio.fail_after(10):
        assert await f() == "done"
    err = capsys.readouterr().err
    assert not _warning_lines_about(err, "unobserved_failure"), err


def test_repr_of_a_future_does_not_count_as_observing_its_failure(capsys):
    @task
    def boom():
        raise ValueError("seen only in the warning")

    @flow
    def f():
        print(repr(boom.submit()))

    f()
    assert "nothing looked at its outcome" in capsys.readouterr().err


def test_a_raising_done_callback_is_logged_and_breaks_nothing(capsys):
    def broken(future):
        raise RuntimeError("callback bug")

    @flow
    def f() -> int:
        future = add.submit(1, 2)
        future.add_done_callback(broken)
        return future.result()

    assert f() == 3
    assert "A done callback of task run 'add-0' raised RuntimeError('callback bug')" in capsys.readouterr().err


def test_reading_a_running_state_is_not_observing_the_outcome(capsys):
    gate = threading.Event()

    @task
    def fails_later():
        gate.wait(5)
        raise ValueError("later")

    @flow
    def f() -> None:
        future = fails_later.submit()
        assert future.state.name in ("Pending", "Running")
        gate.set()

    f()
    assert "nothing looked at its outcome" in capsys.readouterr().err
