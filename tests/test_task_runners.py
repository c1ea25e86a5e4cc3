"""Task runners: where submitted runs execute and how many at once.

SPEC §2 ("a sync function never runs on the event loop thread") and §7; DESIGN "Thread pools";
seed 003 (SequentialTaskRunner example); reference section 12 and items L.151-L.154.
Concurrency is measured with barriers, events and counters, never with timing.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest
import sniffio
from helpers import run_in_thread

from asyncflow import flow, tags, task
from asyncflow.runtime import task_run as runtime_task_run
from asyncflow.task_runners import (
    ConcurrentTaskRunner,
    SequentialTaskRunner,
    TaskRunner,
    ThreadPoolTaskRunner,
)
from asyncflow.utilities.annotations import quote

WAIT = 5.0  # upper bound for any barrier/event wait, so a broken runner fails instead of hanging




def run_async_in_thread(fn: Any, backend: str, timeout: float = 10.0) -> Any:
    """`anyio.run(fn)` on `backend` in a daemon thread, for tests whose failure mode is a blocked thread."""
    return run_in_thread(lambda: anyio.run(fn, backend=backend), timeout=timeout)


class ConcurrencyProbe:
    """Counts how many sync task bodies are inside `hold()` at once; they stay until `release` is set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def hold(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.entered.release()
        try:
            self.release.wait(WAIT)
        finally:
            with self.lock:
                self.running -= 1

    def wait_entered(self, n: int, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        return all(self.entered.acquire(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n))


@task
def current_thread_ident(i: int = 0) -> int:
    return threading.get_ident()


@task
async def current_thread_ident_async(i: int = 0) -> int:
    await anyio.lowlevel.checkpoint()
    return threading.get_ident()


# -- the default runner ---------------------------------------------------------------------------
def test_default_runner_runs_submitted_sync_tasks_concurrently():
    barrier = threading.Barrier(3, timeout=WAIT)

    @task
    def meet(i: int) -> int:
        barrier.wait()  # only returns if all three runs are in their bodies at the same time
        return i

    @flow
    def f() -> list[Any]:
        return [fut.result() for fut in [meet.submit(i) for i in range(3)]]

    assert run_in_thread(f) == [0, 1, 2]


def test_default_runner_runs_sync_tasks_in_worker_threads_not_on_the_event_loop_thread():
    @flow
    def f() -> dict[str, Any]:
        loop_thread = current_thread_ident_async.submit().result()  # async tasks run on the loop
        sync_threads = [current_thread_ident.submit(i).result() for i in range(1, 4)]
        return {"loop": loop_thread, "sync": sync_threads}

    threads = run_in_thread(f)
    assert threads["loop"] not in threads["sync"]


@pytest.mark.anyio
async def test_default_runner_in_async_flow_runs_sync_tasks_off_the_loop_and_async_tasks_on_it():
    @flow
    async def f() -> dict[str, Any]:
        loop_thread = threading.get_ident()
        sync_futures = [current_thread_ident.submit(i) for i in range(3)]
        async_futures = [current_thread_ident_async.submit(i) for i in range(3)]
        return {
            "loop": loop_thread,
            "sync": [await fut for fut in sync_futures],
            "async": [await fut for fut in async_futures],
            "direct_sync": await current_thread_ident(10),
        }

    with anyio.fail_after(10):
        threads = await f()
    assert all(ident != threads["loop"] for ident in threads["sync"])
    assert threads["direct_sync"] != threads["loop"]
    assert all(ident == threads["loop"] for ident in threads["async"])


@pytest.mark.anyio
async def test_submitted_async_tasks_run_on_the_flows_event_loop_and_backend(anyio_backend):
    @task
    async def which_library() -> str:
        await anyio.lowlevel.checkpoint()
        return sniffio.current_async_library()

    @flow
    async def f() -> list[str]:
        return [await which_library.submit(), await which_library()]

    with anyio.fail_after(10):
        assert await f() == [anyio_backend, anyio_backend]


@pytest.mark.anyio
async def test_default_runner_in_async_flow_runs_sync_tasks_concurrently(anyio_backend):
    barrier = threading.Barrier(3, timeout=WAIT)

    @task
    def meet(i: int) -> int:
        barrier.wait()
        return i

    @flow
    async def f() -> list[Any]:
        futures = [meet.submit(i) for i in range(3)]
        return [await fut for fut in futures]

    assert run_async_in_thread(f, anyio_backend) == [0, 1, 2]


def test_tags_context_reaches_sync_tasks_in_worker_threads():
    @task
    def my_tags() -> list[str]:
        return sorted(runtime_task_run.tags)

    @flow
    def f() -> list[str]:
        with tags("from-context"):
            future = my_tags.submit()
        return future.result()

    assert "from-context" in run_in_thread(f)


# -- ThreadPoolTaskRunner / ConcurrentTaskRunner --------------------------------------------------------
def test_thread_pool_task_runner_max_workers_caps_concurrent_sync_runs():
    probe = ConcurrencyProbe()

    @task
    def held(i: int) -> int:
        probe.hold()
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def f() -> dict[str, Any]:
        futures = [held.submit(i) for i in range(4)]
        try:
            two_entered = probe.wait_entered(2)
            third_entered_early = probe.entered.acquire(timeout=0.1)
            if third_entered_early:
                probe.entered.release()
        finally:
            probe.release.set()
        return {"two_entered": two_entered, "third_early": third_entered_early,
                "results": [fut.result() for fut in futures]}

    outcome = run_in_thread(f)
    assert outcome["two_entered"] is True
    assert outcome["third_early"] is False
    assert outcome["results"] == [0, 1, 2, 3]
    assert probe.peak == 2


@pytest.mark.anyio
async def test_thread_pool_task_runner_max_workers_caps_concurrency_in_async_flow(anyio_backend):
    probe = ConcurrencyProbe()

    @task
    def held(i: int) -> int:
        probe.hold()
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    async def f() -> dict[str, Any]:
        futures = [held.submit(i) for i in range(4)]
        try:
            two_entered = await anyio.to_thread.run_sync(probe.wait_entered, 2)
            third_early = await anyio.to_thread.run_sync(lambda: probe.entered.acquire(timeout=0.1))
        finally:
            probe.release.set()
        return {"two_entered": two_entered, "third_early": third_early,
                "results": [await fut for fut in futures]}

    outcome = run_async_in_thread(f, anyio_backend)
    assert outcome["two_entered"] is True
    assert outcome["third_early"] is False
    assert outcome["results"] == [0, 1, 2, 3]
    assert probe.peak == 2


def test_concurrent_task_runner_runs_submitted_sync_tasks_concurrently():
    barrier = threading.Barrier(3, timeout=WAIT)

    @task
    def meet(i: int) -> int:
        barrier.wait()
        return i

    @flow(task_runner=ConcurrentTaskRunner())
    def f() -> list[Any]:
        futures = [meet.submit(i) for i in range(3)]
        return [fut.result() for fut in futures]

    assert run_in_thread(f) == [0, 1, 2]


def test_thread_pool_task_runner_runs_sync_tasks_off_the_event_loop_thread():
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=3))
    def f() -> dict[str, Any]:
        loop_thread = current_thread_ident_async.submit().result()
        return {"loop": loop_thread, "sync": [current_thread_ident.submit(i).result() for i in range(3)]}

    threads = run_in_thread(f)
    assert threads["loop"] not in threads["sync"]


