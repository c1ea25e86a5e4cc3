"""What runs hold while they wait, and what finished runs let go of (issue 15: memory per submitted
task, many flows at once). Objects are counted, never timed: every GC-tracked object a waiting run
holds is one the cyclic GC walks at each full collection, so their number is what makes many
concurrent flows slow down faster than linearly."""

from __future__ import annotations

import gc
import types
import weakref

import anyio
import pytest
from helpers import objects_per_waiting_flow, tracked_objects, without_log_capture

import asyncflow as af
from asyncflow._futures import TaskRunFuture

pytestmark = pytest.mark.anyio

FLOWS = 200


def _tracked_from(root: object) -> int:
    """The GC-tracked objects reachable from `root` (its own data: no classes, functions or modules)."""
    gc.collect()
    seen, stack = {id(root)}, [root]
    skip = (type, types.FunctionType, types.ModuleType, types.BuiltinFunctionType, types.MethodType)
    while stack:
        for child in gc.get_referents(stack.pop()):
            if id(child) not in seen and gc.is_tracked(child) and not isinstance(child, skip):
                seen.add(id(child))
                stack.append(child)
    return len(seen) - 1


async def test_a_waiting_flow_run_holds_fewer_than_81_gc_tracked_objects():
    # 99 on asyncio before: per flow a Condition (5 objects) for subflows it never called, a closure
    # reaching its event loop from other threads (6), a cancel scope for a time limit it does not have
    # (5), a `why` closure (3), an empty queue and inbox (2), its Scope's __dict__. Then 82 (asyncio)
    # and 85 (trio): three engine coroutines (run_flow's wrapper, the attempts loop, `owning`), a
    # second lock and an object to reach the loop from other threads; now 77 and 80.
    per_flow = await objects_per_waiting_flow(FLOWS)
    assert per_flow < 81, f"{per_flow:.1f} GC-tracked objects per waiting flow run"


async def test_flows_with_a_time_limit_or_subflows_still_end_and_time_out():
    """The cancel scope and the Condition are made when a flow needs them."""
    @af.task
    async def slow() -> None:
        await anyio.sleep(10)

    @af.flow(timeout_seconds=0.05)
    async def limited() -> None:
        await slow()

    @af.flow
    async def child() -> int:
        return 1

    @af.flow
    async def parent() -> int:
        return await child() + await child()

    state = await limited(return_state=True)
    assert state.is_failed() and state.name == "TimedOut"
    assert await parent() == 2


async def _objects_per_pending_submitted_run(runs: int) -> float:
    @af.task
    async def inc(x: int) -> int:
        return x + 1

    per_run: list[float] = []

    @af.flow
    async def submit_many() -> None:
        await inc.submit(0)  # the first run: imports and caches
        before = tracked_objects()
        futures = [inc.submit(i) for i in range(runs)]  # nothing runs until the flow's code awaits
        per_run.append((tracked_objects() - before) / runs)
        for future in futures:
            await future

    with without_log_capture():
        await submit_many()
    return per_run[0]


async def test_a_pending_submitted_run_holds_fewer_than_11_gc_tracked_objects():
    # 12 before: a done-callback list and a bound method per future, to tell its flow it ended
    per_run = await _objects_per_pending_submitted_run(500)
    assert per_run < 11, f"{per_run:.1f} GC-tracked objects per pending submitted run"


async def _objects_per_waiting_submitted_run(runs: int) -> float:
    release = anyio.Event()
    waiting = [0]

    @af.task
    async def wait_for_release() -> None:
        waiting[0] += 1
        await release.wait()

    per_run: list[float] = []

    @af.flow
    async def submit_many() -> None:
        waiting[0] = 0
        first = wait_for_release.submit()  # the first run: imports and caches
        while waiting[0] < 1:  # noqa: ASYNC110  (polls a count that the runs raise)
            await anyio.sleep(0.001)
        before = tracked_objects()
        futures = [wait_for_release.submit() for _ in range(runs)]
        while waiting[0] < runs + 1:  # noqa: ASYNC110
            await anyio.sleep(0.001)
        per_run.append((tracked_objects() - before) / runs)
        release.set()
        for future in [first, *futures]:
            await future

    with without_log_capture():
        await submit_many()
    return per_run[0]


