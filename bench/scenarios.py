"""Benchmark scenarios. Each runs in a fresh process and returns {"per_task_us": ..., ...}.

Every scenario has a plain-Python baseline doing the same work without asyncflow, so each figure
is also a ratio to the physical limit. `lib` is `asyncflow` or, for `--compare prefect`, `prefect`
(the APIs are the same).
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import statistics
import sys
import time
from typing import Any

import anyio


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Any, n: int) -> dict[str, float]:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return {"per_task_us": elapsed / n * 1e6, "total_s": elapsed}


# -- a. sync flow calls a sync task N times -------------------------------------------------------
def a_sync_calls(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main() -> None:
        for i in range(n):
            inc(i)

    return _timed(main, n)


def a_sync_calls_baseline(n: int) -> dict[str, float]:
    def inc(x: int) -> int:
        return x + 1

    def main() -> None:
        for i in range(n):
            inc(i)

    return _timed(main, n)


# -- b. async flow awaits an async task N times ---------------------------------------------------
def b_async_calls(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.flow
    async def main() -> None:
        for i in range(n):
            await inc(i)

    return _timed(lambda: anyio.run(main), n)


def b_async_calls_baseline(n: int) -> dict[str, float]:
    async def inc(x: int) -> int:
        return x + 1

    async def main() -> None:
        for i in range(n):
            await inc(i)

    return _timed(lambda: anyio.run(main), n)


# -- c. submit N trivial tasks and collect the results --------------------------------------------
def c_submit_async(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main() -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum(f.result() for f in futures)

    return _timed(main, n)


def c_submit_async_baseline(n: int) -> dict[str, float]:
    async def inc(x: int, out: list[int]) -> None:
        out.append(x + 1)

    async def main() -> int:
        out: list[int] = []
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(inc, i, out)
        return sum(out)

    return _timed(lambda: anyio.run(main), n)


def c_submit_async_in_async_flow(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.flow
    async def main() -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum([await f for f in futures])

    return _timed(lambda: anyio.run(main), n)


def c_submit_sync(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main() -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum(f.result() for f in futures)

    return _timed(main, n)


def c_submit_sync_baseline(n: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    def inc(x: int) -> int:
        return x + 1

    def main() -> int:
        with ThreadPoolExecutor() as pool:
            futures = [pool.submit(inc, i) for i in range(n)]
            return sum(f.result() for f in futures)

    return _timed(main, n)


# -- d. map over N items --------------------------------------------------------------------------
def d_map(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main() -> int:
        return sum(inc.map(range(n)).result())

    return _timed(main, n)


d_map_baseline = c_submit_async_baseline


# -- e. N cache hits ------------------------------------------------------------------------------
def e_cache_hits(lib: Any, n: int) -> dict[str, float]:
    key_fn = importlib.import_module(f"{lib.__name__}.tasks").task_input_hash

    @lib.task(cache_key_fn=key_fn)
    def square(x: int) -> int:
        return x * x

    @lib.flow
    def main() -> None:
        square(7)  # the miss that fills the cache
        for _ in range(n):
            square(7)

    return _timed(main, n)


def e_cache_hits_baseline(n: int) -> dict[str, float]:
    import functools

    @functools.lru_cache
    def square(x: int) -> int:
        return x * x

    def main() -> None:
        for _ in range(n):
            square(7)

    return _timed(main, n)


def e_disk_cache_hits(lib: Any, n: int) -> dict[str, float]:
    """Every hit read from the result file (no in-memory layer): the checksum's cost is here."""
    key_fn = importlib.import_module(f"{lib.__name__}.tasks").task_input_hash

    @lib.task(cache_key_fn=key_fn, cache_result_in_memory=False)
    def square(x: int) -> int:
        return x * x

    @lib.flow
    def main() -> None:
        square(7)  # the miss that fills the cache
        for _ in range(n):
            square(7)

    return _timed(main, n)


# -- f. fails twice, then succeeds (retries=2, no delay) ------------------------------------------
def f_retries(lib: Any, n: int) -> dict[str, float]:
    attempts = {"count": 0}

    @lib.task(retries=2)
    def flaky() -> int:
        attempts["count"] += 1
        if attempts["count"] % 3:
            raise ValueError("transient")
        return 1

    @lib.flow
    def main() -> None:
        for _ in range(n):
            flaky()

    return _timed(main, n)