# -- no pool deadlocks: a thread is only held by running user code ---------------------------------------
def test_sync_task_waiting_on_a_submitted_task_does_not_deadlock_a_single_worker_pool():
    @task
    def inner(x: int) -> int:
        return x * 10

    @task
    def outer(x: int) -> int:
        return inner.submit(x).result() + 1

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def f() -> int:
        return outer.submit(4).result()

    assert run_in_thread(f, timeout=10) == 41


def test_sync_task_mapping_and_waiting_does_not_deadlock_a_single_worker_pool():
    @task
    def inner(x: int) -> int:
        return x + 1

    @task
    def outer(n: int) -> list[int]:
        return inner.map(list(range(n))).result()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def f() -> list[int]:
        return outer.submit(3).result()

    assert run_in_thread(f, timeout=10) == [1, 2, 3]


def test_sync_task_waiting_on_a_sibling_run_does_not_deadlock_a_single_worker_pool():
    """The waiting run holds the only worker while the run it waits for still needs one."""
    waiter_started = threading.Event()

    @task
    async def until_waiter_started() -> None:
        await anyio.to_thread.run_sync(waiter_started.wait, WAIT)  # anyio's own thread, not a runner slot

    @task
    def sibling() -> str:
        return "sibling done"

    @task
    def waiter(future: Any) -> Any:
        waiter_started.set()
        return future.result()  # passed quoted: this run itself blocks on the sibling's future

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def f() -> Any:
        marker = until_waiter_started.submit()
        later = sibling.submit(wait_for=[marker])
        return waiter.submit(quote(later)).result()

    assert run_in_thread(f, timeout=10) == "sibling done"


