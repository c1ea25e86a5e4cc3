"""Defining tasks: names, keys, options, with_options, and bad input caught at decoration time."""

import pytest

from asyncflow import Task, task
from asyncflow.exceptions import ReservedArgumentError
from asyncflow.tasks import exponential_backoff


def test_name_defaults_to_function_name_and_description_to_docstring():
    @task
    def get_url(url: str):
        """Fetch a URL."""

    assert isinstance(get_url, Task)
    assert get_url.name == "get_url"
    assert get_url.description == "Fetch a URL."


def test_name_and_description_options():
    @task(name="hello-task", description="This task says hello.")
    def my_task():
        pass

    assert (my_task.name, my_task.description) == ("hello-task", "This task says hello.")


def test_task_key_is_stable_and_depends_on_code():
    def make(body: int):
        if body:
            def work():
                return 1
        else:
            def work():
                return 2
        return task(work)

    assert make(1).task_key.startswith("work-")
    assert make(1).task_key == make(1).task_key
    assert make(1).task_key != make(0).task_key


def test_callable_object_can_be_a_task():
    class Doubler:
        def __call__(self, x):
            return 2 * x

    doubler = task(Doubler())
    assert doubler.name == "Doubler"
    assert doubler(4) == 8


def test_source_code_is_captured():
    @task
    def documented():
        return "body"

    assert "return \"body\"" in documented.source_code


@pytest.mark.parametrize("reserved", ["wait_for", "return_state"])
def test_reserved_parameter_names_are_rejected(reserved):
    namespace: dict = {}
    exec(f"def f({reserved}): pass", namespace)
    with pytest.raises(ReservedArgumentError, match=f"'{reserved}' is a reserved argument name"):
        task(namespace["f"])


def test_decorating_a_non_callable_names_it():
    with pytest.raises(TypeError, match="must decorate a function"):
        task(42)  # type: ignore[call-overload]


def test_hooks_must_be_a_list_of_callables():
    def hook(task, run, state):
        pass

    with pytest.raises(TypeError, match="Expected iterable for 'on_completion'"):
        task(on_completion=hook)(lambda: None)
    with pytest.raises(TypeError, match="Expected callables in 'on_failure'"):
        task(on_failure=[hook, "not callable"])(lambda: None)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"retries": -1}, ValueError, "`retries` must be an integer >= 0"),
        ({"retry_delay_seconds": "5"}, TypeError, "Invalid `retry_delay_seconds`"),
        ({"retry_delay_seconds": [1] * 51}, ValueError, "more than 50 retry delays"),
        ({"retry_delay_seconds": -1}, ValueError, "`retry_delay_seconds` must be a finite number from 0 to"),
        ({"retry_jitter_factor": -0.5}, ValueError, "`retry_jitter_factor` must be a finite number from 0"),
        ({"retry_condition_fn": "yes"}, TypeError, "`retry_condition_fn` must be a callable"),
        ({"timeout_seconds": -1}, ValueError, "`timeout_seconds` must be a finite number from 0 to 31536000"),
        ({"task_run_name": 5}, TypeError, "Expected string or callable for 'task_run_name'"),
        ({"tags": "single"}, TypeError, "use tags=\\['single'\\]"),
    ],
)
def test_bad_options_fail_at_decoration_time(options, error, match):
    with pytest.raises(error, match=match):
        @task(**options)
        def my_task():
            pass


def test_fractional_and_list_delays_are_accepted():
    assert task(retries=1, retry_delay_seconds=1.5)(lambda: 0).retry_policy.delays == (1.5,)
    policy = task(retries=3, retry_delay_seconds=[0.5, 1.1, 2.7])(lambda: 0).retry_policy
    assert policy.delays == (0.5, 1.1, 2.7)


def test_exponential_backoff_delays():
    assert exponential_backoff(backoff_factor=10)(3) == [10, 20, 40]
    policy = task(retries=3, retry_delay_seconds=exponential_backoff(10))(lambda: 0).retry_policy
    assert policy.delays == (10.0, 20.0, 40.0)


def test_with_options_returns_a_new_task_with_overrides():
    @task(name="original", tags=["a"], retries=2, retry_delay_seconds=5)
    def work():
        return 1

    copy = work.with_options(name="copy", tags=["b"], retries=0, retry_delay_seconds=0)
    assert copy is not work
    assert (copy.name, copy.tags, copy.retry_policy.retries) == ("copy", frozenset({"b"}), 0)
    assert (work.name, work.tags, work.retry_policy.retries) == ("original", frozenset({"a"}), 2)
    same = work.with_options()
    assert same.name == "original" and same.tags == work.tags and same.retry_policy == work.retry_policy


def test_with_options_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown option"):
        task(lambda: 0).with_options(colour="red")


def test_hook_lists_accept_decorated_hooks():
    @task
    def work():
        return 1

    @work.on_completion
    def announce(task, run, state):
        pass

    assert list(work.on_completion) == [announce]
