"""The client: get_client() (async) and get_client(sync_client=True) read runs, states and logs back
from the store, in this process or another one with the same ASYNCFLOW_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import asyncflow
from asyncflow import flow, task
from asyncflow.client import AsyncflowClient, ObjectNotFound, SyncAsyncflowClient, get_client
from asyncflow.testing import isolated_home


@task(tags=["io"])
def load(name):
    return f"loaded {name}"


@task
def explode():
    raise RuntimeError("kaboom")


@flow
def pipeline(names=("a", "b")):
    for name in names:
        load(name)
    return "done"


@flow
def failing():
    explode()


@pytest.fixture
def home():
    with isolated_home() as store:
        yield store


@pytest.mark.anyio
async def test_async_client_reads_runs_states_and_logs(home):
    state = await pipeline(return_state=True)  # in async code, a sync flow call is awaited
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        assert run.flow_name == "pipeline" and run.state.is_completed() and run.parameters == {"names": ["a", "b"]}
        assert [s.name for s in await client.read_flow_run_states(flow_run_id)] == ["Pending", "Running", "Completed"]
        task_runs = await client.read_task_runs(flow_run_id=flow_run_id)
        assert [(r.name, r.tags, r.state.name) for r in task_runs] == [
            ("load-0", ("io",), "Completed"), ("load-1", ("io",), "Completed")]
        assert (await client.read_task_run(task_runs[0].id)).parameters == {"name": "a"}
        assert [s.name for s in await client.read_task_run_states(task_runs[1].id)] == [
            "Pending", "Running", "Completed"]
        messages = [log.message for log in await client.read_logs(flow_run_id=flow_run_id)]
        assert "Created task run 'load-0' for task 'load'" in messages
        task_messages = [log.message for log in await client.read_logs(task_run_id=task_runs[0].id)]
        assert task_messages == ["Finished in state Completed()"]


def test_sync_client_reads_the_same(home):
    pipeline()
    failing(return_state=True)
    with get_client(sync_client=True) as client:
        assert [r.flow_name for r in client.read_flow_runs()] == ["failing", "pipeline"]  # newest first
        [bad] = client.read_flow_runs(state="failed")
        assert bad.state.is_failed() and bad.end_time is not None
        [failed_task] = client.read_task_runs(flow_run_id=bad.id)
        assert failed_task.state.is_failed() and "kaboom" in failed_task.state.message
        assert client.read_task_run_states(failed_task.id)[-1].message == failed_task.state.message
        assert any(log.level == "ERROR" for log in client.read_logs(task_run_id=failed_task.id))
        assert client.read_flow_runs(flow_name="pipeline", limit=1)[0].flow_name == "pipeline"


def test_the_client_is_importable_where_prefect_has_it():
    from asyncflow.client.orchestration import get_client as orchestration_get_client

    assert orchestration_get_client is get_client is asyncflow.get_client
    assert isinstance(get_client(), AsyncflowClient) and isinstance(get_client(sync_client=True), SyncAsyncflowClient)


def test_unknown_and_malformed_ids_are_clear_errors(home):
    missing = uuid.uuid4()
    with get_client(sync_client=True) as client:
        with pytest.raises(ObjectNotFound, match=f"No flow run with id {missing}"):
            client.read_flow_run(missing)
        with pytest.raises(ObjectNotFound, match=f"No task run with id {missing}"):
            client.read_task_run_states(str(missing))
        with pytest.raises(ValueError, match="task_run_id 'nope' is not a valid id"):
            client.read_task_run("nope")
        with pytest.raises(TypeError, match="flow_run_id must be a UUID or a string; got int"):
            client.read_flow_run_states(42)
        with pytest.raises(TypeError, match=r"read_logs\(\) needs flow_run_id=... or task_run_id=..."):
            client.read_logs()
        with pytest.raises(ValueError, match="limit must be an integer >= 0"):
            client.read_flow_runs(limit=-5)


@pytest.mark.anyio
async def test_async_misuse_fails_before_any_thread_is_used():
    async with get_client() as client:
        with pytest.raises(ValueError, match="flow_run_id 'x' is not a valid id"):
            await client.read_flow_run("x")
        with pytest.raises(TypeError, match="state must be a state name or type"):
            await client.read_flow_runs(state=1.5)


@pytest.mark.anyio
async def test_the_wrong_kind_of_with_says_which_one_to_use():
    with pytest.raises(TypeError, match="use `async with get_client\\(\\) as client:`"), get_client():
        pass
    with pytest.raises(TypeError, match="use `with get_client\\(sync_client=True\\) as client:`"):
        async with get_client(sync_client=True):
            pass
    with pytest.raises(TypeError, match="sync_client must be True or False"):
        get_client(sync_client="yes")


@pytest.mark.anyio
async def test_async_reads_run_off_the_event_loop_thread(home, monkeypatch):
    await pipeline()
    loop_thread = threading.current_thread()
    seen = []
    original = type(home).read_flow_runs

    def spy(self, **kwargs):
        seen.append(threading.current_thread())
        return original(self, **kwargs)

    monkeypatch.setattr(type(home), "read_flow_runs", spy)
    async with get_client() as client:
        assert len(await client.read_flow_runs()) == 1
    assert seen and all(thread is not loop_thread for thread in seen)


def test_runs_from_the_memory_store_are_copies(store):
    state = pipeline(return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        run.name = "changed"
        run.parameters["names"] = None
        again = client.read_flow_run(state.state_details.flow_run_id)
    assert again.name != "changed" and again.parameters["names"] is not None


def test_another_process_reads_what_a_flow_recorded(tmp_path):
    script = textwrap.dedent("""
        from asyncflow import flow, task

        @task
        def square(x):
            return x * x

        @flow(name="squares")
        def squares():
            return [square(i) for i in range(4)]

        print(squares(return_state=True).state_details.flow_run_id)
    """)
    env = {**os.environ, "ASYNCFLOW_HOME": str(tmp_path)}
    env.pop("ASYNCFLOW_STORE", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    flow_run_id = proc.stdout.strip()
    with isolated_home(tmp_path), get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        assert run.flow_name == "squares" and run.state.is_completed()
        assert [r.parameters for r in client.read_task_runs(flow_run_id=flow_run_id)] == [
            {"x": 0}, {"x": 1}, {"x": 2}, {"x": 3}]
        assert client.read_logs(flow_run_id=flow_run_id)[-1].message == "Finished in state Completed()"


# -- the read API: filters, pages, the change feed, logs since, timelines, counts ------------------
@pytest.fixture(params=["sqlite", "memory"])
def any_home(request, store):
    if request.param == "memory":
        yield store
    else:
        with isolated_home() as sqlite_store:
            yield sqlite_store


def test_the_sync_client_pages_filters_and_reads_the_feed_timelines_and_logs(any_home):
    from asyncflow.client import Change, Page, RunFilter, StateCount, Timeline

    ids = [pipeline(("a", str(i)), return_state=True).state_details.flow_run_id for i in range(5)]
    failed = failing(return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        assert [r.id for r in client.read_flow_runs(limit=3)] == [failed, *reversed(ids)][:3]  # today's list
        page = client.read_flow_runs(flow_name="pipeline", limit=2, cursor=None)
        assert isinstance(page, Page) and [r.id for r in page] == [ids[4], ids[3]]
        page = client.read_flow_runs(flow_name="pipeline", limit=2, cursor=page.next_cursor)
        assert [r.id for r in page] == [ids[2], ids[1]]
        assert [r.id for r in client.read_flow_runs(flow_name="pipeline", cursor=page.next_cursor)] == [ids[0]]
        assert [r.id for r in client.read_flow_runs(filter=RunFilter(states="failed"))] == [failed]  # a list
        assert [r.id for r in client.read_flow_runs(filter=RunFilter(states="completed"), newest_first=False,
                                                    limit=2)] == ids[:2]
        assert [r.id for r in client.read_flow_runs(state="Failed", filter=RunFilter(flow_names="failing"),
                                                    cursor=None)] == [failed]
        with pytest.raises(TypeError, match="flow_name= and the filter's flow_names both say it"):
            client.read_flow_runs(flow_name="pipeline", filter=RunFilter(flow_names="pipeline"))
        with pytest.raises(ValueError, match=r"cursor .* is damaged"):
            client.read_flow_runs(cursor="nope")
        tasks_page = client.read_task_runs(flow_run_id=ids[0], limit=1, cursor=None)
        assert [r.name for r in tasks_page] == ["load-0"] and tasks_page.next_cursor
        assert [r.name for r in client.read_task_runs(flow_run_id=ids[0], cursor=tasks_page.next_cursor)] == ["load-1"]
        assert len(client.read_task_runs(filter=RunFilter(tags="io"))) == 10

        timeline = client.read_timeline(ids[0])
        assert isinstance(timeline, Timeline) and [t.run.name for t in timeline.task_runs] == ["load-0", "load-1"]
        assert [s.name for s in timeline.task_runs[1].states] == ["Pending", "Running", "Completed"]
        changes, last = client.read_changes(0, limit=10_000)
        assert all(isinstance(c, Change) for c in changes) and changes[-1].seq == last
        assert client.read_changes(last) == ([], last)
        assert len(changes) == sum(len(client.read_flow_run_states(r.id)) for r in client.read_flow_runs()) + sum(
            len(client.read_task_run_states(r.id)) for r in client.read_task_runs())
        errors = client.read_logs(flow_run_id=failed, level="ERROR")
        assert errors and all(log.level in ("ERROR", "CRITICAL") for log in errors)
        assert len(client.read_logs(flow_run_id=failed)) > len(errors)
        lines, since = client.read_logs_since(0, flow_run_id=failed, level="error")
        assert [log.message for log in lines] == [log.message for log in errors] and since == lines[-1].seq
        [count] = [c for c in client.count_flow_runs_by_state(bucket_seconds=86400) if c.state_name == "Completed"]
        assert isinstance(count, StateCount) and count.count == 5


@pytest.mark.anyio
async def test_the_async_client_pages_off_the_loop_and_checks_its_arguments_first(any_home):
    from asyncflow.client import Page, RunFilter

    ids = [(await pipeline(("a", str(i)), return_state=True)).state_details.flow_run_id for i in range(3)]
    async with get_client() as client:
        page = await client.read_flow_runs(limit=2, cursor=None)
        assert isinstance(page, Page) and [r.id for r in page] == [ids[2], ids[1]]
        assert [r.id for r in await client.read_flow_runs(cursor=page.next_cursor)] != []  # other limit: same query
        assert [r.name for r in await client.read_task_runs(flow_run_id=ids[0], cursor=None)] == ["load-0", "load-1"]
        timeline = await client.read_timeline(ids[1])
        assert timeline.flow_run.id == ids[1] and len(timeline.task_runs) == 2
        changes, last = await client.read_changes()
        assert changes and last == changes[-1].seq
        lines, _ = await client.read_logs_since(0, flow_run_id=ids[0])
        assert lines and (await client.read_logs(flow_run_id=ids[0], level="INFO")) == lines
        assert sum(c.count for c in await client.count_flow_runs_by_state(RunFilter(flow_names="pipeline"))) == 3
        for bad, error in [(dict(cursor=5), TypeError), (dict(filter="x"), TypeError), (dict(limit=0, cursor=None),
                                                                                          ValueError)]:
            with pytest.raises(error):
                await client.read_flow_runs(**bad)
        with pytest.raises(ValueError, match="since must be a sequence number"):
            await client.read_changes(-1)
        with pytest.raises(ValueError, match="is not a log level"):
            await client.read_logs(flow_run_id=ids[0], level="chatty")


def test_pages_and_timelines_from_the_memory_store_are_copies(store):
    flow_run_id = pipeline(return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        client.read_flow_runs(cursor=None)[0].parameters["names"] = None
        client.read_timeline(flow_run_id).task_runs[0].run.parameters["name"] = None
        assert client.read_flow_run(flow_run_id).parameters["names"] is not None
        assert client.read_task_runs(flow_run_id=flow_run_id)[0].parameters["name"] is not None