@pytest.mark.anyio
async def test_sync_task_waiting_on_a_submitted_task_does_not_deadlock_a_single_worker_pool_in_async_flow(
        anyio_backend):
    @task
    def inner(x: int) -> int:
        return x * 10

    @task
    def outer(x: int) -> int:
        return inner.submit(x).result() + 2

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    async def f() -> int:
        return await outer.submit(4)

    assert run_async_in_thread(f, anyio_backend) == 42


def test_recursively_nested_submits_do_not_deadlock_a_small_pool():
    @task
    def countdown(n: int) -> int:
        if n == 0:
            return 0
        return countdown.submit(n - 1).result() + 1

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def f() -> int:
        return countdown.submit(8).result()

    assert run_in_thread(f, timeout=20) == 8


def test_33_recursively_nested_submits_do_not_deadlock_the_default_runner():
    @task
    def countdown(n: int) -> int:
        if n == 0:
            return 0
        return countdown.submit(n - 1).result() + 1

    @flow
    def f() -> int:
        return countdown.submit(33).result()

    assert run_in_thread(f, timeout=20) == 33


# -- SequentialTaskRunner ---------------------------------------------------------------------------
def test_sequential_task_runner_seed_example(capsys):
    """Seed 003: first_task / second_task under SequentialTaskRunner."""

    @task
    def first_task(num: int) -> int:
        return num + num

    @task
    def second_task(num: int) -> int:
        return num * num

    @flow(name="My Example Flow", task_runner=SequentialTaskRunner())
    def my_flow(num: int) -> tuple[int, int]:
        plusnum = first_task.submit(num)
        sqnum = second_task.submit(plusnum)
        print(f"add: {plusnum.result()}, square: {sqnum.result()}")
        return plusnum.result(), sqnum.result()

    assert run_in_thread(my_flow, 5) == (10, 100)
    captured = capsys.readouterr()
    assert "add: 10, square: 100" in captured.out + captured.err


