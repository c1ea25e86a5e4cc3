"""A flow run owns every run it starts (issue 10): queued runs, runs on the event loop and runs in
pool threads all end when the flow ends, whatever way it ends; nothing hangs, nothing outlives it,
nothing is submitted into a flow that has ended. Each test is a finding of the engine review
(`reviews/2026-12-01-engine.md`, B1-B4, B9, B10, L1), on asyncio and trio where it applies, on the
SQLite store and the memory store."""

from __future__ import annotations

import contextvars
import threading
import time

import anyio
import anyio.lowlevel
import pytest
from helpers import Body

from asyncflow import flow, task
from asyncflow._engine import scope as scope_module
from asyncflow._engine import task_run as task_run_module
from asyncflow.exceptions import ScopeClosedError
from asyncflow.testing import isolated_home


@pytest.fixture(params=["sqlite", "memory"])
def runs(request, store):
    """The store the runs are recorded in: a real SQLite file, and the memory store."""
    if request.param == "memory":
        yield store
        return
    with isolated_home() as sqlite_store:
        yield sqlite_store


HANG_GUARD = 60.0  # seconds: only a broken test waits this long


def until(condition) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, "not within the hang guard"
        time.sleep(0.005)


def final_names(store, ids):
    store.flush()
    return [store.read_task_run(run_id).state.name for run_id in ids]


# -- B1: more queued runs than a worker drives between checkpoints ---------------------------------
@pytest.mark.anyio
async def test_a_failing_flow_with_hundreds_of_queued_runs_ends_and_resolves_every_one(runs):
    ids = []

    @task
    async def quick(i):
        return i  # never suspends: one worker drives the queue

    @flow
    async def f():
        ids.extend(quick.submit(i).task_run_id for i in range(200))
        await anyio.lowlevel.checkpoint()  # the worker runs its first batch and reaches its checkpoint
        raise ValueError("boom")

    with anyio.fail_after(20):
        state = await f(return_state=True)
    assert state.is_failed() and "boom" in state.message
    names = final_names(runs, ids)
    assert set(names) <= {"Completed", "Cancelled"} and "Cancelled" in names


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_cancelling_a_flow_with_hundreds_of_queued_runs_ends_it_at_once(store):
    ids = []

    @task
    async def quick(i):
        return i

    @flow
    async def f():
        ids.extend(quick.submit(i).task_run_id for i in range(200))
        await anyio.lowlevel.checkpoint()
        await anyio.sleep(100)

    start = anyio.current_time()
    with anyio.move_on_after(5):
        await f()
    assert anyio.current_time() - start == pytest.approx(5)
    [flow_run] = store.read_flow_runs()
    assert flow_run.state.name == "Cancelled"
    assert set(final_names(store, ids)) <= {"Completed", "Cancelled"}


# -- B2: trio's Cancelled is never constructed ---------------------------------------------------------
@pytest.mark.anyio
async def test_a_flow_that_fails_before_its_submitted_runs_start_ends_failed_with_them_cancelled(runs):
    ids = []

    @task
    async def quick(i):
        return i

    @flow
    async def f():
        ids.extend(quick.submit(i).task_run_id for i in range(3))
        raise ValueError("the flow fails before its runs start")

    with anyio.fail_after(20):
        state = await f(return_state=True)
    assert state.is_failed()
    assert final_names(runs, ids) == ["Cancelled"] * 3
    assert "before it started" in runs.read_task_run(ids[0]).state.message


@pytest.mark.anyio
async def test_a_flow_whose_deadline_passes_with_runs_queued_ends_timed_out_with_them_cancelled(runs):
    ids = []

    @task
    async def quick(i):
        return i

    @flow(timeout_seconds=0.05)
    async def f():
        ids.extend(quick.submit(i).task_run_id for i in range(3))
        time.sleep(0.1)  # noqa: ASYNC251 - the deadline passes while nothing could start them
        await anyio.sleep(10)

    with anyio.fail_after(20):
        state = await f(return_state=True)
    assert state.name == "TimedOut"
    assert final_names(runs, ids) == ["Cancelled"] * 3


# -- B3: sync runs in pool threads end with their flow ---------------------------------------------
def _slow_sync_task(body: Body):
    @task
    def slow_sync():
        body.block()  # blocks until the test lets it go on; the line after it must never run
        return "done"

    return slow_sync


