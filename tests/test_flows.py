"""Flows: names, versions, run names, parameters, final states, subflows, retries, hooks."""

import uuid

import anyio
import pytest

from asyncflow import flow, tags, task
from asyncflow.exceptions import InvalidNameError
from asyncflow.runtime import flow_run
from asyncflow.states import Cancelled, Completed
from asyncflow.testing import fake_clock, state_names


def test_flow_name_from_function_with_dashes_and_docstring_description():
    @flow
    def get_repo_info():
        """Repository statistics."""

    assert get_repo_info.name == "get-repo-info"
    assert get_repo_info.description == "Repository statistics."
    assert flow(lambda: None).name == "unknown-lambda"


def test_flow_name_cannot_contain_banned_characters():
    with pytest.raises(InvalidNameError, match=r"contains an invalid character.*Must not contain any of"):
        flow(name="a/b")(lambda: None)


def test_default_version_is_a_hash_of_the_source_file_and_can_be_set():
    @flow
    def f():
        pass

    assert isinstance(f.version, str) and len(f.version) == 32
    assert flow(version="tutorial_02")(lambda: None).version == "tutorial_02"


def test_flow_run_is_recorded_with_parameters_including_defaults(store):
    @flow
    def f(x, y=2):
        return x + y

    state = f(1, return_state=True)
    run = store.read_flow_run(state.state_details.flow_run_id)
    assert run.parameters == {"x": 1, "y": 2}
    assert run.flow_name == "f"
    assert state_names(store, run.id) == ["Pending", "Running", "Completed"]


def test_flow_run_name_template_and_generated_names(store):
    @flow(flow_run_name="run-{x}")
    def named(x):
        return flow_run.name

    assert named("abc") == "run-abc"
    generated = flow(lambda: flow_run.name)()
    adjective, animal = generated.split("-", 1)
    assert adjective and animal


def test_flow_run_name_template_naming_missing_parameter_fails_at_decoration():
    with pytest.raises(ValueError, match="'missing', which is not a parameter"):
        @flow(flow_run_name="run-{missing}")
        def named(x):
            return x


def test_parameters_are_coerced_to_annotated_types():
    @flow
    def f(x: int, items: list[int]):
        return x, items

    assert f("5", ["2", "3"]) == (5, [2, 3])


def test_invalid_parameters_fail_the_run_without_running_it(store):
    ran = []

    @flow
    def f(x: int):
        ran.append(x)

    state = f("not a number", return_state=True)
    assert state.is_failed() and "Validation of flow parameters failed" in state.message
    assert ran == []
    assert "Running" not in state_names(store, state.state_details.flow_run_id)


def test_validate_parameters_false_passes_values_through():
    @flow(validate_parameters=False)
    def f(x: int):
        return x

    assert f("5") == "5"


def test_flow_returning_a_manual_state_adopts_it():
    @flow
    def f():
        return Cancelled(message="stopped")

    state = f(return_state=True)
    assert state.is_cancelled() and state.message == "stopped"


def test_flow_returning_none_is_completed():
    assert repr(flow(lambda: None)(return_state=True)) == "Completed()"


def test_flow_returning_task_states_aggregates_them():
    @task
    def ok():
        return 1

    @task
    def bad():
        raise ValueError("x")

    @flow
    def f():
        return bad(return_state=True), bad(return_state=True), ok(return_state=True)

    state = f(return_state=True)
    assert repr(state) == "Failed('2/3 states failed.')"

    @flow
    def g():
        return [ok.submit(), ok.submit()]

    assert repr(g(return_state=True)) == "Completed('All states completed.')"
    assert [s.result() for s in g()] == [1, 1]


def test_subflow_runs_are_linked_to_their_parent(store):
    @flow
    def child():
        return flow_run.parent_flow_run_id

    @flow
    def parent():
        return flow_run.id, child()

    parent_id, childs_parent = parent()
    assert childs_parent == parent_id


@pytest.mark.anyio
async def test_subflows_in_every_sync_async_combination():
    @task
    def t():
        return 1

    @task
    async def at():
        return 2

    @flow
    def sync_child():
        return t()

    @flow
    async def async_child():
        return await at()

    @flow
    async def async_parent():
        return await sync_child() + await async_child()

    @flow
    def sync_parent():
        return sync_child() + anyio.run(async_child)

    assert await async_parent() == 3
    assert await anyio.to_thread.run_sync(sync_parent) == 3


@pytest.mark.anyio
async def test_concurrent_async_subflows():
    started = 0
    both = anyio.Event()

    @flow
    async def child():
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        with anyio.fail_after(60):
            await both.wait()
        return 1

    @flow
    async def parent():
        results = []
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                async def run():
                    results.append(await child())
                tg.start_soon(run)
        return sum(results)

    assert await parent() == 2


def test_recursive_subflow():
    @flow
    def countdown(n):
        return 0 if n == 0 else 1 + countdown(n - 1)

    assert countdown(5) == 5