def test_sequential_task_runner_runs_submitted_sync_tasks_one_at_a_time_in_submission_order():
    lock = threading.Lock()
    trace: list[str] = []
    running = 0
    peak = 0

    @task
    def step(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            trace.append(f"start {i}")
        time.sleep(0.02)  # room for another run to start, if the runner (wrongly) allowed it
        with lock:
            running -= 1
            trace.append(f"end {i}")
        return i

    @flow(task_runner=SequentialTaskRunner())
    def f() -> list[int]:
        futures = [step.submit(i) for i in range(4)]
        return [fut.result() for fut in futures]

    assert run_in_thread(f) == [0, 1, 2, 3]
    assert peak == 1
    assert trace == [f"{what} {i}" for i in range(4) for what in ("start", "end")]


@pytest.mark.anyio
async def test_sequential_task_runner_runs_submitted_async_tasks_one_at_a_time_in_submission_order():
    trace: list[str] = []

    @task
    async def step(i: int) -> int:
        trace.append(f"start {i}")
        for _ in range(3):
            await anyio.lowlevel.checkpoint()  # yield to the loop: other runs could start here if allowed
        trace.append(f"end {i}")
        return i

    @flow(task_runner=SequentialTaskRunner())
    async def f() -> list[int]:
        futures = [step.submit(i) for i in range(4)]
        return [await fut for fut in futures]

    for _ in range(4):  # several flow runs: a scheduler may start tasks in any order (trio does)
        trace.clear()
        with anyio.fail_after(10):
            assert await f() == [0, 1, 2, 3]
        assert trace == [f"{what} {i}" for i in range(4) for what in ("start", "end")]


@pytest.mark.anyio
async def test_sequential_task_runner_runs_mixed_sync_and_async_tasks_in_order(anyio_backend):
    trace: list[str] = []

    @task
    def sync_step(i: int) -> int:
        trace.append(f"sync {i}")
        return i

    @task
    async def async_step(i: int) -> int:
        await anyio.lowlevel.checkpoint()
        trace.append(f"async {i}")
        return i

    @flow(task_runner=SequentialTaskRunner())
    async def f() -> list[int]:
        futures = [sync_step.submit(0), async_step.submit(1), sync_step.submit(2), async_step.submit(3)]
        return [await fut for fut in futures]

    for _ in range(4):  # several flow runs: a scheduler may start tasks in any order (trio does)
        trace.clear()
        assert run_async_in_thread(f, anyio_backend) == [0, 1, 2, 3]
        assert trace == ["sync 0", "async 1", "sync 2", "async 3"]


def test_sequential_task_runner_still_runs_sync_tasks_off_the_event_loop_thread():
    @flow(task_runner=SequentialTaskRunner())
    def f() -> dict[str, Any]:
        loop_thread = current_thread_ident_async.submit().result()
        return {"loop": loop_thread, "sync": [current_thread_ident.submit(i).result() for i in range(2)]}

    threads = run_in_thread(f)
    assert threads["loop"] not in threads["sync"]


# -- runner objects -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "runner",
    [ThreadPoolTaskRunner(), ThreadPoolTaskRunner(max_workers=3), ConcurrentTaskRunner(), SequentialTaskRunner()],
    ids=repr,
)
def test_duplicate_returns_an_equal_but_distinct_runner(runner: TaskRunner):
    copy = runner.duplicate()
    assert copy is not runner
    assert type(copy) is type(runner)
    assert copy == runner


def test_duplicate_keeps_max_workers():
    assert ThreadPoolTaskRunner(max_workers=3).duplicate().max_workers == 3
    assert ThreadPoolTaskRunner(max_workers=3) != ThreadPoolTaskRunner(max_workers=4)


def test_runner_names_follow_the_class_name():
    assert ThreadPoolTaskRunner().name == "threadpool"
    assert SequentialTaskRunner().name == "sequential"
    assert ConcurrentTaskRunner().name == "concurrent"


def test_concurrent_task_runner_is_a_thread_pool_task_runner():
    assert isinstance(ConcurrentTaskRunner(), ThreadPoolTaskRunner)


def test_a_runner_instance_can_be_shared_by_several_flow_runs():
    runner = ThreadPoolTaskRunner(max_workers=2)

    @flow(task_runner=runner)
    def f(x: int) -> int:
        return current_thread_ident.submit(x).result() and x

    assert run_in_thread(lambda: [f(1), f(2)]) == [1, 2]
    assert runner.max_workers == 2


def test_a_custom_runner_declaring_async_tasks_and_slots_is_used():
    import contextlib

    from asyncflow.task_runners import Capabilities, TaskRunner

    calls = []

    class Recording(TaskRunner):
        capabilities = Capabilities(async_tasks=True, slots=True)

        async def run_async(self, fn):
            calls.append("run_async")
            return await fn()

        @contextlib.asynccontextmanager
        async def execution_slot(self, ticket):
            calls.append(f"slot {ticket}")
            yield

    @task
    async def t():
        return 1

    @flow(task_runner=Recording())
    def f():
        return t.submit().result()

    assert f() == 1
    assert calls == ["slot 0", "run_async"]