def f_retries_baseline(n: int) -> dict[str, float]:
    attempts = {"count": 0}

    def flaky() -> int:
        attempts["count"] += 1
        if attempts["count"] % 3:
            raise ValueError("transient")
        return 1

    def main() -> None:
        for _ in range(n):
            for _attempt in range(3):
                try:
                    flaky()
                    break
                except ValueError:
                    continue

    return _timed(main, n)


# -- g. cold start --------------------------------------------------------------------------------
_ONE_FLOW = """
import {lib}
@{lib}.task
def hello(): return 1
@{lib}.flow
def main(): return hello()
main()
"""


def _cold_env() -> dict[str, str]:
    """The environment of a cold start as users have it: bytecode caches on. With
    PYTHONDONTWRITEBYTECODE set (as in some CI and sandbox shells) an editable install compiles every
    module from source at every start while site-packages (anyio) ship their .pyc files: the ratio
    would measure the compiler, not the import."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _wall_of(argv: list[str], env: dict[str, str] | None = None) -> float:
    import subprocess

    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env if env is not None else _cold_env())
    return time.perf_counter() - start


def _cold_starts(argvs: dict[str, list[str]], rounds: int = 9) -> dict[str, list[float]]:
    """`rounds` starts of each command in ms, the commands taking turns (a burst of load on this machine
    then hits them alike), after one start each that writes the bytecode caches (not timed)."""
    for argv in argvs.values():
        _wall_of(argv)
    times: dict[str, list[float]] = {key: [] for key in argvs}
    for _ in range(rounds):
        for key, argv in argvs.items():
            times[key].append(_wall_of(argv) * 1e3)
    return times


def _over(times: list[float], reference: list[float]) -> float:
    """The median of the rounds' ratios: this machine's speed drifts by ±30 % over seconds, and a ratio of
    two starts made one after the other is steadier than a ratio of two best-of figures."""
    return statistics.median(t / r for t, r in zip(times, reference, strict=True))


def g_cold_start(lib: Any, n: int) -> dict[str, float]:
    """`import_ms` and `one_flow_script_ms` (the best of 9), and each ÷ `import anyio` timed in turn with
    them (the target rows use these ratios)."""
    name = lib.__name__
    times = _cold_starts({"import": [sys.executable, "-c", f"import {name}"],
                          "script": [sys.executable, "-c", _ONE_FLOW.format(lib=name)],
                          "anyio": [sys.executable, "-c", "import anyio"]})
    return {"import_ms": min(times["import"]), "one_flow_script_ms": min(times["script"]),
            "import_over_anyio": _over(times["import"], times["anyio"]),
            "script_over_anyio": _over(times["script"], times["anyio"])}


def g_cold_start_baseline(n: int) -> dict[str, float]:
    times = _cold_starts({"anyio": [sys.executable, "-c", "import anyio"], "python": [sys.executable, "-c", "pass"]})
    return {"import_ms": min(times["anyio"]), "one_flow_script_ms": min(times["python"]), "import_over_anyio": 1.0,
            "script_over_anyio": _over(times["python"], times["anyio"])}


# -- h. memory ------------------------------------------------------------------------------------
def h_memory(lib: Any, n: int) -> dict[str, float]:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main() -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum(f.result() for f in futures)

    gc.collect()
    before, blocks = _rss_mb(), sys.getallocatedblocks()
    main()
    gc.collect()
    peak = _peak_mb()
    return {"baseline_rss_mb": before, "peak_rss_mb": peak, "rss_after_mb": _rss_mb(),
            "live_blocks_after_k": (sys.getallocatedblocks() - blocks) / 1000,
            "kb_per_submitted_task": (peak - before) * 1024 / n}


def h_memory_baseline(n: int) -> dict[str, float]:
    gc.collect()
    before, blocks = _rss_mb(), sys.getallocatedblocks()
    anyio.run(_spawn_n, n)
    gc.collect()
    peak = _peak_mb()
    return {"baseline_rss_mb": before, "peak_rss_mb": peak, "rss_after_mb": _rss_mb(),
            "live_blocks_after_k": (sys.getallocatedblocks() - blocks) / 1000,
            "kb_per_submitted_task": (peak - before) * 1024 / n}


async def _spawn_n(n: int) -> None:
    async def inc(x: int) -> int:
        return x + 1

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(inc, i)


# -- i. cancellation ------------------------------------------------------------------------------
def i_cancellation(lib: Any, n: int) -> dict[str, float]:
    timeout = 1.0
    started_after: list[float] = []
    state: dict[str, float] = {}

    @lib.task
    async def wait_forever() -> None:
        now = anyio.current_time()
        if now > state["deadline"]:
            started_after.append(now)
        await anyio.sleep(3600)

    @lib.flow(timeout_seconds=timeout)
    async def main() -> None:
        state["deadline"] = anyio.current_effective_deadline()  # the flow's own deadline
        for _ in range(n):
            wait_forever.submit()
        await anyio.sleep(3600)

    async def run() -> float:
        await main(return_state=True)
        return anyio.current_time()

    ended = anyio.run(run)
    return {"cancel_ms": (ended - state["deadline"]) * 1e3, "started_after_deadline": len(started_after)}


def i_cancellation_baseline(n: int) -> dict[str, float]:
    timeout = 1.0

    async def run() -> float:
        deadline = time.perf_counter() + timeout
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(anyio.sleep, 3600)
        return time.perf_counter() - deadline

    return {"cancel_ms": anyio.run(run) * 1e3, "started_after_deadline": 0}


# -- j. the SQLite run store ----------------------------------------------------------------------
def _store_records(n: int) -> list[tuple[str, Any]]:
    """What N trivial task runs record: the run, three states, two log lines each."""

    from asyncflow._ids import new_id
    from asyncflow._runs import TaskRun
    from asyncflow._states import State, StateDetails, StateType

    flow_run_id = new_id()  # the engine's ids (time-ordered)
    records: list[tuple[str, Any]] = []
    for i in range(n):
        run_id = new_id()
        details = StateDetails(flow_run_id=flow_run_id, task_run_id=run_id)
        run = TaskRun(id=run_id, name=f"inc-{i}", task_name="inc", task_key="inc-0", flow_run_id=flow_run_id,
                      parent_task_run_id=None, tags=(), parameters={"x": i},
                      state=State(StateType.PENDING, "Pending", None, None, details))
        records.append(("run", run))
        records.append(("log", (str(flow_run_id), None, f"Created task run 'inc-{i}' for task 'inc'")))
        for type_, name in ((StateType.PENDING, "Pending"), (StateType.RUNNING, "Running"),
                            (StateType.COMPLETED, "Completed")):
            records.append(("state", (run_id, State(type_, name, None, None, details))))
        records.append(("log", (str(flow_run_id), str(run_id), "Finished in state Completed()")))
    return records


def _feed(store: Any, records: list[tuple[str, Any]]) -> None:
    for kind, item in records:
        if kind == "state":
            store.record_state(*item)
        elif kind == "run":
            store.record_task_run(item)
        else:
            store.record_log(flow_run_id=item[0], task_run_id=item[1], level="INFO", message=item[2], ts=time.time())


def j_store(lib: Any, n: int) -> dict[str, float]:
    import tempfile
    import uuid

    if lib.__name__ != "asyncflow":
        raise SystemExit("scenario j is asyncflow's own")
    from asyncflow._states import State, StateType
    from asyncflow._store import set_store
    from asyncflow._store.memory import MemoryStore
    from asyncflow._store.sqlite import SQLiteStore

    home = tempfile.mkdtemp()
    # hot path: what one state change costs the engine's thread (the writer is running meanwhile)
    store = SQLiteStore(os.path.join(home, "hot.db"), queue_size=4 * n + 10)
    run_id, state = uuid.uuid4(), State(StateType.RUNNING)
    record = store.record_state
    start = time.perf_counter()
    for _ in range(n):
        record(run_id, state)
    record_us = (time.perf_counter() - start) / n * 1e6
    store.close()
    # the writer alone: N task runs' records queued, then written (what a flush writes, in one thread)
    records = _store_records(n)
    store = SQLiteStore(os.path.join(home, "writer.db"), queue_size=len(records) + 10)
    store._sleeping = False  # keep the writer thread asleep: measure the writing, not the hand-over
    _feed(store, records)
    start = time.perf_counter()
    store.flush()
    writer_s = time.perf_counter() - start
    store.close()

    figures = {"record_state_us": record_us, "writer_states_per_s": 3 * n / writer_s,
               "writer_records_per_s": len(records) / writer_s}
    # end to end: scenario a (a sync flow calls a trivial task N times) with each store
    for name, store in (("memory", MemoryStore(max_runs=10_000)),
                        ("sqlite", SQLiteStore(os.path.join(home, "flow.db")))):
        previous = set_store(store)
        try:
            figures[f"task_run_{name}_us"] = a_sync_calls(lib, n)["per_task_us"]  # the flow ends with a flush
        finally:
            set_store(previous)
            store.close()
    return figures


def j_store_baseline(n: int) -> dict[str, float]:
    import collections
    import sqlite3
    import tempfile
    import uuid

    queue: collections.deque[Any] = collections.deque()
    item = (2, uuid.uuid4(), "RUNNING", "Running", None, time.time(), None)
    start = time.perf_counter()
    for _ in range(n):
        queue.append(item)
    append_us = (time.perf_counter() - start) / n * 1e6
    # the physical limit: plain executemany of the same rows into indexed tables, one transaction per 5000
    conn = sqlite3.connect(os.path.join(tempfile.mkdtemp(), "raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE runs (ref INTEGER PRIMARY KEY, id TEXT UNIQUE, name TEXT, parameters TEXT)")
    conn.execute("CREATE TABLE states (seq INTEGER PRIMARY KEY, run_ref INTEGER, type TEXT, name TEXT, ts REAL)")
    conn.execute("CREATE INDEX states_by_run ON states (run_ref, seq)")
    conn.execute("CREATE TABLE logs (seq INTEGER PRIMARY KEY, flow_run_id TEXT, message TEXT, ts REAL)")
    conn.execute("CREATE INDEX logs_by_flow ON logs (flow_run_id, seq)")
    flow = str(uuid.uuid4())
    start = time.perf_counter()
    for first in range(0, n, 1000):
        refs = range(first, min(n, first + 1000))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO runs VALUES (?, ?, 'inc', '{}')", [(r, str(uuid.uuid4())) for r in refs])
        conn.executemany("INSERT INTO states (run_ref, type, name, ts) VALUES (?, 'RUNNING', 'Running', 1.0)",
                         [(r,) for r in refs for _ in range(3)])
        conn.executemany("INSERT INTO logs (flow_run_id, message, ts) VALUES (?, 'line', 1.0)",
                         [(flow,) for _ in refs for _ in range(2)])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    plain = a_sync_calls_baseline(n)["per_task_us"]
    return {"record_state_us": append_us, "writer_states_per_s": 3 * n / elapsed,
            "writer_records_per_s": 6 * n / elapsed, "task_run_memory_us": plain, "task_run_sqlite_us": plain}


# -- k. background tasks: .delay() and one worker, SQLite broker -----------------------------------
def k_background(lib: Any, n: int) -> dict[str, float]:
    import threading

    if lib.__name__ != "asyncflow":
        raise SystemExit("scenario k is asyncflow's own")
    from asyncflow.task_worker import TaskWorker

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    start = time.perf_counter()
    futures = [inc.delay(i) for i in range(n)]
    delay_us = (time.perf_counter() - start) / n * 1e6
    worker = TaskWorker(inc, limit=50)
    thread = threading.Thread(target=anyio.run, args=(worker.start,), daemon=True)
    start = time.perf_counter()
    thread.start()
    futures[-1].result(timeout=600)
    for future in futures:
        future.result(timeout=600)
    elapsed = time.perf_counter() - start
    worker.stop()
    thread.join(30)
    return {"delay_us": delay_us, "worker_runs_per_s": n / elapsed}


def k_background_baseline(n: int) -> dict[str, float]:
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue()
    start = time.perf_counter()
    for i in range(n):
        q.put(i)
    put_us = (time.perf_counter() - start) / n * 1e6
    done = threading.Event()

    def consume() -> None:
        for _ in range(n):
            q.get() + 1
        done.set()

    start = time.perf_counter()
    threading.Thread(target=consume, daemon=True).start()
    done.wait()
    return {"delay_us": put_us, "worker_runs_per_s": n / (time.perf_counter() - start)}


# -- l. nothing lost: a flow of N submitted tasks and one of N sequential calls, default store -----------
def l_no_loss(lib: Any, n: int) -> dict[str, float]:
    """Every run reaches the store, however fast they come (issue 11): counts what the SQLite store
    holds after each flow. `-n 1000000` for the million sequential calls of the issue."""
    import tempfile

    if lib.__name__ != "asyncflow":
        raise SystemExit("scenario l is asyncflow's own")
    from asyncflow._store import set_store
    from asyncflow._store.sqlite import SQLiteStore

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def submitted(n: int) -> int:
        return len([f.result() for f in [inc.submit(i) for i in range(n)]])

    @lib.flow
    def sequential(n: int) -> int:
        return len([inc(i) for i in range(n)])

    figures: dict[str, float] = {}
    for name, body in (("submitted", submitted), ("sequential", sequential)):
        store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "asyncflow.db"))
        previous = set_store(store)
        try:
            start = time.perf_counter()
            body(n)
            figures[f"{name}_per_task_us"] = (time.perf_counter() - start) / n * 1e6
            counts = store.counts()
        finally:
            set_store(previous)
            store.close()
        figures[f"{name}_missing_task_runs"] = n - counts["task_runs"]
        figures[f"{name}_missing_states"] = 3 * (n + 1) - counts["states"]
        figures[f"{name}_waits"] = store.waited
    return figures


def l_no_loss_baseline(n: int) -> dict[str, float]:
    plain = a_sync_calls_baseline(n)["per_task_us"]
    return {"submitted_per_task_us": plain, "sequential_per_task_us": plain, "submitted_missing_task_runs": 0,
            "sequential_missing_task_runs": 0, "submitted_missing_states": 0, "sequential_missing_states": 0,
            "submitted_waits": 0, "sequential_waits": 0}


# -- m, n. task runners: per-task cost, and a CPU-bound map over worker processes ------------------
def _engines(wanted: tuple[str, ...]) -> dict[str, Any]:
    """The external engines the runner scenarios use, started outside the timings (those installed)."""
    engines: dict[str, Any] = {}
    if "dask" in wanted:
        try:
            import distributed
        except ImportError:
            pass
        else:
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               dashboard_address=":0", silence_logs=40)
            engines["dask"] = (cluster, distributed.Client(cluster))
    if "ray" in wanted:
        try:
            import ray
        except ImportError:
            pass
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            engines["ray"] = ray
    return engines


def _close(engines: dict[str, Any]) -> None:
    if "dask" in engines:
        cluster, client = engines["dask"]
        client.close()
        cluster.close()
    if "ray" in engines:
        engines["ray"].shutdown()


def _runner_flow_us(lib: Any, runner: Any, fn: Any, args: list[Any]) -> float:
    """Seconds per task of `fn.map(args)` in a flow on `runner`, after a warm-up that starts its workers."""
    task = lib.task(fn)

    @lib.flow(task_runner=runner)
    async def main() -> float:
        for future in task.map([args[0]] * 4):  # warm-up: workers started, code imported
            await future
        start = time.perf_counter()
        for future in task.map(args):
            await future
        return time.perf_counter() - start

    return anyio.run(main) / len(args) * 1e6


def m_runners(lib: Any, n: int) -> dict[str, float]:
    """Per task: N trivial tasks mapped on each runner (the engine records every state)."""
    from asyncflow.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    def inc(x: int) -> int:
        return x + 1

    engines = _engines(("dask", "ray"))
    try:
        out = {"threads_us": _runner_flow_us(lib, ThreadPoolTaskRunner(), inc, list(range(n))),
               "process_us": _runner_flow_us(lib, ProcessPoolTaskRunner(max_workers=2), inc, list(range(n)))}
        if "dask" in engines:
            from asyncflow.task_runners import DaskTaskRunner

            address = engines["dask"][0].scheduler_address
            out["dask_us"] = _runner_flow_us(lib, DaskTaskRunner(address=address), inc, list(range(n)))
        if "ray" in engines:
            from asyncflow.task_runners import RayTaskRunner

            out["ray_us"] = _runner_flow_us(lib, RayTaskRunner(), inc, list(range(n)))
        return out
    finally:
        _close(engines)


def _inc(x: int) -> int:
    return x + 1


def _timed_per_task(submit_all: Any, n: int) -> float:
    submit_all(4)  # the same warm-up
    start = time.perf_counter()
    submit_all(n)
    return (time.perf_counter() - start) / n * 1e6


def m_runners_baseline(n: int) -> dict[str, float]:
    """The same work through each engine's own submit, with nothing recorded."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    def inc(x: int) -> int:
        return x + 1

    engines = _engines(("dask", "ray"))
    try:
        with ThreadPoolExecutor() as threads:
            out = {"threads_us": _timed_per_task(lambda k: [f.result() for f in [threads.submit(inc, i)
                                                                                 for i in range(k)]], n)}
        with ProcessPoolExecutor(2) as processes:
            out["process_us"] = _timed_per_task(lambda k: [f.result() for f in [processes.submit(_inc, i)
                                                                                for i in range(k)]], n)
        if "dask" in engines:
            client = engines["dask"][1]
            out["dask_us"] = _timed_per_task(lambda k: client.gather([client.submit(inc, i, pure=False)
                                                                     for i in range(k)]), n)
        if "ray" in engines:
            ray = engines["ray"]
            remote_inc = ray.remote(inc)
            out["ray_us"] = _timed_per_task(lambda k: ray.get([remote_inc.remote(i) for i in range(k)]), n)
        return out
    finally:
        _close(engines)


