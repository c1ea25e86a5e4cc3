"""The web UI's costs (issue 12): the server's start, a flow run of 10,000 task runs, the runs page over
1,000,000 flow runs. Measured over HTTP against `asyncflow server start` in its own process, as a
browser would load the pages (the HTML, not the browser's drawing).

    python bench/ui.py                          # 1,000,000 runs (several minutes to record), 10,000 task runs
    python bench/ui.py --runs 100000            # quicker
    python bench/ui.py --home /tmp/ui-bench     # keep the store there and reuse it next time

The flow of `--tasks` task runs runs through the engine (every state as a flow records it); the `--runs`
flow runs (one a second back from now: Pending, Running, Completed or Failed, one in ten tagged) are
recorded straight into the store (bench/reads.py's `fill`). Each request is timed `--repeats` times; the
median and the worst are shown, in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("ASYNCFLOW_LOGGING_LEVEL", "WARNING")

import httpx

from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(home: str) -> tuple[subprocess.Popen, str, float, float]:
    """`python -m asyncflow server start --port 0`: the seconds from spawning it to its first answer,
    and the CPU seconds it used until then (what the start costs whatever else the machine runs)."""
    env = {**os.environ, "ASYNCFLOW_HOME": home}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow", "server", "start", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if " at " not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    url = line.split(" at ")[1].split(" ")[0]
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    while True:  # (http.client: an httpx client would spend tens of ms on its TLS context first)
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            connection.request("GET", "/api/v1")
            if connection.getresponse().status == 200:
                connection.close()
                break
        except OSError:
            time.sleep(0.005)
    took = time.perf_counter() - began
    return proc, url, took, cpu_seconds(proc.pid)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def timed(client: httpx.Client, label: str, path: str, repeats: int, expect: str | None = None) -> float:
    times = []
    size = 0
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        if expect is not None and expect not in response.text:
            raise RuntimeError(f"{path}: {expect!r} not in the page")
        size = len(response.content)
    median = statistics.median(times)
    print(f"  {label:<62} {median:8.1f} ms (worst {max(times):7.1f})  {size / 1024:7.1f} KB")
    return median


def record(home: Path, runs: int, tasks: int) -> str:
    """The store under `home`: `runs` flow runs and a flow of `tasks` task runs (reused if there)."""
    from reads import big, fill

    marker = home / "ui-bench.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved["runs"] == runs and saved["tasks"] == tasks:
            print(f"(reusing the store under {home})")
            return saved["flow_run_id"]
    home.mkdir(parents=True, exist_ok=True)
    for name in ("asyncflow.db", "asyncflow.db-wal", "asyncflow.db-shm"):
        (home / name).unlink(missing_ok=True)
    os.environ["ASYNCFLOW_HOME"] = str(home)
    store = SQLiteStore(home / "asyncflow.db")
    try:
        start = time.perf_counter()
        fill(store, runs)
        print(f"(recorded {runs:,} flow runs in {time.perf_counter() - start:.0f} s)")
        with isolated_store(store):
            start = time.perf_counter()
            flow_run_id = str(big(tasks, return_state=True).state_details.flow_run_id)
            store.flush()
        print(f"(ran a flow of {tasks:,} task runs in {time.perf_counter() - start:.1f} s)")
    finally:
        store.close()
    marker.write_text(json.dumps({"runs": runs, "tasks": tasks, "flow_run_id": flow_run_id}))
    return flow_run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", help="keep the store in this directory (reused when it holds the same sizes)")
    args = parser.parse_args()
    temporary = None
    if args.home:
        home = Path(args.home)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="asyncflow-bench-ui-")
        home = Path(temporary.name)
    try:
        flow_run_id = record(home, args.runs, args.tasks)
        starts, cpus = [], []
        for _ in range(args.repeats):
            proc, url, took, cpu = start_server(str(home))
            starts.append(took)
            cpus.append(cpu)
            stop_server(proc)
        print(f"asyncflow server start: first answer {statistics.median(starts) * 1000:.0f} ms after spawning the "
              f"process (median of {args.repeats}; worst {max(starts) * 1000:.0f} ms), "
              f"{statistics.median(cpus) * 1000:.0f} ms of CPU")
        proc, url, _, _ = start_server(str(home))
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                print(f"A flow run with {args.tasks:,} task runs:")
                timed(client, "/flow-runs/ID (the page: first 100 task runs, timeline, logs)",
                      f"/flow-runs/{flow_run_id}", args.repeats, expect="tl-row")
                timeline = client.get(f"/api/v1/flow-runs/{flow_run_id}/timeline").json()
                middle = client.get(f"/api/v1/flow-runs/{flow_run_id}/timeline",
                                    params={"limit": min(500, max(args.tasks // 2, 1))}).json()["next_cursor"]
                timed(client, "  ... a later page of its timeline (?cursor=)",
                      f"/flow-runs/{flow_run_id}?cursor={middle}", args.repeats, expect="tl-row")
                timed(client, "/api/v1/flow-runs/ID/timeline (JSON, 100 task runs)",
                      f"/api/v1/flow-runs/{flow_run_id}/timeline", args.repeats)
                timed(client, "/api/v1/flow-runs/ID (with task run counts by state)",
                      f"/api/v1/flow-runs/{flow_run_id}", args.repeats)
                assert len(timeline["rows"]) == min(100, args.tasks)
                print(f"The runs page, {args.runs:,} flow runs in the store:")
                timed(client, "/runs (the newest 50)", "/runs", args.repeats, expect="run-link")
                until = time.time() - args.runs / 2  # runs are a second apart: the middle of the store
                timed(client, "/runs?until=(the middle) (a page deep in the store)", f"/runs?until={until:.0f}",
                      args.repeats, expect="run-link")
                page = client.get("/api/v1/flow-runs?limit=50").json()
                timed(client, "/runs?cursor= (the next page)", f"/runs?cursor={page['next_cursor']}", args.repeats,
                      expect="run-link")
                timed(client, "/runs?flow=flow-3", "/runs?flow=flow-3", args.repeats, expect="run-link")
                timed(client, "/runs?state=Failed (1 run in 100)", "/runs?state=Failed", args.repeats,
                      expect="run-link")
                timed(client, "/runs?tag=prod (1 run in 10)", "/runs?tag=prod", args.repeats, expect="run-link")
                timed(client, "/runs?since=1h", "/runs?since=1h", args.repeats, expect="run-link")
                timed(client, "/runs?search=run-4242 (a scan: no index on names)", "/runs?search=run-4242",
                      args.repeats)
                timed(client, "/runs?search=run-4242&since=24h (the scan bounded by time)",
                      "/runs?search=run-4242&since=24h", args.repeats)
                timed(client, "/api/v1/flow-runs?limit=50", "/api/v1/flow-runs?limit=50", args.repeats)
                timed(client, "/runs/chart (after the page: 24 h, 86,400 runs)", "/runs/chart", args.repeats,
                      expect="<svg")
                timed(client, "/runs/chart?since=1h", "/runs/chart?since=1h", args.repeats, expect="<svg")
                timed(client, "/api/v1/changes?since=(the middle)", f"/api/v1/changes?since={args.runs}",
                      args.repeats)
        finally:
            stop_server(proc)
    finally:
        if temporary is not None:
            temporary.cleanup()


if __name__ == "__main__":
    main()