@pytest.mark.anyio
async def test_a_sync_run_in_a_pool_thread_does_not_outlive_its_async_flows_deadline(runs):
    body = Body()
    slow_sync = _slow_sync_task(body)
    ids = []

    @flow(timeout_seconds=0.1)
    async def f():
        ids.append(slow_sync.submit().task_run_id)
        await anyio.sleep(10)

    state = await f(return_state=True)
    assert state.name == "TimedOut"
    assert final_names(runs, ids) == ["Cancelled"]  # already when the flow returns
    assert "timed out" in runs.read_task_run(ids[0]).state.message
    # the blocking call returns now: no line after it runs (if the run had started before the deadline)
    await anyio.to_thread.run_sync(body.assert_stopped)
    assert final_names(runs, ids) == ["Cancelled"]


async def _cancel_a_flow_with_a_pool_thread_run(body: Body) -> list:
    """An async flow submits a sync task that blocks; once it runs, the code awaiting the flow is cancelled."""
    slow_sync = _slow_sync_task(body)
    ids = []

    @flow
    async def f():
        ids.append(slow_sync.submit().task_run_id)
        await anyio.sleep(10)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(body.cancel_once_entered, scope)
            await f()
    assert scope.cancelled_caught
    return ids


@pytest.mark.anyio
async def test_a_sync_run_in_a_pool_thread_does_not_outlive_the_cancellation_of_its_async_flow(runs):
    body = Body()
    ids = await _cancel_a_flow_with_a_pool_thread_run(body)
    runs.flush()
    assert [r.state.name for r in runs.read_flow_runs()] == ["Cancelled"]
    assert final_names(runs, ids) == ["Cancelled"]
    await anyio.to_thread.run_sync(body.assert_stopped)
    assert final_names(runs, ids) == ["Cancelled"]


def test_a_sync_flows_timeout_ends_its_submitted_runs_before_it_returns(runs):
    body = Body()
    slow_sync = _slow_sync_task(body)
    ids = []

    @flow(timeout_seconds=0.4)  # long enough for the body to submit on a loaded machine
    def f():
        ids.append(slow_sync.submit().task_run_id)
        time.sleep(5)

    state = f(return_state=True)
    assert state.name == "TimedOut"
    assert len(ids) == 1
    assert final_names(runs, ids) == ["Cancelled"]
    body.assert_stopped()
    assert final_names(runs, ids) == ["Cancelled"]


# -- B4: submitting into a flow that has ended ---------------------------------------------------------
@pytest.mark.anyio
async def test_submitting_into_a_flow_that_has_ended_raises_a_clear_error_and_the_program_lives(store):
    @task
    async def child():
        return 1

    flow_over = threading.Event()
    outcome: list[BaseException] = []
    answered = threading.Event()

    def late_submitter() -> None:  # a thread of the user's that outlives its flow
        flow_over.wait(10)
        try:
            child.submit()
        except BaseException as exc:
            outcome.append(exc)
        answered.set()

    @flow
    async def f():
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(late_submitter,), daemon=True).start()

    await f()
    flow_over.set()
    await anyio.to_thread.run_sync(answered.wait, 10)
    assert isinstance(outcome[0], ScopeClosedError)
    assert "after Flow run" in str(outcome[0]) and "ended" in str(outcome[0])
    await anyio.sleep(0.05)  # the event loop is alive and well


def test_submitting_into_a_sync_flow_that_has_ended_raises_a_clear_error(store):
    @task
    def child():
        return 1

    saved = []

    @flow
    def f():
        saved.append(contextvars.copy_context())

    f()
    with pytest.raises(ScopeClosedError, match="ended"):
        saved[0].run(child.submit)