_SPIN = 4_000_000  # pure-Python iterations of one CPU-bound task (~0.3-0.6 s here)
_ROUNDS = 3


def _spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i % 7
    return total


def n_cpu_map(lib: Any, n: int) -> dict[str, float]:
    """Wall seconds of a map of N CPU-bound pure-Python tasks: a plain loop, threads (the GIL: no
    gain), worker processes (1 and 2), Dask (2 workers) and Ray (2 CPUs) if installed. Every variant
    runs once per round, in turn, and the best of the rounds counts, so that load from other work on
    the machine weighs on all of them alike."""
    from asyncflow.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    def spin(iterations: int) -> int:  # defined here: it travels by value (Ray's workers cannot import bench/)
        total = 0
        for i in range(iterations):
            total += i % 7
        return total

    task = lib.task(spin)

    def wall(runner: Any) -> float:
        @lib.flow(task_runner=runner)
        async def main() -> float:
            for future in task.map([1] * 2):  # warm-up: workers started, code imported
                await future
            start = time.perf_counter()
            for future in task.map([_SPIN] * n):
                await future
            return time.perf_counter() - start

        return anyio.run(main)  # type: ignore[no-any-return]

    def sequential() -> float:
        start = time.perf_counter()
        for _ in range(n):
            spin(_SPIN)
        return time.perf_counter() - start

    engines = _engines(("dask", "ray"))
    try:
        variants: dict[str, Any] = {
            "sequential_s": sequential, "threads_s": lambda: wall(ThreadPoolTaskRunner()),
            "process_1_s": lambda: wall(ProcessPoolTaskRunner(max_workers=1)),
            "process_2_s": lambda: wall(ProcessPoolTaskRunner(max_workers=2))}
        if "dask" in engines:
            from asyncflow.task_runners import DaskTaskRunner

            address = engines["dask"][0].scheduler_address
            variants["dask_2_s"] = lambda: wall(DaskTaskRunner(address=address))
        if "ray" in engines:
            from asyncflow.task_runners import RayTaskRunner

            variants["ray_2_s"] = lambda: wall(RayTaskRunner())
        best: dict[str, float] = {}
        for _ in range(_ROUNDS):
            for name, run in variants.items():
                elapsed = run()
                best[name] = min(best.get(name, elapsed), elapsed)
        return best
    finally:
        _close(engines)


