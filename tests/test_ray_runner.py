"""RayTaskRunner on a real local Ray instance (SPEC §7, issue 13).

The scenarios shared with the other remote runners are in `runner_cases.py`; every async test runs on
asyncio and trio. One Ray instance serves the module (it takes ~10 s to start on this machine): the
runner connects to it, as it does to any Ray already initialized in the process. Skipped only where
`ray` (extra `ray`) is not installed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import pytest
import runner_cases as cases

if os.environ.get("ASYNCFLOW_REQUIRE_RAY"):  # CI installed it: its tests must run
    import ray
else:
    ray = pytest.importorskip(
        "ray", reason="RayTaskRunner needs the 'ray' extra, not installed here (pip install 'asyncflow-anyio[ray]'; "
                      ".ci/run installs it where a Ray wheel exists for this Python)")

from asyncflow import flow, task
from asyncflow.task_runners import RayTaskRunner

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def runner():
    return RayTaskRunner()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.anyio
async def test_mapped_sync_and_async_tasks_run_as_ray_tasks(runner):
    await cases.mapped_sync_and_async_tasks(runner)


@pytest.mark.anyio
async def test_futures_are_inputs_of_ray_tasks(runner):
    await cases.futures_as_inputs(runner)


@pytest.mark.anyio
async def test_a_failed_attempt_is_retried_on_a_worker_and_states_are_in_the_store(runner):
    await cases.retries_across_workers(runner)


@pytest.mark.anyio
async def test_log_lines_and_prints_of_a_ray_task_land_in_the_flow_runs_logs(runner):
    await cases.remote_logs_land_in_the_flow_runs_logs(runner)


@pytest.mark.anyio
async def test_an_unpicklable_argument_fails_the_run_naming_task_parameter_and_type(runner):
    await cases.unpicklable_argument_fails_before_anything_is_sent(runner)


@pytest.mark.anyio
async def test_an_unpicklable_result_fails_the_run_naming_task_and_type(runner):
    await cases.unpicklable_result_is_a_clear_error(runner)


@pytest.mark.anyio
async def test_a_run_past_its_deadline_is_stopped_in_its_ray_worker(runner, tmp_path):
    @flow(task_runner=runner)
    async def f() -> Any:
        state = await cases.sleeps_past_its_deadline.submit(str(tmp_path / "pid"), return_state=True)
        return state.name, state.message

    name, message = await f()
    assert name == "TimedOut"
    assert "timeout of 1 second(s)" in message and "stopped at the deadline" in message


@task(timeout_seconds=1)
def holds_the_gil(pidfile: str) -> int:
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    return sum(range(10**12))  # C code that never releases the GIL: no thread of the worker can stop it


@pytest.mark.anyio
async def test_a_run_its_worker_cannot_stop_has_the_worker_killed_after_the_grace(runner, tmp_path, monkeypatch):
    from asyncflow._runners import ray as ray_runner

    monkeypatch.setattr(ray_runner, "KILL_GRACE_SECONDS", 3.0)
    pidfile = tmp_path / "pid"

    @flow(task_runner=runner)
    async def f() -> Any:
        state = await holds_the_gil.submit(str(pidfile), return_state=True)
        return state.name, state.message

    name, message = await f()
    assert name == "TimedOut"
    assert "3 s after the deadline" in message and "kills the worker process" in message
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 (Ray reaps the killed worker)
        await anyio.sleep(0.1)
    assert not _alive(pid)


def test_the_runner_takes_the_clusters_cpus_as_its_limit_of_runs_in_flight(runner):
    @flow(task_runner=runner)
    def f() -> int:
        from asyncflow._context import current_run

        return cases.add.submit(1, 1).result() and current_run.get().flow_context.task_runner._cpus

    assert f() == 2  # the module's Ray instance has num_cpus=2


def test_options_follow_prefects_constructor_and_duplicate_keeps_them():
    runner = RayTaskRunner(address="auto", init_kwargs={"num_cpus": 2})
    copy = runner.duplicate()
    assert copy == runner and copy is not runner and dict(copy.options.init_kwargs) == {"num_cpus": 2}
    with pytest.raises(ValueError, match="address"):
        RayTaskRunner(init_kwargs={"address": "auto"})


@pytest.mark.anyio
async def test_a_runs_deadline_counts_from_its_start_not_from_its_wait_for_a_worker(runner):
    await cases.a_deadline_counts_from_the_start_not_from_the_queue(runner, 10)