def test_flow_run_tags_come_from_the_context(store):
    @task
    def t():
        from asyncflow.runtime import task_run

        return task_run.tags

    @flow
    def f():
        return flow_run.tags, t()

    with tags("outer"):
        flow_tags, task_tags = f()
    assert flow_tags == ["outer"] and task_tags == ["outer"]


def test_flow_retries_rerun_the_body_and_its_tasks(store):
    calls = []

    @task
    def step():
        calls.append("task")

    @flow(retries=2)
    def flaky():
        step()
        if len(calls) < 3:
            raise RuntimeError("try again")
        return flow_run.run_count

    state = flaky(return_state=True)
    assert state.result() == 3 and calls == ["task"] * 3
    assert state_names(store, state.state_details.flow_run_id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


def test_flow_retry_delay_uses_the_clock():
    attempts = []

    @flow(retries=1, retry_delay_seconds=5)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("once")
        return "ok"

    with fake_clock() as clock:
        assert flaky() == "ok"
    assert clock.slept == [5.0]


def test_flow_hooks_receive_flow_run_and_state():
    seen = []

    def on_completion(flow_obj, run, state):
        seen.append(("completed", flow_obj.name, run.name == flow_run.name, repr(state)))

    def on_failure(flow_obj, run, state):
        seen.append(("failed", state.message))

    def broken_hook(flow_obj, run, state):
        raise RuntimeError("hook bug")

    @flow(on_completion=[broken_hook, on_completion])
    def good():
        return 1

    @flow(on_failure=[on_failure])
    def bad():
        raise ValueError("x")

    assert good() == 1
    bad(return_state=True)
    assert seen == [("completed", "good", True, "Completed()"),
                    ("failed", "Flow run encountered an exception ValueError: x")]


def test_flow_on_running_hook_runs_even_if_the_flow_fails():
    seen = []

    @flow(on_running=[lambda f, r, s: seen.append(s.name)])
    def bad():
        raise ValueError("x")

    bad(return_state=True)
    assert seen == ["Running"]


@pytest.mark.anyio
async def test_async_flow_timeout_stops_the_body_at_the_next_await(store):
    reached = []

    @flow(timeout_seconds=0.1)
    async def slow():
        await anyio.sleep(10)
        reached.append("after sleep")

    state = await slow(return_state=True)
    assert state.name == "TimedOut" and state.is_failed()
    assert "exceeded timeout of 0.1 second(s)" in state.message
    assert reached == []


def test_with_options_overrides_and_keeps_settings():
    @flow(name="original", retries=2)
    def f():
        return 1

    copy = f.with_options(name="copy", retries=0)
    assert (copy.name, copy.retries, f.retries) == ("copy", 0, 2)
    assert f.with_options().name == "original"


def test_flow_state_details_carry_the_run_id():
    state = flow(lambda: 1)(return_state=True)
    assert isinstance(state.state_details.flow_run_id, uuid.UUID)
    assert state == state and Completed() is not Completed()


@pytest.mark.anyio
async def test_cancelled_flow_ends_cancelled_and_runs_its_cancellation_hook(store):
    seen = []

    @task
    async def forever():
        await anyio.sleep(3600)

    @flow(on_cancellation=[lambda f, r, s: seen.append(s.name)])
    async def f():
        await forever()

    with anyio.move_on_after(0.05):
        await f()
    [flow_run_record] = store.read_flow_runs()
    assert flow_run_record.state.name == "Cancelled" and seen == ["Cancelled"]
    assert [r.state.name for r in store.read_task_runs()] == ["Cancelled"]


def test_crashed_flow_runs_its_crash_hook():
    seen = []

    @flow(on_crashed=[lambda f, r, s: seen.append(s.name)])
    def f():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    assert seen == ["Crashed"]


def test_flow_result_options_are_checked_at_decoration():
    with pytest.raises(ValueError, match="result_serializer must be 'pickle', 'json'"):
        flow(result_serializer="yaml")(lambda: None)
    with pytest.raises(TypeError, match="persist_result must be True, False or None"):
        flow(persist_result="yes")(lambda: None)


@pytest.mark.anyio
async def test_an_awaited_flow_returns_its_result_or_raises_its_error_and_records_failed_not_crashed(db):
    # `await my_flow()` gets the run's result (or its exception) from the run's own coroutine, after the
    # run's final state and records are written; a flow's exception is the run's failure, not a crash
    @flow
    async def ok(x: int) -> int:
        return x + 1

    @flow
    async def fails() -> None:
        raise KeyError("boom")

    assert await ok(1) == 2
    assert await (await ok(2, return_state=True)).aresult() == 3
    with pytest.raises(KeyError, match="boom"):
        await fails()
    runs = {run.flow_name: [] for run in db.read_flow_runs()}
    for run in db.read_flow_runs():
        runs[run.flow_name].append(state_names(db, run.id)[-1])
    assert sorted(runs["ok"]) == ["Completed", "Completed"]
    assert runs["fails"] == ["Failed"]
