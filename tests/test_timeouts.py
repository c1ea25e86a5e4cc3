"""Timeouts that stop work (SPEC §4): async code is cancelled at the deadline; sync code is
abandoned at the deadline and its thread runs no further user code. Async timeouts run on virtual
time (exact times, no sleeping); sync timeouts use real threads with short real deadlines, and sync
bodies that block until the test lets them go on (`Body`): what they prove is the order of events
(the caller returned while the body was still blocked; the body ended without running its next
line), never how long anything took, so a loaded machine cannot make them fail."""

import subprocess
import sys
import textwrap
import threading
import time

import anyio
import pytest
from helpers import HANG_GUARD, Body

from asyncflow import flow, runtime, task
from asyncflow._engine.interrupt import SyncRunAborted
from asyncflow.testing import state_names


# -- async code, virtual time ----------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_async_task_times_out_exactly_at_its_deadline(store):
    @task(timeout_seconds=2.5)
    async def slow():
        await anyio.sleep(100)

    start = anyio.current_time()
    state = await slow(return_state=True)
    assert anyio.current_time() - start == pytest.approx(2.5)
    assert state.name == "TimedOut" and "the coroutine was cancelled at the deadline" in state.message
    assert state_names(store, state.state_details.task_run_id) == ["Pending", "Running", "TimedOut"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_a_task_never_outlives_its_flows_deadline(store):
    @task(timeout_seconds=60)
    async def slow():
        await anyio.sleep(100)

    @flow(timeout_seconds=3)
    async def f():
        return await slow(return_state=True)

    start = anyio.current_time()
    state = await f(return_state=True)
    assert anyio.current_time() - start == pytest.approx(3)
    assert state.name == "TimedOut" and "exceeded timeout of 3 second(s)" in state.message
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_no_submitted_run_starts_after_the_flow_deadline(store):
    started = []

    @task
    async def step(i):
        started.append((i, anyio.current_time()))
        await anyio.sleep(1)

    @flow(timeout_seconds=2.5)
    async def f():
        deadline = anyio.current_effective_deadline()
        for i in range(5):
            await step(i)  # each takes 1 s: the third is cut off, the others never start
        return deadline

    state = await f(return_state=True)
    assert state.name == "TimedOut"
    assert [i for i, _ in started] == [0, 1, 2]
    assert [r.state.name for r in store.read_task_runs()] == ["Completed", "Completed", "Cancelled"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_timed_out_async_task_is_retried_with_exact_delays(store):
    attempts = []

    @task(timeout_seconds=1, retries=2, retry_delay_seconds=[10, 20])
    async def flaky():
        attempts.append(anyio.current_time())
        if len(attempts) < 3:
            await anyio.sleep(5)
        return "ok"

    from asyncflow.testing import fake_clock

    with fake_clock() as clock:
        state = await flaky(return_state=True)
    assert await state.result() == "ok" and clock.slept == [10.0, 20.0]
    assert state_names(store, state.state_details.task_run_id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


# -- sync code, real threads -------------------------------------------------------------------------
def test_sync_task_timeout_stops_the_function_and_the_caller_moves_on(store):
    """The seed's example: the line after the blocking call (time.sleep there) must never execute."""
    body = Body()

    @task(timeout_seconds=0.2)
    def show_timeouts():
        body.block()

    state = show_timeouts(return_state=True)
    assert state.name == "TimedOut" and state.is_failed()
    assert "stopped at the deadline" in state.message and "SyncRunAborted" in state.message
    body.assert_stopped()


MAX_RUNS = 20


def test_user_code_that_swallows_the_stop_is_stopped_again(store):
    """`except Exception:` does not catch the stop; code that catches it anyway (`except BaseException:`,
    a bare `except:`) and carries on is stopped again. (Code that swallows every stop in a loop can keep
    running: a documented limit, see asyncflow/_engine/interrupt.py.)

    A run whose thread started after its deadline (a loaded machine) is stopped before it reaches the
    code that swallows the stop: it is run again until one got there (`MAX_RUNS`: a hang guard)."""
    for run in range(MAX_RUNS):
        proceed, reached, caught, ended = threading.Event(), threading.Event(), [], threading.Event()
        stopped_by: list[type[BaseException] | None] = []

        @task(timeout_seconds=0.1)
        def stubborn(proceed=proceed, reached=reached, caught=caught, ended=ended, stopped_by=stopped_by,
                     late=run == 0):
            end = time.monotonic() + (30 if late else 0)  # the first run is late, as a late thread is: ...
            while time.monotonic() < end:  # ... stopped here, before the try (30 s: a hang guard)
                pass
            try:
                try:
                    reached.set()
                    proceed.wait(HANG_GUARD)  # stopped here at the deadline, raised when the wait returns ...
                except Exception:
                    caught.append("Exception")
                except BaseException:  # ... and swallowed
                    caught.append("BaseException")
                while True:  # carries on: only another stop can end this loop
                    time.sleep(0.01)
            finally:
                stopped_by.append(sys.exc_info()[0])
                ended.set()

        assert stubborn(return_state=True).name == "TimedOut"
        proceed.set()
        if reached.is_set():
            break
    assert reached.is_set(), f"in {MAX_RUNS} runs the function never started before its deadline"
    assert ended.wait(HANG_GUARD)
    assert caught == ["BaseException"] and stopped_by == [SyncRunAborted]


def test_timed_out_sync_task_can_be_retried(store):
    attempts = []

    body = Body()

    # The attempt decides by its run count, not by how often the body ran: on a loaded machine the first
    # attempt's deadline can pass before its body starts (then only the retry runs it). The retry has the
    # same time limit, so it is long enough for a quick return under load.
    @task(timeout_seconds=1.0, retries=1)
    def slow_then_fast():
        attempts.append(runtime.task_run.run_count)
        if runtime.task_run.run_count == 1:
            body.block()
        return "ok"

    state = slow_then_fast(return_state=True)
    body.assert_stopped()
    assert state.result() == "ok" and attempts in ([1, 2], [2])
    assert state_names(store, state.state_details.task_run_id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]


def test_stopping_a_timed_out_task_never_hits_other_runs(store):
    """Many runs finish right around their deadline, next to untimed runs in the same pool."""

    @task(timeout_seconds=0.05)
    def around_the_deadline(i):
        time.sleep(0.045 + (i % 3) * 0.005)
        return i

    @task
    def bystander(i):
        total = 0
        for k in range(20000):
            total += k
        return i

    @flow
    def f():
        timed = [around_the_deadline.submit(i) for i in range(30)]
        others = [bystander.submit(i) for i in range(200)]
        results = [o.result() for o in others]
        for t in timed:
            t.wait()
        return results, [t.state.name for t in timed]

    others, timed = f()
    assert others == list(range(200))
    assert set(timed) <= {"Completed", "TimedOut"}


@pytest.mark.anyio
async def test_sync_task_timeout_in_async_code(store):
    body = Body()

    @task(timeout_seconds=0.1)
    def slow():
        body.block()

    state = await slow(return_state=True)
    assert state.name == "TimedOut"
    await anyio.to_thread.run_sync(body.assert_stopped)


def test_sync_flow_timeout_stops_the_body(store):
    body = Body()

    @task
    def quick():
        return 1

    @flow(timeout_seconds=0.2)
    def f():
        quick()
        body.block()
        quick()

    state = f(return_state=True)
    assert state.name == "TimedOut" and "Flow run exceeded timeout of 0.2 second(s)" in state.message
    body.assert_stopped()
    assert [r.state.name for r in store.read_task_runs()] == ["Completed"]


@pytest.mark.anyio
async def test_cancelling_an_async_flow_stops_its_running_sync_task(store):
    body = Body()

    @task(timeout_seconds=30)
    def slow():
        body.block()

    @flow
    async def f():
        await slow()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(body.cancel_once_entered, scope)
            await f()
    assert scope.cancelled_caught
    await anyio.to_thread.run_sync(body.assert_stopped)
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]


def test_a_run_still_open_at_interpreter_exit_is_recorded_crashed(tmp_path):
    script = textwrap.dedent("""
        import atexit, threading, time

        def report():  # registered before asyncflow is imported: atexit runs it after asyncflow's handler
            from asyncflow._store import get_store
            [run] = get_store().read_flow_runs()
            print("FINAL", run.state.name, run.state.message)

        atexit.register(report)
        from asyncflow import flow

        running = threading.Event()

        @flow
        def forever():
            running.set()
            time.sleep(3600)

        threading.Thread(target=forever, daemon=True).start()
        running.wait(30)  # the run is open (whatever the machine's load), then the interpreter exits
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert "FINAL Crashed The process exited while the run was still open." in out.stdout, out.stderr


# -- a failure or an interrupt ends the scope: its runs stop ---------------------------------------
@pytest.mark.anyio
async def test_a_failing_async_flow_cancels_its_running_tasks(store):
    @task
    async def forever():
        await anyio.sleep(3600)

    @flow
    async def f():
        forever.submit()
        await anyio.sleep(0.01)
        raise RuntimeError("the flow fails")

    with anyio.fail_after(60):
        state = await f(return_state=True)
    assert state.is_failed() and "the flow fails" in state.message
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]


def test_a_failing_sync_flow_stops_its_running_sync_and_async_tasks(store):
    body = Body()

    @task
    def slow_sync():
        body.block()

    @task
    async def forever():
        await anyio.sleep(3600)

    @flow
    def f():
        slow_sync.submit()
        forever.submit()
        assert body.entered.wait(HANG_GUARD)  # both are running
        raise RuntimeError("the flow fails")

    state = f(return_state=True)  # (waiting for `forever` or for the blocked body would hang)
    assert state.is_failed() and "the flow fails" in state.message
    body.assert_stopped()
    assert sorted(r.state.name for r in store.read_task_runs()) == ["Cancelled", "Cancelled"]


def test_a_failing_subflow_does_not_cancel_its_parents_runs(store):
    @task
    def slow():
        time.sleep(0.2)
        return "finished"

    @flow
    def child():
        raise RuntimeError("child fails")

    @flow
    def parent():
        future = slow.submit()
        child(return_state=True)
        return future.result()

    assert parent() == "finished"


def test_ctrl_c_in_a_sync_flow_crashes_it_and_stops_its_runs(store):
    body = Body()

    @task
    def slow():
        body.block()

    @flow
    def f():
        slow.submit()
        assert body.entered.wait(HANG_GUARD)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    body.assert_stopped()
    [flow_record] = store.read_flow_runs()
    assert flow_record.state.name == "Crashed"
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]


@pytest.mark.anyio
async def test_cancelling_the_code_awaiting_a_sync_flow_stops_its_body(store):
    body = Body()

    @flow
    def sync_flow():
        body.block()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(body.cancel_once_entered, scope)
            await sync_flow()
    assert scope.cancelled_caught
    await anyio.to_thread.run_sync(body.assert_stopped)  # the caller did not wait for the body, which stopped
    [flow_record] = store.read_flow_runs()
    assert flow_record.state.name == "Cancelled"
