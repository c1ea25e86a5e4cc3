"""Task runs: names, tags, runtime info, retries (fake clock), hooks, async timeouts, crashes."""

import anyio
import anyio.lowlevel
import pytest

from asyncflow import flow, tags, task
from asyncflow.runtime import flow_run, task_run
from asyncflow.testing import fake_clock, state_names, temporary_settings


def test_task_runs_are_named_with_a_counter_per_flow_run():
    @task
    def get_url():
        return task_run.name

    @flow
    def f():
        return [get_url(), get_url(), get_url.submit().result()]

    assert f() == ["get_url-0", "get_url-1", "get_url-2"]


def test_task_run_name_template_uses_parameters_with_defaults():
    @task(task_run_name="{name}-wuz-{where}")
    def visit(name, where="here"):
        return task_run.name

    @flow
    def f():
        return visit("chris")

    assert f() == "chris-wuz-here"


def test_task_run_name_callable_can_read_the_runtime():
    def generate():
        return f"{flow_run.flow_name}-{task_run.task_name}-with-{task_run.parameters['name']}"

    @task(name="my-example-task", task_run_name=generate)
    def my_task(name, limit=100):
        return task_run.name

    @flow
    def my_flow():
        return my_task(name="marvin")

    assert my_flow() == "my-flow-my-example-task-with-marvin"


def test_task_run_name_callable_must_return_a_string():
    @task(task_run_name=lambda: None)
    def t():
        pass

    with pytest.raises(TypeError, match="returned type NoneType but a string is required"):
        t()


def test_task_run_name_template_naming_a_missing_parameter_fails_at_decoration():
    with pytest.raises(ValueError, match="'nope', which is not a parameter"):
        @task(task_run_name="hello-{nope}")
        def t(name):
            pass


def test_task_run_name_template_may_use_attributes_and_items():
    @task(task_run_name="{config[env]}-{user.name}")
    def t(config, user):
        return task_run.name

    class User:
        name = "ada"

    assert t({"env": "prod"}, User()) == "prod-ada"


def test_a_run_name_that_cannot_be_rendered_fails_the_run_instead_of_crashing_it():
    @task(task_run_name="{config[missing]}")
    def t(config):
        return 1

    state = t({}, return_state=True)
    assert state.name == "Failed" and "could not start" in state.message


@pytest.mark.anyio
async def test_sync_hooks_of_async_runs_never_run_on_the_event_loop_thread():
    import threading

    loop_thread = threading.get_ident()
    hook_threads = []

    @task(on_completion=[lambda t, r, s: hook_threads.append(threading.get_ident())])
    async def t():
        return 1

    await t()
    assert hook_threads and hook_threads[0] != loop_thread


def test_cache_policy_must_be_a_cache_policy():
    with pytest.raises(TypeError, match="cache_policy must be a CachePolicy"):
        task(cache_policy=object())(lambda: 0)


def test_task_run_tags_are_decorator_tags_plus_context_tags():
    @task(tags=["static"])
    def t():
        return sorted(task_run.tags)

    @flow
    def f():
        with tags("test"):
            inside = t()
        return inside, t()

    with tags("outer"):
        inside, outside = f()
    assert inside == ["outer", "static", "test"]
    assert outside == ["outer", "static"]


def test_runtime_attributes_are_empty_outside_runs():
    assert (task_run.id, task_run.name, task_run.tags, task_run.parameters, task_run.run_count) == \
        (None, None, [], {}, 0)
    assert flow_run.id is None and flow_run.parameters == {}
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        task_run.colour  # noqa: B018