async def test_a_waiting_submitted_run_holds_fewer_than_47_gc_tracked_objects():
    # 48.95 (asyncio) and 48.00 (trio) before: a coroutine each for `run_submitted`, the attempts (around
    # their loop) and the attempt's call, alive while the run waits; now 45.95 and 45.00 (most of the rest
    # is the worker task the waiting run holds, as an anyio task would)
    per_run = await _objects_per_waiting_submitted_run(300)
    assert per_run < 47, f"{per_run:.1f} GC-tracked objects per waiting submitted run"


class _Big:
    pass


async def test_a_finished_runs_result_is_freed_once_nobody_holds_its_future():
    @af.task
    async def make() -> _Big:
        return _Big()

    refs: list[weakref.ref[_Big]] = []
    futures: list[weakref.ref[TaskRunFuture[_Big]]] = []

    @af.flow
    async def main() -> bool:
        future = make.submit()
        refs.append(weakref.ref(await future))
        futures.append(weakref.ref(future))
        del future
        gc.collect()
        return refs[0]() is None and futures[0]() is None  # freed inside the still-running flow

    assert await main() is True


async def test_a_finished_runs_result_stays_readable_while_its_future_is_held():
    @af.task
    async def make() -> _Big:
        return _Big()

    held: list[TaskRunFuture[_Big]] = []

    @af.flow
    async def main() -> None:
        held.extend(make.submit() for _ in range(3))

    await main()  # (a flow's return value turns futures into states: these are kept outside it)
    gc.collect()
    assert all(f.state.is_completed() for f in held)
    assert [type(await f) for f in held] == [_Big] * 3


@af.task
def inc(x: int) -> int:
    return x + 1


@af.flow
def long_flow(n: int) -> None:  # one sequential sync task call after another
    for i in range(n):
        inc(i)


def test_a_bounded_memory_store_holds_few_gc_tracked_objects_after_a_long_flow():
    """`MemoryStore(max_runs=...)` (the process's store with ASYNCFLOW_STORE=memory) keeps its newest
    runs and a bounded change feed and log. What it keeps is walked by every full collection of the
    cyclic GC, so a long flow slowed down as its store filled up: every task run's id stayed in its
    flow's index, and each feed and log entry was ~3 GC-tracked objects (940,000 objects after 100,000
    runs with max_runs=10,000). The feed and the log are now tuples of plain values (the GC stops
    tracking them), and a forgotten run leaves its flow's index."""
    from asyncflow._store.memory import MemoryStore
    from asyncflow.testing import isolated_store

    with isolated_store(MemoryStore(max_runs=50)) as store:
        long_flow(3000)
        held = _tracked_from(store)  # (not the whole heap: pytest keeps the captured log lines)
        changes, _ = store.read_changes(0, limit=100_000)
        logs, _ = store.read_logs_since(0, limit=100_000)
    # the newest 50 runs, the read API's order of runs (compacted once it exceeds 2 * 50 + 1024 entries,
    # 2 objects each): 2,600 at most, against ~11,000 before
    assert held < 3000, held
    assert len(changes) == 20 * 50 and len(logs) == 10 * 50
    assert changes[-1].state_type.value == "COMPLETED" and changes[-1].kind == "flow_run"
    assert changes[-2].kind == "task_run" and changes[-2].flow_run_id == changes[-1].run_id
    assert logs[-1].flow_run_id == str(changes[-1].run_id) and logs[-1].seq > logs[0].seq


@pytest.fixture(params=["sqlite", "memory"])
def recorded(request, store):
    """The store runs are recorded in: a real SQLite file, and the memory store."""
    if request.param == "memory":
        yield store
        return
    from asyncflow.testing import isolated_home

    with isolated_home() as sqlite_store:
        yield sqlite_store


async def test_a_finished_run_keeps_a_small_result_on_its_record_and_lets_a_big_one_go(recorded):
    @af.task
    async def small() -> int:
        return 7

    @af.task
    async def big() -> _Big:
        return _Big()

    @af.flow
    async def main() -> tuple[object, object]:
        a, b = small.submit(), big.submit()
        await a
        await b
        return a.task_run.state.data, b.task_run.state.data

    assert await main() == (7, None)  # (the future's own state has the result: `await b` above)


class _Big:
    pass