# -- B9: a cancel between "may it start?" and its start ----------------------------------------------
def test_a_run_cancelled_right_after_its_start_check_never_runs_its_code(runs, monkeypatch):
    original = scope_module.Scope.claim_start
    reached = threading.Event()

    claimed = threading.Event()

    def claim_then_preempted(self, call):
        ok = original(self, call)
        if call.task.name == "slow_sync":
            claimed.set()
            until(lambda: self.cancelled is not None)  # the flow fails and cancels the scope right here
        return ok

    monkeypatch.setattr(scope_module.Scope, "claim_start", claim_then_preempted)
    ids = []

    @task
    def slow_sync():
        reached.set()

    @flow
    def f():
        ids.append(slow_sync.submit().task_run_id)
        assert claimed.wait(HANG_GUARD)  # the run is past its start check, not yet started
        raise RuntimeError("the flow fails")

    state = f(return_state=True)
    assert state.is_failed()
    assert not reached.wait(0.5), "the cancelled run's code ran"
    assert final_names(runs, ids) == ["Cancelled"]


# -- B10: done callbacks belong to the run -------------------------------------------------------------
def test_a_flow_returns_only_after_its_childrens_done_callbacks_have_run(store):
    events = []

    @task
    def add(a, b):
        return a + b

    def slow_callback(future):
        time.sleep(0.05)
        events.append("done callback finished")

    @flow
    def f():
        future = add.submit(1, 2)
        future.add_done_callback(slow_callback)
        return future.result()

    for _ in range(5):
        events.clear()
        assert f() == 3
        events.append("flow returned")
        assert events == ["done callback finished", "flow returned"]


@pytest.mark.anyio
async def test_an_async_flow_returns_only_after_its_childrens_done_callbacks_have_run(store):
    events = []

    @task
    async def add(a, b):
        await anyio.sleep(0.01)
        return a + b

    def slow_callback(future):
        time.sleep(0.05)
        events.append("done callback finished")

    @flow
    async def f():
        add.submit(1, 2).add_done_callback(slow_callback)

    await f()
    events.append("flow returned")
    assert events == ["done callback finished", "flow returned"]


def test_a_done_callback_can_read_the_result_of_its_future(store):
    seen = []

    @task
    def add(a, b):
        return a + b

    @flow
    def f():
        add.submit(1, 2).add_done_callback(lambda future: seen.append(future.result()))

    f()
    assert seen == [3]


# -- L1: an error of asyncflow's own in a pool thread still resolves the run ----------------------------
def test_an_engine_error_in_a_pool_thread_run_resolves_it_crashed_and_the_flow_ends(store, monkeypatch):
    real_context = task_run_module.TaskRunContext

    class BrokenContext(real_context):
        __slots__ = ()

        def __init__(self, task, *args, **kwargs):
            if task.name == "victim":
                raise RuntimeError("an internal error before the run's own error handling")
            super().__init__(task, *args, **kwargs)

    monkeypatch.setattr(task_run_module, "TaskRunContext", BrokenContext)

    @task
    def victim():
        return 1

    @flow
    def f():
        return victim.submit().wait()

    from helpers import run_in_thread

    run_in_thread(f, timeout=20)
    [run] = store.read_task_runs()
    assert run.state.name == "Crashed" and "internal error" in run.state.message


# -- the scope refuses nothing while open, resolves everything when cancelled ----------------------
def test_a_sync_flows_failure_stops_runs_waiting_for_a_thread_slot(store):
    from asyncflow.task_runners import ThreadPoolTaskRunner

    started = []

    @task
    def blocker(i):
        started.append(i)
        time.sleep(0.3)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def f():
        for i in range(5):
            blocker.submit(i)
        time.sleep(0.05)
        raise RuntimeError("fails while four runs wait for the one thread")

    state = f(return_state=True)
    assert state.is_failed()
    assert started == [0]
    assert sorted(run.state.name for run in store.read_task_runs()) == ["Cancelled"] * 5