def test_retries_add_states_to_the_same_run(store):
    attempts = []

    @task(retries=3)
    def flaky():
        attempts.append(task_run.run_count)
        if len(attempts) < 3:
            raise ValueError("not yet")
        return "ok"

    state = flaky(return_state=True)
    assert state.result() == "ok" and attempts == [1, 2, 3]
    assert state_names(store, state.state_details.task_run_id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


def test_retries_exhausted_end_failed_with_every_attempt_recorded(store):
    @task(retries=2)
    def always():
        raise ValueError("bad code")

    state = always(return_state=True)
    assert state.is_failed() and state.message == "Task run encountered an exception ValueError: bad code"
    assert state_names(store, state.state_details.task_run_id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Failed"]


@pytest.mark.parametrize("delays, expected", [(1, [1, 1, 1]), ([1, 2, 3], [1, 2, 3]), ([1, 2], [1, 2, 2])])
def test_retry_delays_follow_the_option_and_the_last_repeats(store, delays, expected):
    @task(retries=3, retry_delay_seconds=delays)
    def always():
        raise ValueError("x")

    with fake_clock() as clock:
        state = always(return_state=True)
    assert clock.slept == expected
    assert state_names(store, state.state_details.task_run_id) == [
        "Pending", "Running"] + ["AwaitingRetry", "Retrying"] * 3 + ["Failed"]


@pytest.mark.anyio
async def test_async_retry_delays_use_the_clock():
    calls = []

    @task(retries=2, retry_delay_seconds=[10, 20])
    async def flaky():
        calls.append(1)
        raise ValueError("x")

    with fake_clock() as clock:
        state = await flaky(return_state=True)
    assert state.is_failed() and clock.slept == [10.0, 20.0] and len(calls) == 3


def test_jittered_delays_stay_within_bounds():
    from asyncflow._engine.retry import clamped_poisson_interval

    samples = [clamped_poisson_interval(10, 0.5) for _ in range(2000)]
    assert min(samples) >= 10 * 0.63 - 0.01 and max(samples) <= 15.0
    assert 9 < sum(samples) / len(samples) < 11


def test_retry_condition_fn_can_stop_retries():
    calls = []

    def only_value_errors(task, run, state):
        try:
            state.result()
        except ValueError:
            return True
        except Exception:
            return False
        return False

    @task(retries=3, retry_condition_fn=only_value_errors)
    def failing(exc):
        calls.append(1)
        raise exc

    failing(KeyError("k"), return_state=True)
    assert len(calls) == 1
    failing(ValueError("v"), return_state=True)
    assert len(calls) == 1 + 4


def test_a_returned_failed_state_is_retried():
    from asyncflow.states import Failed

    calls = []

    @task(retries=1)
    def returns_failed():
        calls.append(1)
        return Failed(message="I give up")

    state = returns_failed(return_state=True)
    assert state.is_failed() and state.message == "I give up" and len(calls) == 2


def test_default_retries_come_from_the_settings():
    with temporary_settings(ASYNCFLOW_TASK_DEFAULT_RETRIES="2"):
        @task
        def always():
            raise ValueError("x")

        @task(retries=0)
        def explicit():
            raise ValueError("x")

    assert always.retry_policy.retries == 2 and explicit.retry_policy.retries == 0


def test_bad_setting_value_names_the_setting_and_what_it_accepts():
    from asyncflow.exceptions import SettingError

    with (temporary_settings(ASYNCFLOW_TASK_DEFAULT_RETRIES="many"),
          pytest.raises(SettingError,
                        match="ASYNCFLOW_TASK_DEFAULT_RETRIES='many' is invalid: expected an integer >= 0")):
        task(lambda: 0)
    with (temporary_settings(ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS="[1, oops]"),
          pytest.raises(SettingError, match="expected a number >= 0 or a JSON list")):
        task(lambda: 0)


def test_task_hooks_run_on_the_right_states_and_failing_hooks_change_nothing():
    seen = []

    def record(name):
        return lambda task, run, state: seen.append((name, run.name, state.name))

    def broken(task, run, state):
        raise RuntimeError("hook bug")

    @task(on_completion=[broken, record("completed")], on_failure=[record("failed")],
          on_running=[record("running")])
    def t(fail):
        if fail:
            raise ValueError("x")
        return 1

    assert t(False) == 1
    t(True, return_state=True)
    assert seen == [("running", "t-0", "Running"), ("completed", "t-0", "Completed"),
                    ("running", "t-1", "Running"), ("failed", "t-1", "Failed")]


@pytest.mark.anyio
async def test_async_hooks_are_awaited():
    seen = []

    async def hook(task, run, state):
        await anyio.lowlevel.checkpoint()
        seen.append(state.name)

    @task(on_completion=[hook])
    async def t():
        return 1

    assert await t() == 1 and seen == ["Completed"]


def test_on_failure_runs_once_after_retries_are_exhausted():
    failures = []

    @task(retries=2, on_failure=[lambda t, r, s: failures.append(r.run_count)])
    def always():
        raise ValueError("x")

    always(return_state=True)
    assert failures == [3]


@pytest.mark.anyio
async def test_async_task_timeout_ends_timed_out_and_can_be_retried(store):
    calls = []

    @task(timeout_seconds=0.05, retries=1)
    async def slow():
        calls.append(1)
        await anyio.sleep(10)

    state = await slow(return_state=True)
    assert state.name == "TimedOut" and state.is_failed()
    assert "exceeded timeout of 0.05 second(s)" in state.message
    assert len(calls) == 2


def test_keyboard_interrupt_crashes_the_run_and_is_reraised(store):
    @task
    def interrupted():
        raise KeyboardInterrupt

    @flow
    def f():
        interrupted()

    with pytest.raises(KeyboardInterrupt):
        f()
    task_runs = store.read_task_runs()
    assert [r.state.name for r in task_runs] == ["Crashed"]
    assert "Execution was aborted" in task_runs[0].state.message


def test_exponential_backoff_delays_in_a_run():
    from asyncflow.tasks import exponential_backoff

    @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))
    def always():
        raise ValueError("x")

    with fake_clock() as clock:
        always(return_state=True)
    assert clock.slept == [10.0, 20.0, 40.0]


def test_jittered_retry_delays_stay_within_the_documented_bounds():
    from asyncflow.tasks import exponential_backoff

    @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=1)
    def always():
        raise ValueError("x")

    with fake_clock() as clock:
        for _ in range(30):
            always(return_state=True)
    for i, delay in enumerate(clock.slept):
        base = [10, 20, 40][i % 3]
        assert base * 0.4 <= delay <= base * 2  # up to delay * (1 + factor), mean kept near delay


def test_async_retry_condition_fn_is_awaited():
    calls = []

    async def never(task, run, state):
        return False

    @task(retries=3, retry_condition_fn=never)
    def failing():
        calls.append(1)
        raise ValueError("x")

    failing(return_state=True)
    assert len(calls) == 1