@pytest.mark.anyio
async def test_a_cancelled_sync_call_that_lent_its_slot_never_takes_it_back_later(store):
    """L4: a sync call abandoned on cancellation while it waited on another run (its slot lent) took
    the slot again when the wait ended, and nobody gave it back: a one-thread runner then hung."""
    import time

    from asyncflow.task_runners import ThreadPoolTaskRunner

    @task
    def other():
        time.sleep(0.4)
        return 1

    @task
    def waits_on_other():
        return other.submit().result()

    @task
    def quick():
        return "ran"

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    async def f():
        with anyio.move_on_after(0.1):
            await waits_on_other()
        await anyio.sleep(0.6)  # the abandoned wait ends meanwhile
        with anyio.fail_after(10):
            return [await quick(), await quick()]

    assert await f() == ["ran", "ran"]


# -- the runner interface: lifecycle, work items, duplicate (issue 13) -------------------------------------
class LifecycleRunner(ThreadPoolTaskRunner):
    """Records its lifecycle and every work item it executes (on a shared, class-level list)."""

    events: ClassVar[list[str]] = []

    async def start(self) -> None:
        LifecycleRunner.events.append("start")

    async def shutdown(self) -> None:
        LifecycleRunner.events.append("shutdown")

    async def submit(self, item):
        LifecycleRunner.events.append("submit")
        return await super().submit(item)

    def run_inline(self, item):
        LifecycleRunner.events.append("run_inline")
        return super().run_inline(item)


@pytest.fixture
def lifecycle_events():
    LifecycleRunner.events = []
    return LifecycleRunner.events


@task
def plus_one(x: int) -> int:
    return x + 1


@pytest.mark.anyio
async def test_the_engine_starts_and_shuts_down_the_runner_once_per_flow_run(lifecycle_events):
    attempts = []

    @flow(task_runner=LifecycleRunner(max_workers=2), retries=1)
    async def f() -> int:
        attempts.append(1)
        value = await plus_one(1)  # a direct sync call from async code: through the runner's submit
        if len(attempts) == 1:
            raise ValueError("the first attempt fails")
        return value

    assert await f() == 2
    assert lifecycle_events == ["start", "submit", "submit", "shutdown"]


def test_submitted_sync_runs_of_the_default_runner_go_through_run_inline(lifecycle_events):
    @flow(task_runner=LifecycleRunner(max_workers=2))
    def f() -> list[int]:
        return plus_one.map(range(3)).result()

    assert f() == [1, 2, 3]
    assert lifecycle_events == ["start", "run_inline", "run_inline", "run_inline", "shutdown"]


def test_a_runner_that_cannot_start_fails_the_flow_run_saying_so():
    class Broken(ThreadPoolTaskRunner):
        async def start(self) -> None:
            raise ConnectionError("no scheduler at tcp://nowhere:8786")

    @flow(task_runner=Broken())
    def f() -> int:
        return 1

    state = f(return_state=True)
    assert state.name == "Failed"
    assert "task runner Broken(max_workers=None) could not start" in state.message
    assert "no scheduler at tcp://nowhere:8786" in state.message


def test_duplicate_shares_the_frozen_options_and_not_the_runtime_state():
    runner = SequentialTaskRunner()
    runner.ticket()
    copy = runner.duplicate()
    assert copy.options is runner.options and copy == runner
    assert copy.ticket() == 0  # a fresh ticket counter
    pool = ThreadPoolTaskRunner(max_workers=2)
    assert pool.duplicate().options is pool.options and pool.duplicate().max_workers == 2


def test_a_work_item_pickles_without_its_local_guard():
    import cloudpickle

    from asyncflow._engine.interrupt import UserCode
    from asyncflow.task_runners import WorkItem

    item = WorkItem(sorted, ([3, 1, 2],), {"reverse": True}, label="sort", guard=UserCode())
    copy = cloudpickle.loads(item.pack())
    assert copy.guard is None and copy.run().unwrap() == [3, 2, 1]
