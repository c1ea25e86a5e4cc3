"""The web UI's JSON API and pages over HTTP (SPEC §10), with httpx against a running server (uvicorn in
a thread) that reads the SQLite store as another process would: lists with filters and cursor pages, one
run with its states, a flow run's timeline, logs, the change feed and its event stream, the background
queue, the two actions behind a confirmation, bad input (404 / 400 naming the parameter), and
`asyncflow server start` itself."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
pytest.importorskip("uvicorn")

from server_helpers import running_server

from asyncflow import flow, get_run_logger, task
from asyncflow.testing import isolated_home

ATTEMPTS: dict[str, int] = {}


@task(retries=1, retry_delay_seconds=0.05)
def flaky(i: int) -> int:
    ATTEMPTS[str(i)] = ATTEMPTS.get(str(i), 0) + 1
    get_run_logger().info("attempt %s of flaky(%s)", ATTEMPTS[str(i)], i)
    if i == 1 and ATTEMPTS[str(i)] == 1:
        raise ValueError("flaky once")
    return i


@task(cache_key_fn=lambda context, parameters: f"ui-test-{parameters['x']}")
def cached(x: int) -> int:
    return x * 2


@task
def explode() -> None:
    raise RuntimeError("kaboom")


@flow
def child(x: int) -> int:
    return cached(x)


@flow
def etl(n: int = 3) -> list[int]:
    get_run_logger().warning("etl starts with n=%s", n)
    out = [flaky(i) for i in range(n)]
    child(n)
    return out


@flow
def broken() -> None:
    explode()


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_") and name != "ASYNCFLOW_HOME":
            monkeypatch.delenv(name)
    ATTEMPTS.clear()
    with isolated_home(tmp_path / "home") as store:
        yield store


@pytest.fixture
def runs(home):
    """Three etl runs (the first tagged), a failed run; everything written to the file."""
    from asyncflow import tags

    with tags("nightly"):
        first = etl(return_state=True)
    ATTEMPTS.clear()
    second = etl(2, return_state=True)
    third = etl(1, return_state=True)
    bad = broken(return_state=True)
    home.flush()
    return {"first": str(first.state_details.flow_run_id), "second": str(second.state_details.flow_run_id),
            "third": str(third.state_details.flow_run_id), "broken": str(bad.state_details.flow_run_id)}


@pytest.fixture
def api(runs):
    with running_server() as (url, app), httpx.Client(base_url=url, timeout=60) as client:  # a hang guard
        client.app = app  # type: ignore[attr-defined]
        yield client


def test_flow_runs_newest_first_with_filters_and_cursor_pages(api, runs):
    everything = api.get("/api/v1/flow-runs").json()
    top_level = [r for r in everything["items"] if r["parent_flow_run_id"] is None]
    assert [r["id"] for r in top_level] == [runs["broken"], runs["third"], runs["second"], runs["first"]]
    assert everything["next_cursor"] is None and len(everything["items"]) == 7  # and three child subflows

    failed = api.get("/api/v1/flow-runs", params={"state": "failed"}).json()["items"]
    assert [r["id"] for r in failed] == [runs["broken"]]
    assert [r["id"] for r in api.get("/api/v1/flow-runs?tag=nightly&flow=etl").json()["items"]] == [runs["first"]]
    by_flow = api.get("/api/v1/flow-runs?flow=child,broken").json()["items"]
    assert {r["flow_name"] for r in by_flow} == {"child", "broken"}
    assert api.get("/api/v1/flow-runs?search=ETL&since=1h").json()["items"][0]["id"] == runs["third"]
    assert api.get("/api/v1/flow-runs?until=2000-01-01").json()["items"] == []
    subflows = api.get("/api/v1/flow-runs", params={"parent": runs["first"]}).json()["items"]
    assert [s["flow_name"] for s in subflows] == ["child"]

    seen, cursor = [], None
    while True:  # pages of 2, oldest first: each run once
        params = {"limit": 2, "order": "oldest", **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/flow-runs", params=params).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in reversed(everything["items"])]

    counts = api.get("/api/v1/flow-runs/counts?bucket=1h&since=1d").json()
    assert counts["bucket_seconds"] == 3600
    assert sum(c["count"] for c in counts["items"]) == 7
    assert {c["state_name"] for c in counts["items"]} == {"Completed", "Failed"}


def test_one_flow_run_its_timeline_and_its_logs(api, runs):
    run = api.get(f"/api/v1/flow-runs/{runs['first']}").json()
    assert run["name"] and run["flow_name"] == "etl" and run["tags"] == ["nightly"]
    assert [s["name"] for s in run["states"]] == ["Pending", "Running", "Completed"]
    assert run["task_run_counts"] == {"Completed": 3} and run["traceback"] is None

    timeline = api.get(f"/api/v1/flow-runs/{runs['first']}/timeline").json()
    assert [r["kind"] for r in timeline["rows"]] == ["task_run"] * 3 + ["flow_run"]  # in the order they started
    retried = timeline["rows"][1]
    assert [s["name"] for s in retried["states"]] == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    sub = timeline["rows"][3]
    assert sub["run"]["flow_name"] == "child" and [r["run"]["task_name"] for r in sub["rows"]] == ["cached"]
    assert timeline["next_cursor"] is None

    first_page = api.get(f"/api/v1/flow-runs/{runs['first']}/timeline?limit=2").json()
    assert [r["kind"] for r in first_page["rows"]] == ["task_run"] * 2  # the subflow comes with the page it began in
    second_page = api.get(f"/api/v1/flow-runs/{runs['first']}/timeline",
                          params={"limit": 2, "cursor": first_page["next_cursor"]}).json()
    assert [r["kind"] for r in second_page["rows"]] == ["task_run", "flow_run"]

    logs = api.get(f"/api/v1/flow-runs/{runs['first']}/logs").json()
    messages = [line["message"] for line in logs["items"]]
    assert "etl starts with n=3" in messages and "attempt 2 of flaky(1)" in messages
    warnings = api.get(f"/api/v1/flow-runs/{runs['first']}/logs?level=warning").json()["items"]
    assert {line["level"] for line in warnings} == {"WARNING"} and len(warnings) == 2  # the flow's and the retry's
    paged = api.get(f"/api/v1/flow-runs/{runs['first']}/logs?limit=2").json()
    assert [line["message"] for line in paged["items"]] == messages[:2]
    rest = api.get(f"/api/v1/flow-runs/{runs['first']}/logs", params={"after": paged["next_after"]}).json()
    assert [line["message"] for line in rest["items"]] == messages[2:] and rest["next_after"] is None


def test_failed_runs_show_their_traceback_and_task_runs_their_cache_key(api, runs):
    bad = api.get(f"/api/v1/flow-runs/{runs['broken']}").json()
    assert bad["state"]["type"] == "FAILED"
    assert bad["traceback"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: kaboom" in bad["traceback"]
    [exploded] = api.get("/api/v1/task-runs", params={"flow_run_id": runs["broken"]}).json()["items"]
    detail = api.get(f"/api/v1/task-runs/{exploded['id']}").json()
    assert "RuntimeError: kaboom" in detail["traceback"] and detail["cache"] is None
    assert [line["level"] for line in api.get(f"/api/v1/task-runs/{exploded['id']}/logs?level=ERROR").json()["items"]]

    cached_runs = api.get("/api/v1/task-runs", params={"task": "cached", "order": "oldest"}).json()["items"]
    assert len(cached_runs) == 3
    hit = api.get(f"/api/v1/task-runs/{cached_runs[0]['id']}").json()
    assert hit["cache"] == {"key": "ui-test-3", "expiration": None, "stored": True}
    page = api.get(f"/flow-runs/{runs['broken']}")
    assert page.status_code == 200 and 'id="traceback"' in page.text and "RuntimeError: kaboom" in page.text


def test_pages_render_runs_flow_runs_task_runs(api, runs):
    page = api.get("/runs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count('class="run-link"') == 7 and "state-failed" in page.text
    assert api.get("/runs?state=Failed").text.count('class="run-link"') == 1
    assert api.get("/runs?limit=2").text.count('class="run-link"') == 2
    assert "<svg" in api.get("/runs/chart?since=24h").text
    flow_page = api.get(f"/flow-runs/{runs['first']}").text
    assert 'data-state="AwaitingRetry"' in flow_page and "attempt 2 of flaky(1)" in flow_page
    assert flow_page.count('id="tr-') == 3 and "subflow" in flow_page
    assert 'class="log level-warning' in api.get(f"/flow-runs/{runs['first']}?level=WARNING").text
    assert "attempt 2" not in api.get(f"/flow-runs/{runs['first']}?level=WARNING").text
    task_run_id = json.loads(api.get(f"/api/v1/flow-runs/{runs['first']}/timeline").text)["rows"][1]["run"]["id"]
    task_page = api.get(f"/task-runs/{task_run_id}").text
    assert "AwaitingRetry" in task_page and "flaky once" in task_page
    assert api.get("/", follow_redirects=True).url.path == "/runs"
    assert api.get("/static/app.js").status_code == 200


def test_the_pages_of_runs_still_going(home):
    """A flow run and a task run still Running (recorded by this process, read through the file)."""
    gate = threading.Event()

    @task
    def hold() -> None:
        gate.wait(30)

    @flow
    def holding() -> None:
        hold()

    runner = threading.Thread(target=holding)
    runner.start()
    try:
        with running_server() as (url, _app), httpx.Client(base_url=url, timeout=10) as api:
            deadline = time.monotonic() + 20
            while True:
                items = api.get("/api/v1/task-runs?task=hold").json()["items"]
                if items and items[0]["state"]["name"] == "Running":
                    break
                assert time.monotonic() < deadline, items
                time.sleep(0.05)
            flow_run_id = items[0]["flow_run_id"]
            page = api.get(f"/flow-runs/{flow_run_id}")
            assert page.status_code == 200 and 'data-to=""' in page.text  # an open segment, until now
            assert api.get(f"/task-runs/{items[0]['id']}").status_code == 200
            assert api.get(f"/flow-runs/{flow_run_id}/rows/{items[0]['id']}").status_code == 200
            assert "running" in api.get("/runs").text
    finally:
        gate.set()
        runner.join(30)


@pytest.mark.parametrize(("url", "parameter"), [
    ("/api/v1/flow-runs?since=yesterday", "since"),
    ("/api/v1/flow-runs?since=2026-01-01T10:00:00", "since"),  # no timezone
    ("/api/v1/flow-runs?since=1h&until=2000-01-01", "until"),
    ("/api/v1/flow-runs?limit=0", "limit"),
    ("/api/v1/flow-runs?limit=ten", "limit"),
    ("/api/v1/flow-runs?cursor=not-a-cursor", "cursor"),
    ("/api/v1/flow-runs?order=random", "order"),
    ("/api/v1/flow-runs?stat=Failed", "stat"),
    ("/api/v1/flow-runs?parent=42", "parent"),
    ("/api/v1/flow-runs?task=x", "task"),
    ("/api/v1/flow-runs?limit=1&limit=2", "limit"),
    ("/api/v1/flow-runs/counts?bucket=-5", "bucket"),
    ("/api/v1/task-runs?flow_run_id=nope", "flow_run_id"),
    ("/api/v1/changes?since=-1", "since"),
    ("/api/v1/events?level=LOUD", "level"),
    ("/runs?since=soon", "since"),
    ("/runs?cursor=%24%24", "cursor"),
])
def test_malformed_parameters_are_400s_that_name_the_parameter(api, url, parameter):
    response = api.get(url)
    assert response.status_code == 400, response.text
    if url.startswith("/api/"):
        assert response.json()["error"]["parameter"] == parameter
        assert response.json()["error"]["message"]
    else:
        assert f'<code id="error-parameter">{parameter}</code>' in response.text


def test_a_cursor_of_another_query_is_a_400(api):
    cursor = api.get("/api/v1/flow-runs?limit=1").json()["next_cursor"]
    response = api.get("/api/v1/flow-runs", params={"limit": 1, "cursor": cursor, "state": "Completed"})
    assert response.status_code == 400 and response.json()["error"]["parameter"] == "cursor"
    assert "another query" in response.json()["error"]["message"]


@pytest.mark.parametrize("url", ["/api/v1/flow-runs/{uuid}", "/api/v1/flow-runs/{uuid}/timeline",
                                 "/api/v1/flow-runs/{uuid}/logs", "/api/v1/task-runs/{uuid}",
                                 "/api/v1/task-runs/{uuid}/logs", "/api/v1/flow-runs/not-an-id", "/api/v1/nothing",
                                 "/flow-runs/{uuid}", "/task-runs/{uuid}", "/flow-runs/not-an-id",
                                 "/runs/row/{uuid}", "/nothing/here"])
def test_unknown_ids_and_paths_are_404s(api, url):
    response = api.get(url.format(uuid=uuid.uuid4()))
    assert response.status_code == 404
    if url.startswith("/api/"):
        assert response.json()["error"]["status"] == 404 and response.json()["error"]["message"]
    else:
        assert "Not found" in response.text and 'id="error-message"' in response.text


def test_only_this_servers_host_names_are_served(api):
    assert api.get("/api/v1", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    assert api.get("/api/v1", headers={"host": "localhost:4200"}).status_code == 200


def test_delete_and_clear_need_a_confirmation(api, runs):
    target = runs["second"]
    assert api.delete(f"/api/v1/flow-runs/{target}").json()["error"]["parameter"] == "confirm"
    assert api.get(f"/api/v1/flow-runs/{target}").status_code == 200
    deleted = api.delete(f"/api/v1/flow-runs/{target}?confirm=true").json()
    assert deleted["deleted"]["id"] == target and deleted["counts"]["flow_runs"] == 2  # with its subflow
    assert api.get(f"/api/v1/flow-runs/{target}").status_code == 404
    assert api.delete(f"/api/v1/flow-runs/{target}?confirm=true").status_code == 404

    # the page: a confirmation page whose form carries the server's token; a form without it is refused
    other = runs["third"]
    confirm = api.get(f"/flow-runs/{other}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    token = confirm.text.split('name="token" value="')[1].split('"')[0]
    assert api.post(f"/flow-runs/{other}/delete", data={"token": "forged"}).status_code == 400
    assert api.get(f"/api/v1/flow-runs/{other}").status_code == 200
    done = api.post(f"/flow-runs/{other}/delete", data={"token": token}, follow_redirects=True)
    assert done.status_code == 200 and "Deleted flow run" in done.text
    assert api.get(f"/api/v1/flow-runs/{other}").status_code == 404
    assert api.get(f"/flow-runs/{other}/delete").status_code == 404

    # a cache record: listed, refused without confirmation, cleared with it
    keys = [r["key"] for r in api.get("/api/v1/cache").json()["items"]]
    assert {"ui-test-1", "ui-test-2", "ui-test-3"} <= set(keys)
    assert api.delete("/api/v1/cache/ui-test-1").json()["error"]["parameter"] == "confirm"
    assert api.delete("/api/v1/cache/ui-test-1?confirm=true").json()["cleared"] == "ui-test-1"
    assert api.delete("/api/v1/cache/ui-test-1?confirm=true").status_code == 404
    assert api.delete("/api/v1/cache/..%2F..%2Fasyncflow.db?confirm=true").status_code == 404  # not outside
    page = api.get("/cache/clear", params={"key": "ui-test-2"})
    assert page.status_code == 200 and "ui-test-2" in page.text
    cleared = api.post("/cache/clear", data={"token": token, "key": "ui-test-2"}, follow_redirects=True)
    assert cleared.status_code == 200 and "Cleared the cache record" in cleared.text
    assert "ui-test-2" not in [r["key"] for r in api.get("/api/v1/cache").json()["items"]]


def _events(client: httpx.Client, url: str, until, timeout: float = 20.0, headers: dict | None = None) -> list[dict]:
    """Read the event stream until `until(batches)` holds."""
    batches: list[dict] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", url, timeout=timeout, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "changes":
                batches.append(json.loads(line[6:]))
                if until(batches):
                    return batches
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the stream did not deliver in time: {batches}")


def test_the_change_feed_and_the_event_stream_follow_runs_as_they_are_recorded(api, home, runs):
    since = api.get("/api/v1/changes").json()["last_seq"]
    assert since > 0
    assert api.get("/api/v1/changes", params={"since": since}).json()["items"] == []
    runner = threading.Timer(0.5, lambda: (etl(1), home.flush()))
    runner.start()
    try:
        def finished(batches):
            return any(c["kind"] == "flow_run" and c["state"]["name"] == "Completed" and c["run_name"]
                       and c["parent_flow_run_id"] is None for b in batches for c in b["changes"])

        batches = _events(api, f"/api/v1/events?scope=flow_runs&since={since}", finished)
    finally:
        runner.join()
    changes = [c for b in batches for c in b["changes"]]
    assert {c["kind"] for c in changes} == {"flow_run"}  # scope=flow_runs: no task runs
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    feed = api.get("/api/v1/changes", params={"since": since}).json()["items"]
    assert [c["seq"] for c in feed if c["kind"] == "flow_run"][:len(changes)] == [c["seq"] for c in changes]

    # a flow run's stream: its task runs' states and its log lines, from where a page left off
    flow_run_id = runs["first"]
    replay = _events(api, f"/api/v1/events?flow_run_id={flow_run_id}&since=0&logs=true&logs_since=0&level=WARNING",
                     lambda b: True)
    assert {c["flow_run_id"] for c in replay[0]["changes"]} >= {flow_run_id}
    assert "AwaitingRetry" in {c["state"]["name"] for c in replay[0]["changes"]}
    assert {line["level"] for line in replay[0]["logs"]} == {"WARNING"}
    # the browser's Last-Event-ID ("seq:log_seq") resumes after what it saw, whatever the URL says
    last = api.get("/api/v1/changes", params={"since": since}).json()["last_seq"]
    resumed = _events(api, "/api/v1/events?since=0", lambda b: True, headers={"last-event-id": f"{last - 2}:0"})
    assert [c["seq"] for c in resumed[0]["changes"]] == [last - 1, last]


def test_the_feeds_tail_is_found_in_a_few_one_row_reads():
    from asyncflow.server._live import tail

    for last in (0, 1, 2, 5, 1000, 1025, 3_000_017):
        reads: list[int] = []

        def read(since: int, reads: list[int] = reads, last: int = last) -> bool:
            reads.append(since)
            return since < last

        assert tail(read) == last
        assert len(reads) <= 2 * max(last, 1).bit_length() + 2


def test_the_background_queue_shows_queued_and_leased_runs(api, home):
    from asyncflow._workers.broker import QueuedRun
    from asyncflow._workers.sqlite_broker import SQLiteBroker

    broker = SQLiteBroker(home.path)
    try:
        for _ in range(3):
            broker.enqueue(QueuedRun(str(uuid.uuid4()), "bg.send", "send", b"payload"))
        [held] = broker.claim(["bg.send"], "worker-on-host-a", 60, 1)
        queue = api.get("/api/v1/background").json()
        assert queue["available"] and queue["counts"] == {"queued": 2, "running": 1, "finished": 0}
        assert [w["worker"] for w in queue["workers"]] == ["worker-on-host-a"]
        assert [r["id"] for r in queue["running"]] == [held.id]
        broker.complete(held.id, "worker-on-host-a", "COMPLETED", "Completed", None, None)
        assert api.get("/api/v1/background").json()["counts"]["finished"] == 1
        page = api.get("/background").text
        assert "worker-on-host-a" not in page.split('id="workers"')[1].split("</table>")[0]
        assert '<b id="count-queued">2</b>' in page
    finally:
        broker.close()


WRITER = """
import sys
from asyncflow import flow, task