# -- flows called inside the runs of a flow end with it (review of the ownership work) ----------------
class Leaves:
    """Both leaves run until the outer flow's deadline stops them (the sync one blocks until the test lets it
    go on, `release()`): `started` counts them, `ran_to_end` says one ran past its wait."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ran_to_end, self.proceed, self.sync_ended = threading.Event(), threading.Event(), threading.Event()

    def release(self) -> None:
        """The deadline has passed: let the sync leaf go on; it stops before its next line."""
        assert sorted(self.started) == ["async", "sync"]  # (both ran before the deadline)
        self.proceed.set()
        assert self.sync_ended.wait(HANG_GUARD)
        assert not self.ran_to_end.is_set()


OUTER_TIMEOUT = 2.0  # real time: both leaves must have started by then (they take a few ms; generous for load)


def _nested(leaves: Leaves):
    @task
    def leaf_sync():
        leaves.started.append("sync")
        try:
            leaves.proceed.wait(HANG_GUARD)
            leaves.ran_to_end.set()
        finally:
            leaves.sync_ended.set()

    @task
    async def leaf_async():
        leaves.started.append("async")
        await anyio.sleep(3600)
        leaves.ran_to_end.set()

    @flow
    def sub():
        a, b = leaf_sync.submit(), leaf_async.submit()
        return a.result(), b.result()

    @task
    def mid():
        return sub()

    return mid


def _all_runs(store):
    store.flush()
    return sorted([(r.flow_name, r.state.name) for r in store.read_flow_runs()] +
                  [(r.task_name, r.state.name) for r in store.read_task_runs()])


def test_a_subflow_called_in_a_pool_thread_task_ends_with_its_sync_flows_deadline(runs):
    leaves = Leaves()
    mid = _nested(leaves)

    @flow(timeout_seconds=OUTER_TIMEOUT)
    def outer():
        return mid.submit().result()

    assert outer(return_state=True).name == "TimedOut"
    assert _all_runs(runs) == [("leaf_async", "Cancelled"), ("leaf_sync", "Cancelled"), ("mid", "Cancelled"),
                               ("outer", "TimedOut"), ("sub", "Cancelled")]
    [sub_run] = [r for r in runs.read_flow_runs() if r.flow_name == "sub"]
    assert "because Flow run" in sub_run.state.message and "timed out" in sub_run.state.message
    leaves.release()


@pytest.mark.anyio
async def test_a_subflow_called_in_a_pool_thread_task_ends_with_its_async_flows_deadline(runs):
    leaves = Leaves()
    mid = _nested(leaves)

    @flow(timeout_seconds=OUTER_TIMEOUT)
    async def outer():
        return await mid.submit()

    assert (await outer(return_state=True)).name == "TimedOut"
    assert _all_runs(runs) == [("leaf_async", "Cancelled"), ("leaf_sync", "Cancelled"), ("mid", "Cancelled"),
                               ("outer", "TimedOut"), ("sub", "Cancelled")]
    await anyio.to_thread.run_sync(leaves.release)


@pytest.mark.anyio
async def test_async_runs_of_a_sync_subflow_in_a_pool_thread_run_whatever_the_outer_backend(store):
    """The pool thread's context must not say "trio" to the helper loop (which is asyncio)."""

    @task
    async def leaf():
        await anyio.sleep(0.01)
        return 1

    @flow
    def sub():
        return leaf.submit().result(timeout=10)

    @task
    def mid():
        return sub()

    @flow
    async def outer():
        return await mid.submit()

    with anyio.fail_after(20):
        assert await outer() == 1


@pytest.mark.anyio
async def test_a_stopped_pool_thread_run_reports_its_final_state_once(runs):
    from asyncflow._engine import interrupt

    body = Body()
    ids = await _cancel_a_flow_with_a_pool_thread_run(body)
    await anyio.to_thread.run_sync(body.assert_stopped)  # its blocking call returns now, and it raises
    await anyio.to_thread.run_sync(until, lambda: not interrupt.watched())  # ... and it has left the run's code
    runs.flush()
    finished = [line.message for line in runs.read_logs(task_run_id=str(ids[0])) if "Finished in state" in line.message]
    assert len(finished) == 1 and "flow run was cancelled" in finished[0]
    assert [s.name for s in runs.read_states(ids[0])] == ["Pending", "Running", "Cancelled"]


@pytest.mark.anyio
@pytest.mark.parametrize("raised", [KeyboardInterrupt(), SystemExit(3)], ids=["ctrl-c", "exit"])
async def test_an_interrupt_in_an_async_flow_propagates_as_itself_not_in_an_exception_group(store, raised):
    @task
    async def sleeper():
        await anyio.sleep(10)

    @flow
    async def f():
        sleeper.submit()
        await anyio.sleep(0.01)
        raise raised

    with pytest.raises(type(raised)) as info:
        await f()
    assert info.value is raised
    [flow_run] = store.read_flow_runs()
    assert flow_run.state.name == "Crashed" and type(raised).__name__ in flow_run.state.message
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]