def test_a_memory_store_keeps_each_run_s_state_history_out_of_the_cyclic_gc():
    """Every run the memory store keeps is walked by each full collection of the cyclic GC, so the
    objects it keeps per run are what made a long flow's later task runs cost more than its first ones
    (scenario r). A run's history was a list of tuples that held the state's enum type and its details
    object (5 GC-tracked objects per task run, 9 in all); it is now a tuple of plain values, which the GC
    stops tracking. What is left per run: the run record, its id, its state, the state's details and its
    place in the read order."""
    from asyncflow._states import StateDetails, StateType
    from asyncflow._store.memory import MemoryStore
    from asyncflow.testing import isolated_store

    with isolated_store(MemoryStore(max_runs=1000)) as store:
        long_flow(999)
        runs = store.read_task_runs()
        per_run = _tracked_from(store) / 1000
        states = store.read_states(runs[-1].id)
    assert per_run < 6, per_run  # 9.0 before
    assert [(s.type, s.name) for s in states] == [(StateType.PENDING, "Pending"), (StateType.RUNNING, "Running"),
                                                  (StateType.COMPLETED, "Completed")]
    assert all(type(s.type) is StateType for s in states)
    assert states[-1].state_details == StateDetails(flow_run_id=runs[-1].flow_run_id, task_run_id=runs[-1].id)
    assert states[-1].ts == runs[-1].state.ts


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_long_flow_keeps_nothing_per_finished_task_run(db, kind):
    """Scenario r: a flow's own bookkeeping (its run context, the process's open runs, its scope) must not
    grow with the task runs it has finished, or each run costs more than the one before. Counted after
    50 runs and again after 550: the same objects (a finished run nobody holds can never be read again
    through the flow)."""
    from asyncflow._context import current_run
    from asyncflow._engine.open_runs import OPEN

    @af.task
    def inc(x: int) -> int:
        return x + 1

    @af.task
    async def ainc(x: int) -> int:
        return x + 1

    counts: list[tuple[int, int]] = []

    def count() -> None:
        ctx = current_run.get()
        assert ctx is not None
        counts.append((_tracked_from(ctx), len(OPEN)))

    @af.flow
    def sync_flow() -> None:
        done = 0
        for stop in (50, 550):
            while done < stop:
                inc(done)
                done += 1
            count()

    @af.flow
    async def async_flow() -> None:
        done = 0
        for stop in (50, 550):
            while done < stop:
                await ainc(done)
                done += 1
            count()

    if kind == "sync":
        await anyio.to_thread.run_sync(sync_flow)
    else:
        await async_flow()
    (objects_50, open_50), (objects_550, open_550) = counts
    assert open_550 == open_50, (open_50, open_550)
    assert objects_550 == objects_50 > 0, (objects_50, objects_550)


async def test_a_finished_run_held_by_its_future_keeps_no_call_arguments_context_or_frames(db):
    """Scenario h keeps 100,000 futures: what each finished run still holds through its future is memory
    per task. Only its record (id, name, summarised parameters, final state) and its result stay: not its
    TaskCall, not its arguments, not its run context, no coroutine or frame."""
    from asyncflow._context import RunContext
    from asyncflow._engine.task_run import TaskCall

    @af.task
    async def use(big: _Big, n: int) -> int:
        return n + 1

    bigs: list[weakref.ref[_Big]] = []
    futures: list[TaskRunFuture[int]] = []  # (a flow's return value turns futures into states)

    @af.flow
    async def main() -> None:
        big = _Big()
        bigs.append(weakref.ref(big))
        futures.extend(use.submit(big, n) for n in range(3))
        del big
        assert [await f for f in futures] == [1, 2, 3]

    await main()
    gc.collect()
    assert bigs[0]() is None  # the argument is gone although the futures are held
    kinds = (TaskCall, RunContext, types.CoroutineType, types.FrameType, _Big)
    for future in futures:
        seen, stack = {id(future)}, [future]
        while stack:
            for child in gc.get_referents(stack.pop()):
                assert not isinstance(child, kinds), (future, child)
                if id(child) not in seen and not isinstance(child, (type, types.ModuleType, types.FunctionType)):
                    seen.add(id(child))
                    stack.append(child)
        assert future.task_run.parameters == {"big": "<_Big>", "n": future.result() - 1}