@task
def work(i):
    return i

@flow
def busy(n):
    return sum(work(i) for i in range(n))

for _ in range(int(sys.argv[1])):
    busy(20)
print("wrote")
"""


def test_the_server_keeps_serving_while_another_process_writes(api, home, tmp_path):
    # another process holds the database's write lock, in a transaction it has not committed: every read
    # answers while it holds it (a read that waited for the lock would never answer, until the client's
    # hang guard); then a real writer process writes while the server reads
    holder = sqlite3.connect(home.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO flows (name, version, created) VALUES ('holder', NULL, 0)")
    try:
        other = sqlite3.connect(home.path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # it is held: no other writer gets in
            other.execute("BEGIN IMMEDIATE")
        other.close()
        held = [api.get("/api/v1/flow-runs?limit=50").status_code, api.get("/runs").status_code]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert held == [200, 200]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    before = len(api.get("/api/v1/flow-runs?flow=busy&limit=500").json()["items"])
    log = tmp_path / "writer.log"
    with open(log, "w") as out:  # (a pipe nobody reads while the loop below runs would fill up and block it)
        writer = subprocess.Popen([sys.executable, str(script), "30"], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "ASYNCFLOW_LOGGING_LEVEL": "WARNING"})
    statuses = []
    try:
        while writer.poll() is None:
            statuses.append(api.get("/api/v1/flow-runs?flow=busy&limit=50").status_code)
            statuses.append(api.get("/runs").status_code)
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    output = log.read_text()
    assert "wrote" in output, output
    assert set(statuses) == {200} and len(statuses) >= 2
    after = api.get("/api/v1/flow-runs?flow=busy&limit=500").json()["items"]
    assert len(after) == before + 30


# -- `asyncflow server start` ------------------------------------------------------------------------------
def _start(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server; its first line. (How fast it starts is bench/ui.py's business, not a test's.)"""
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow", "server", "start", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or os.environ.copy())
    line = proc.stdout.readline()
    return proc, line


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_server_start_serves_loopback_on_the_port_it_names(runs):
    proc, line = _start("--port", "0")
    try:
        assert line.startswith("asyncflow UI at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split(" ")[0]
        response = httpx.get(url + "/api/v1/flow-runs?flow=broken", timeout=10)
        assert [r["id"] for r in response.json()["items"]] == [runs["broken"]]
    finally:
        err = _stop(proc)
    assert proc.returncode in (0, -15) and "Traceback" not in err, err


def test_server_start_elsewhere_warns_and_a_busy_port_is_a_clear_error(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "asyncflow", "server", "start", "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and f"Port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    proc, line = _start("--host", "0.0.0.0", "--port", "0")
    try:
        assert line.startswith("asyncflow UI at http://127.0.0.1:"), line
    finally:
        err = _stop(proc)
    assert "warning: listening on 0.0.0.0" in err


def test_server_start_before_anything_ran_shows_an_empty_store(tmp_path):
    env = {**os.environ, "ASYNCFLOW_HOME": str(tmp_path / "empty-home")}
    proc, line = _start("--port", "0", env=env)
    try:
        url = line.split(" at ")[1].split(" ")[0]
        assert httpx.get(url + "/api/v1/flow-runs", timeout=10).json() == {"items": [], "next_cursor": None}
        assert "No runs yet" in httpx.get(url + "/runs", timeout=10).text
        assert httpx.get(url + f"/api/v1/flow-runs/{uuid.uuid4()}", timeout=10).status_code == 404
        assert not (tmp_path / "empty-home" / "asyncflow.db").exists()  # read-only: it creates nothing
        script = textwrap.dedent("""
            from asyncflow import flow
            @flow
            def first():
                return 1
            first()
        """)
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
        names = [r["flow_name"] for r in httpx.get(url + "/api/v1/flow-runs", timeout=10).json()["items"]]
        assert names == ["first"]  # the store is opened once it exists
    finally:
        _stop(proc)
