"""The read API's costs (asyncflow/_store/reads.py), on a SQLite file and on the memory store.

    python bench/reads.py                       # 100,000 flow runs, a flow of 10,000 task runs
    python bench/reads.py --runs 1000000        # the UI issue's 1,000,000 runs

A flow of `--tasks` task runs runs through the engine (every state as a flow records it); `--runs`
flow runs (Pending, Running, Completed or Failed, some tagged) are recorded straight into the store.
Each read is timed `--repeats` times; the median and the worst are shown, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("ASYNCFLOW_LOGGING_LEVEL", "WARNING")

from asyncflow import flow, task
from asyncflow._runs import FlowRun
from asyncflow._states import State, StateType
from asyncflow._store import MemoryStore
from asyncflow._store.reads import RunFilter
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store


@task
def step(i):
    return i


@flow
def big(n):
    for i in range(n):
        step(i)


def fill(store, runs: int) -> None:
    base = time.time() - runs
    for i in range(runs):
        created = base + i
        pending = State(StateType.PENDING, "Pending", ts=created)
        run = FlowRun(id=uuid.uuid4(), name=f"run-{i}", flow_name=f"flow-{i % 20}", flow_version=None,
                      parameters={"i": i}, tags=("prod",) if i % 10 == 0 else (), state=pending)
        store.record_flow_run(run)
        store.record_state(run.id, pending)
        store.record_state(run.id, State(StateType.RUNNING, "Running", ts=created + 0.1))
        final = State(StateType.FAILED, "Failed", ts=created + 0.5) if i % 100 == 0 else State(
            StateType.COMPLETED, "Completed", ts=created + 0.5)
        run.state = final
        store.record_state(run.id, final)
        if i % 10_000 == 0:
            store.flush()
    store.flush()


def timed(label: str, fn, repeats: int) -> None:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    size = len(result) if hasattr(result, "__len__") else ""
    print(f"  {label:<58} {statistics.median(times):8.1f} ms (worst {max(times):7.1f})  {size}")


def measure(store, name: str, runs: int, tasks: int, repeats: int) -> None:
    print(f"{name}: {runs:,} flow runs + a flow of {tasks:,} task runs")
    with isolated_store(store):
        start = time.perf_counter()
        flow_run_id = big(tasks, return_state=True).state_details.flow_run_id
        took = time.perf_counter() - start
        start = time.perf_counter()
        fill(store, runs)
        print(f"  (setup: the flow {took:.1f} s, recording the runs {time.perf_counter() - start:.1f} s)")
    timeline = store.read_timeline(flow_run_id)
    states = len(timeline.states) + sum(len(t.states) for t in timeline.task_runs)
    timed(f"read_timeline, {len(timeline.task_runs):,} task runs, {states:,} states",
          lambda: store.read_timeline(flow_run_id).task_runs, repeats)
    first = store.read_flow_runs_page(limit=50)
    timed("read_flow_runs_page(limit=50), first page", lambda: store.read_flow_runs_page(limit=50), repeats)
    middle = store.read_flow_runs_page(limit=runs // 2)
    timed("  ... a page in the middle (by cursor)",
          lambda: store.read_flow_runs_page(limit=50, cursor=middle.next_cursor), repeats)
    timed("  ... flow_names='flow-3'", lambda: store.read_flow_runs_page(RunFilter(flow_names="flow-3")), repeats)
    timed("  ... states='Failed' (1 run in 100)", lambda: store.read_flow_runs_page(RunFilter(states="Failed")),
          repeats)
    timed("  ... tags='prod' (1 run in 10)", lambda: store.read_flow_runs_page(RunFilter(tags="prod")), repeats)
    timed("  ... search='run-4242'", lambda: store.read_flow_runs_page(RunFilter(search="run-4242")), repeats)
    timed("read_task_runs_page(parent_flow_run_id=the big flow), 50",
          lambda: store.read_task_runs_page(RunFilter(parent_flow_run_id=flow_run_id)), repeats)
    timed("read_task_runs_page(), 50 of all task runs (no index: a scan)",
          lambda: store.read_task_runs_page(), repeats)
    timed("read_changes(since=middle, limit=1000)", lambda: store.read_changes(runs, 1000)[0], repeats)
    timed("count_flow_runs_by_state(bucket_seconds=3600), all runs",
          lambda: store.count_flow_runs_by_state(bucket_seconds=3600), repeats)
    assert len(first) == 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", choices=["sqlite", "memory", "both"], default="both")
    args = parser.parse_args()
    if args.store in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="asyncflow-bench-reads-") as home:
            os.environ["ASYNCFLOW_HOME"] = home
            store = SQLiteStore(Path(home) / "asyncflow.db")
            try:
                measure(store, "SQLite", args.runs, args.tasks, args.repeats)
            finally:
                store.close()
    if args.store in ("memory", "both"):
        measure(MemoryStore(), "memory", args.runs, args.tasks, args.repeats)


if __name__ == "__main__":
    main()
