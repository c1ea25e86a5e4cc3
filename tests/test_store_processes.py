"""Many processes, one store: real subprocesses share one ASYNCFLOW_HOME. Every record arrives, nobody
sees "database is locked", and a process killed with SIGKILL loses nothing it had flushed and leaves
the database readable. Timings are printed (pytest -s), never asserted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from asyncflow._store.sqlite import SQLiteStore

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from asyncflow import flow, task

    n, go = int(sys.argv[1]), Path(sys.argv[2])

    @task
    def work(i):
        return i * i

    @flow
    def batch(n):
        return sum(work(i) for i in range(n))

    Path(str(go) + f".ready-{os.getpid()}").touch()
    while not go.exists():  # every process starts at the same moment
        time.sleep(0.001)
    started = time.perf_counter()
    state = batch(n, return_state=True)  # returns once its records are in the database
    print(json.dumps({"seconds": time.perf_counter() - started, "flow_run_id": str(state.state_details.flow_run_id)}))
""")


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), ASYNCFLOW_LOGGING_LEVEL="INFO", PYTHONUNBUFFERED="1")
    return env


def run_workers(home: Path, count: int, n: int) -> list[dict[str, object]]:
    script = home / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    go = home / "go"
    go.unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, str(script), str(n), str(go)], env=env_for(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    deadline = time.monotonic() + 60
    while len(list(home.glob("go.ready-*"))) < count:
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err and "busy" not in err and "Traceback" not in err, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    for ready in home.glob("go.ready-*"):
        ready.unlink()
    return results


def test_four_processes_share_one_store_and_every_record_arrives(tmp_path):
    n = 1000
    alone = run_workers(tmp_path, 1, n)[0]["seconds"]
    together = run_workers(tmp_path, 4, n)
    slowest = max(r["seconds"] for r in together)
    print(f"\n1 process: {alone:.3f} s for {n} task runs; 4 at once: slowest {slowest:.3f} s "
          f"(x{slowest / alone:.1f}, on {os.cpu_count()} CPUs)")
    store = SQLiteStore(tmp_path / "asyncflow.db", create=False)
    try:
        counts = store.counts()
        assert counts["flow_runs"] == 5 and counts["task_runs"] == 5 * n
        assert counts["states"] == 5 * (3 * n + 3)  # Pending, Running, Completed for every run
        for result in together:
            run = store.read_flow_run(result["flow_run_id"])
            assert run.state.is_completed()
            runs = store.read_task_runs(flow_run_id=run.id)
            assert len(runs) == n and all(r.state.is_completed() and r.run_count == 1 for r in runs)
            assert sorted(r.parameters["i"] for r in runs) == list(range(n))
            assert len(store.read_logs(flow_run_id=run.id)) == 2 * n + 1  # created + finished per task, flow end
    finally:
        store.close()


KILLED = textwrap.dedent("""
    import sys, time
    from asyncflow import flow, task
    from asyncflow.client import get_client

    @task
    def work(i):
        return i

    @flow
    def finished():
        return [work(i) for i in range(50)]

    @flow
    def endless():
        for i in range(200):
            work(i)
        with get_client(sync_client=True) as client:  # a read flushes what this process recorded
            print("flushed", len(client.read_task_runs()), flush=True)
        i = 0
        while True:  # keep the writer busy until the kill
            work(i)
            i += 1

    finished_id = finished(return_state=True).state_details.flow_run_id
    print("finished", finished_id, flush=True)
    endless()
""")


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_a_process_killed_mid_flow_loses_nothing_flushed_and_its_open_runs_are_marked_crashed(tmp_path, delay,
                                                                                      monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", KILLED], env=env_for(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        finished_line = proc.stdout.readline().split()
        flushed_line = proc.stdout.readline().split()
        assert finished_line[:1] == ["finished"] and flushed_line[:1] == ["flushed"], proc.stderr.read()
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    path = tmp_path / "asyncflow.db"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    store = SQLiteStore(path, create=False)
    try:
        finished = store.read_flow_run(finished_line[1])
        assert finished.state.is_completed()
        assert len(store.read_task_runs(flow_run_id=finished.id)) == 50
        [endless] = store.read_flow_runs(flow_name="endless")
        assert endless.state.is_crashed()  # killed: the first process to open the store marked it
        assert f"pid {proc.pid} " in endless.state.message and "killed" in endless.state.message
        assert [s.name for s in store.read_states(endless.id)][-1] == "Crashed"
        assert store.recovered >= 1
        task_runs = store.read_task_runs()
        assert len(task_runs) >= int(flushed_line[1])  # everything flushed before the kill is there
        for run in task_runs:  # each batch is one transaction: a run is never there without its first state
            assert [s.name for s in store.read_states(run.id)][:1] == ["Pending"]
    finally:
        store.close()
    from asyncflow import _settings
    from asyncflow.cli import main

    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("ASYNCFLOW_STORE", raising=False)
    _settings.reload()
    assert main(["flow-run", "ls"]) == 0
    _settings.reload()
