"""DaskTaskRunner on a real Dask LocalCluster(processes=True) with two workers (SPEC §7, issue 13).

The scenarios shared with the other remote runners are in `runner_cases.py`; every async test runs on
asyncio and trio. Skipped only where `distributed` (extra `dask`) is not installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import pytest
import runner_cases as cases

if os.environ.get("ASYNCFLOW_REQUIRE_DASK"):  # CI: the test extra installs it, so it must be there
    import distributed
else:
    distributed = pytest.importorskip("distributed", reason="DaskTaskRunner needs the 'dask' extra (distributed)")

from asyncflow import flow
from asyncflow.task_runners import DaskTaskRunner

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local:
        yield local


@pytest.fixture
def runner(cluster):
    return DaskTaskRunner(address=cluster.scheduler_address)


@pytest.mark.anyio
async def test_mapped_sync_and_async_tasks_run_on_the_cluster(runner):
    await cases.mapped_sync_and_async_tasks(runner)


@pytest.mark.anyio
async def test_futures_are_inputs_of_runs_on_the_cluster(runner):
    await cases.futures_as_inputs(runner)


@pytest.mark.anyio
async def test_a_failed_attempt_is_retried_on_a_worker_and_states_are_in_the_store(runner):
    await cases.retries_across_workers(runner)


@pytest.mark.anyio
async def test_log_lines_and_prints_of_a_dask_worker_land_in_the_flow_runs_logs(runner):
    await cases.remote_logs_land_in_the_flow_runs_logs(runner)


@pytest.mark.anyio
async def test_an_unpicklable_argument_fails_the_run_naming_task_parameter_and_type(runner):
    await cases.unpicklable_argument_fails_before_anything_is_sent(runner)


@pytest.mark.anyio
async def test_an_unpicklable_result_fails_the_run_naming_task_and_type(runner):
    await cases.unpicklable_result_is_a_clear_error(runner)


@pytest.mark.anyio
async def test_a_run_past_its_deadline_is_stopped_in_its_worker_and_ends_timed_out(runner, tmp_path):
    @flow(task_runner=runner)
    async def f() -> Any:
        state = await cases.sleeps_past_its_deadline.submit(str(tmp_path / "pid"), return_state=True)
        return state.name, state.message

    name, message = await f()
    assert name == "TimedOut"
    assert "timeout of 1 second(s)" in message and "stopped at the deadline" in message


def test_map_spreads_over_both_workers(cluster):
    pids = cases.remote_pids(DaskTaskRunner(address=cluster.scheduler_address), 40)
    with distributed.Client(cluster.scheduler_address) as client:
        worker_pids = set(client.run(os.getpid).values())
    assert pids <= worker_pids and os.getpid() not in pids


def test_by_default_a_temporary_local_cluster_lives_as_long_as_the_flow_run():
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None})
    seen: dict[str, Any] = {}

    @flow(task_runner=runner)
    def f() -> int:
        from asyncflow._context import current_run

        running = current_run.get().flow_context.task_runner
        seen["cluster"] = running._cluster
        return cases.add.submit(1, 2).result()

    assert f() == 3
    assert seen["cluster"] is not None and seen["cluster"].status.name == "closed"
    assert runner._cluster is None  # the flow's runner is never used itself, only its duplicate


def test_options_follow_prefects_constructor_and_duplicate_keeps_them():
    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={"n_workers": 2},
                            adapt_kwargs={"minimum": 1, "maximum": 2}, client_kwargs={"set_as_default": False})
    copy = runner.duplicate()
    assert copy == runner and copy is not runner and copy.options is runner.options
    assert dict(copy.options.cluster_kwargs) == {"n_workers": 2}
    assert DaskTaskRunner(address="tcp://127.0.0.1:8786").options.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="either `address`"):
        DaskTaskRunner(address="tcp://127.0.0.1:8786", cluster_kwargs={"n_workers": 2})
    with pytest.raises(ValueError, match="asynchronous"):
        DaskTaskRunner(client_kwargs={"asynchronous": True})


def test_without_distributed_the_import_names_the_extra(monkeypatch):
    import asyncflow.task_runners as task_runners

    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "asyncflow._runners.dask", raising=False)
    monkeypatch.delitem(task_runners.__dict__, "DaskTaskRunner", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'asyncflow-anyio\[dask\]'"):
        importlib.import_module("asyncflow.task_runners").DaskTaskRunner  # noqa: B018
    monkeypatch.undo()
    assert task_runners.DaskTaskRunner is DaskTaskRunner


@pytest.mark.anyio
async def test_a_runs_deadline_counts_from_its_start_not_from_its_wait_for_a_worker(runner):
    await cases.a_deadline_counts_from_the_start_not_from_the_queue(runner, 10)