def n_cpu_map_baseline(n: int) -> dict[str, float]:
    """The same work in a plain loop, best of the rounds (a ratio below 1 is a speed-up over it)."""
    best = float("inf")
    for _ in range(_ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            _spin(_SPIN)
        best = min(best, time.perf_counter() - start)
    keys = ("sequential_s", "threads_s", "process_1_s", "process_2_s", "dask_2_s", "ray_2_s")
    return dict.fromkeys(keys, best)


# -- o, p. many flows at once in one event loop (an async web service) ----------------------------
async def _flows_at_once(lib: Any, flows: int, tasks: int, sleep_s: float) -> float:
    @lib.task
    async def work() -> None:
        await anyio.sleep(sleep_s)

    @lib.flow
    async def one() -> None:
        if tasks == 1:
            await work()
            return
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(work)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(flows):
            tg.start_soon(one)
    return time.perf_counter() - start


async def _plain_flows_at_once(flows: int, tasks: int, sleep_s: float) -> float:
    async def one() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(anyio.sleep, sleep_s)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(flows):
            tg.start_soon(one)
    return time.perf_counter() - start


def o_concurrent_flows(lib: Any, n: int) -> dict[str, float]:
    """N async flows at once, each running 10 async tasks that await 10 ms (issue 15's shape)."""
    return {"wall_s": anyio.run(_flows_at_once, lib, n, 10, 0.01)}


def o_concurrent_flows_baseline(n: int) -> dict[str, float]:
    return {"wall_s": anyio.run(_plain_flows_at_once, n, 10, 0.01)}


def p_flows_scaling(lib: Any, n: int) -> dict[str, float]:
    """N and 10×N flows at once, each awaiting one task that sleeps 0.1 s: wall ÷ the ideal 0.1 s, and
    how the wall grows with ten times the flows (linear is ×10 plus the fixed 0.1 s)."""
    small = anyio.run(_flows_at_once, lib, n, 1, 0.1)
    large = anyio.run(_flows_at_once, lib, 10 * n, 1, 0.1)
    return {"wall_n_s": small, "wall_n_over_ideal": small / 0.1, "wall_10n_s": large, "wall_10n_over_n": large / small}


def p_flows_scaling_baseline(n: int) -> dict[str, float]:
    small = anyio.run(_plain_flows_at_once, n, 1, 0.1)
    large = anyio.run(_plain_flows_at_once, 10 * n, 1, 0.1)
    return {"wall_n_s": small, "wall_n_over_ideal": small / 0.1, "wall_10n_s": large, "wall_10n_over_n": large / small}


# -- q. what the default store costs per task run: the writer's CPU and the bytes on disk ------------
def _thread_cpu_s(thread: Any) -> float:
    """CPU seconds (user + system) a thread of this process used, from /proc (Linux)."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer_process_cpu_s(store: Any) -> float:
    """CPU seconds the store's writer process (ASYNCFLOW_STORE_WRITER) used so far, 0 without one."""
    child = getattr(store, "_child", None)
    if child is None:
        return 0.0
    with open(f"/proc/{child.proc.pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def q_store_cost(lib: Any, n: int) -> dict[str, float]:
    """A sync flow calls a trivial task N times with the SQLite store: the writer thread's CPU per task
    run (this process's share of the writing), the writer process's (its own process: ASYNCFLOW_STORE_WRITER),
    and the bytes the database grew by per task run (after a checkpoint)."""
    import sqlite3
    import tempfile
    import threading

    if lib.__name__ != "asyncflow":
        raise SystemExit("scenario q is asyncflow's own")
    from asyncflow._store import set_store
    from asyncflow._store.sqlite import SQLiteStore

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.flow
    def main(count: int) -> None:
        for i in range(count):
            inc(i)

    path = os.path.join(tempfile.mkdtemp(), "asyncflow.db")

    def size() -> int:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        return pages * page

    store = SQLiteStore(path)
    previous = set_store(store)
    try:
        main(10)  # the schema, the flow row, the writer thread started
        before = size()
        writer = [t for t in threading.enumerate() if t.name.startswith("asyncflow")]
        cpu_before, child_before = sum(_thread_cpu_s(t) for t in writer), _writer_process_cpu_s(store)
        main(n)
        store.flush()
        writer = [t for t in threading.enumerate() if t.name.startswith("asyncflow")]
        cpu = sum(_thread_cpu_s(t) for t in writer) - cpu_before
        child = _writer_process_cpu_s(store) - child_before
        after = size()
    finally:
        set_store(previous)
        store.close()
    return {"writer_cpu_per_task_run_us": cpu / n * 1e6, "writer_process_cpu_per_task_run_us": child / n * 1e6,
            "bytes_per_task_run": (after - before) / n}


def q_store_cost_baseline(n: int) -> dict[str, float]:
    """The memory store: no writer thread, nothing on disk."""
    return {"writer_cpu_per_task_run_us": 0.0, "writer_process_cpu_per_task_run_us": 0.0, "bytes_per_task_run": 0.0}


# -- r. does a long flow slow down as it goes? ------------------------------------------------------
def r_long_flow(lib: Any, n: int) -> dict[str, float]:
    """A sync flow calls a trivial task N times: per-task cost of the last tenth ÷ the first tenth, by
    wall time and by the process's CPU time (every thread's: the store's writer included), which other
    jobs on the machine move less."""

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    marks: list[tuple[float, float]] = []
    tenth = max(1, n // 10)

    @lib.flow
    def main() -> None:
        for i in range(n):
            if i % tenth == 0:
                marks.append((time.perf_counter(), time.process_time()))
            inc(i)
        marks.append((time.perf_counter(), time.process_time()))

    main()
    first, last = marks[1][0] - marks[0][0], marks[-1][0] - marks[-2][0]
    first_cpu, last_cpu = marks[1][1] - marks[0][1], marks[-1][1] - marks[-2][1]
    return {"first_tenth_us": first / tenth * 1e6, "last_tenth_us": last / tenth * 1e6, "last_over_first": last / first,
            "first_tenth_cpu_us": first_cpu / tenth * 1e6, "last_tenth_cpu_us": last_cpu / tenth * 1e6,
            "last_over_first_cpu": last_cpu / first_cpu}


def r_long_flow_baseline(n: int) -> dict[str, float]:
    return {"first_tenth_us": 0.1, "last_tenth_us": 0.1, "last_over_first": 1.0, "first_tenth_cpu_us": 0.1,
            "last_tenth_cpu_us": 0.1, "last_over_first_cpu": 1.0}


SCENARIOS: dict[str, tuple[str, int]] = {
    "a": ("sync flow calls a sync task in sequence", 5000),
    "b": ("async flow awaits an async task in sequence", 5000),
    "c_async": ("sync flow submits async tasks, collects results", 5000),
    "c_async_flow": ("async flow submits async tasks, awaits results", 5000),
    "c_sync": ("flow submits sync tasks, collects results", 5000),
    "d": ("map over N items", 5000),
    "e": ("cache hits (task_input_hash)", 5000),
    "e_disk": ("cache hits read from the result file (cache_result_in_memory=False)", 2000),
    "f": ("task fails twice then succeeds (retries=2)", 2000),
    "g": ("cold start: import, and a one-flow script", 1),
    "h": ("memory: N submitted tasks in one flow", 100_000),
    "i": ("cancellation: N running tasks hit the flow timeout", 10_000),
    "j": ("run store: hot-path cost per state, SQLite writer throughput, task runs with each store", 20_000),
    "k": ("background: .delay() N runs, one worker runs them (SQLite broker)", 2000),
    "l": ("nothing lost: N submitted tasks, then N sequential calls, all in the SQLite store", 100_000),
    "m": ("task runners: N trivial tasks mapped on each runner vs the engine's own submit", 500),
    "n": ("CPU-bound map of N tasks: threads, worker processes, Dask, Ray", 8),
    "o": ("N async flows at once, 10 async tasks each awaiting 10 ms", 2000),
    "p": ("N and 10×N async flows at once, one task sleeping 0.1 s each", 1000),
    "q": ("the SQLite store per task run: writer CPU and bytes on disk", 20_000),
    "r": ("a long flow: per-task cost of its last tenth ÷ its first tenth", 100_000),
}

FUNCTIONS = {
    "a": (a_sync_calls, a_sync_calls_baseline),
    "b": (b_async_calls, b_async_calls_baseline),
    "c_async": (c_submit_async, c_submit_async_baseline),
    "c_async_flow": (c_submit_async_in_async_flow, c_submit_async_baseline),
    "c_sync": (c_submit_sync, c_submit_sync_baseline),
    "d": (d_map, d_map_baseline),
    "e": (e_cache_hits, e_cache_hits_baseline),
    "e_disk": (e_disk_cache_hits, e_cache_hits_baseline),
    "f": (f_retries, f_retries_baseline),
    "g": (g_cold_start, g_cold_start_baseline),
    "h": (h_memory, h_memory_baseline),
    "i": (i_cancellation, i_cancellation_baseline),
    "j": (j_store, j_store_baseline),
    "k": (k_background, k_background_baseline),
    "l": (l_no_loss, l_no_loss_baseline),
    "m": (m_runners, m_runners_baseline),
    "n": (n_cpu_map, n_cpu_map_baseline),
    "o": (o_concurrent_flows, o_concurrent_flows_baseline),
    "p": (p_flows_scaling, p_flows_scaling_baseline),
    "q": (q_store_cost, q_store_cost_baseline),
    "r": (r_long_flow, r_long_flow_baseline),
}
