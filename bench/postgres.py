"""The PostgreSQL store's costs against the SQLite default (issue 14).

    python bench/postgres.py                      # starts a PostgreSQL server of its own (fsync on)
    python bench/postgres.py --url postgresql://user@host/db   # an existing, empty database
    python bench/postgres.py -n 2000 -r 5 --states 200000 --json out.json

- states/s: `--states` states (a task run's Pending, Running, Completed) recorded straight into the store
  by one process, and by `--processes` processes at once, timed until every record is committed.
- per-task overhead: a sync flow calling a sync task `-n` times, end to end (the flush at the flow's end
  included), on the memory store, the SQLite store (the default) and the PostgreSQL store; the median
  of `-r` repeats, in microseconds per task run.

Without `--url`, a server is started with Debian's postgresql package (tests/pg_server.py) in a temporary
directory, on loopback, with fsync on (each commit reaches the disk, as in production).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ASYNCFLOW_LOGGING_LEVEL", "WARNING")

from asyncflow import flow, task  # noqa: E402
from asyncflow._runs import TaskRun  # noqa: E402
from asyncflow._states import State, StateType  # noqa: E402
from asyncflow._store import MemoryStore  # noqa: E402
from asyncflow._store.postgres import PostgresStore  # noqa: E402
from asyncflow._store.sqlite import SQLiteStore  # noqa: E402
from asyncflow.testing import isolated_store  # noqa: E402


@task
def step(i):
    return i


@flow
def chain(n):
    for i in range(n):
        step(i)


def record_states(store, count: int) -> float:
    """Record `count` states (count / 3 task runs), flush; the seconds it took."""
    started = time.perf_counter()
    now = time.time()
    for _ in range(count // 3):
        run_id = uuid.uuid4()
        pending = State(StateType.PENDING, "Pending", ts=now)
        store.record_task_run(TaskRun(id=run_id, name="t-0", task_name="t", task_key="k", flow_run_id=None,
                                      parent_task_run_id=None, tags=(), parameters={"i": 1}, state=pending))
        store.record_state(run_id, pending)
        store.record_state(run_id, State(StateType.RUNNING, "Running", ts=now))
        store.record_state(run_id, State(StateType.COMPLETED, "Completed", ts=now))
    store.flush(timeout=600)
    return time.perf_counter() - started


CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[3])
from bench.postgres import record_states
from asyncflow._store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
go = sys.argv[4]
open(go + f".ready-{os.getpid()}", "w").close()
while not os.path.exists(go):  # every process starts recording at the same moment
    time.sleep(0.001)
started = time.time()
record_states(store, int(sys.argv[2]))
print(started, time.time())
store.close()
"""


def states_per_second(url: str, count: int, processes: int) -> dict[str, float]:
    store = PostgresStore(url)
    try:
        one = record_states(store, count)
    finally:
        store.close()
    go = Path(tempfile.mkdtemp(prefix="asyncflow-bench-go-")) / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(count // processes), str(ROOT), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    while len(list(go.parent.glob("go.ready-*"))) < processes:
        time.sleep(0.01)
    go.touch()
    spans = [tuple(map(float, proc.communicate(timeout=600)[0].split())) for proc in procs]
    many = max(end for _, end in spans) - min(start for start, _ in spans)
    return {"one_process": count / one, f"{processes}_processes": count / many}


def per_task_us(make_store, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        store = make_store()
        try:
            with isolated_store(store):
                started = time.perf_counter()
                chain(n)
                times.append((time.perf_counter() - started) / n * 1e6)
        finally:
            store.close()
    return statistics.median(times[1:])  # the first warms up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an existing, empty PostgreSQL database (default: start a server)")
    parser.add_argument("-n", type=int, default=1000, help="task runs per flow (per-task overhead)")
    parser.add_argument("-r", type=int, default=5, help="repeats (the median is shown)")
    parser.add_argument("--states", type=int, default=60_000, help="states recorded for states/s")
    parser.add_argument("--processes", type=int, default=4, help="processes recording at once")
    parser.add_argument("--no-fsync", action="store_true", help="a started server runs with fsync off")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import PostgresServer

        server = PostgresServer(fsync=not args.no_fsync)
        url = server.create_database("bench")
    home = tempfile.mkdtemp(prefix="asyncflow-bench-")
    counter = iter(range(10**6))
    try:
        figures: dict[str, object] = {"n": args.n, "repeats": args.r, "fsync": server.fsync if server else None}
        figures["states_per_second"] = states_per_second(url, args.states, args.processes)
        figures["per_task_us"] = {
            "memory": per_task_us(MemoryStore, args.n, args.r),
            "sqlite": per_task_us(lambda: SQLiteStore(Path(home) / f"a{next(counter)}.db"), args.n, args.r),
            "postgres": per_task_us(lambda: PostgresStore(url), args.n, args.r),
        }
    finally:
        if server is not None:
            server.cleanup()
    rates = figures["states_per_second"]
    print(f"states/s written to PostgreSQL ({args.states} states, fsync "
          f"{'on' if figures['fsync'] in (True, None) else 'off'}):")
    for name, rate in rates.items():  # type: ignore[attr-defined]
        print(f"  {name.replace('_', ' '):<14} {rate:>10,.0f}")
    print(f"per-task overhead, a sync flow of {args.n} sync task runs, end to end (median of {args.r}):")
    for name, us in figures["per_task_us"].items():  # type: ignore[attr-defined]
        print(f"  {name:<14} {us:>10,.1f} µs")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
