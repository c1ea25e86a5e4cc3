"""Settings that turn caching off for every task (Prefect's PREFECT_TASKS_DEFAULT_NO_CACHE and
PREFECT_TASKS_DISABLE_CACHING), read when a task is defined."""

from __future__ import annotations

import pytest

from asyncflow import _settings, flow, task
from asyncflow.cache_policies import DEFAULT, INPUTS, NO_CACHE
from asyncflow.exceptions import SettingError
from asyncflow.runtime import flow_run
from asyncflow.testing import temporary_settings


def _calls_when_called_twice(make_task):
    """Define the task (inside the caller's settings) and call it twice with the same input in a flow."""
    calls = []
    step = make_task(lambda x: calls.append(x) or x)

    @flow
    def twice():
        return [step(1, return_state=True).name, step(1, return_state=True).name]

    return twice(), calls


def test_default_no_cache_gives_tasks_without_a_policy_no_cache():
    with temporary_settings(ASYNCFLOW_TASKS_DEFAULT_NO_CACHE="true"):
        names, calls = _calls_when_called_twice(lambda fn: task(persist_result=True, name="step")(fn))
        assert task(lambda: None).cache_policy is NO_CACHE
    assert names == ["Completed", "Completed"] and calls == [1, 1]


@pytest.mark.parametrize("options", [{"cache_policy": INPUTS}, {"cache_key_fn": lambda ctx, p: str(p["x"])}],
                         ids=["cache_policy", "cache_key_fn"])
def test_default_no_cache_leaves_a_policy_or_key_function_the_task_sets(options):
    with temporary_settings(ASYNCFLOW_TASKS_DEFAULT_NO_CACHE="true"):
        names, calls = _calls_when_called_twice(lambda fn: task(name="step", **options)(fn))
    assert names == ["Completed", "Cached"] and calls == [1]


@pytest.mark.parametrize("options", [
    {"persist_result": True},
    {"cache_policy": INPUTS},
    {"cache_policy": DEFAULT, "persist_result": True},
    {"cache_key_fn": lambda ctx, p: str(p["x"])},
    {"result_storage_key": "step-{parameters[x]}"},
], ids=["persist_result", "INPUTS", "DEFAULT", "cache_key_fn", "result_storage_key"])
def test_disable_caching_turns_off_caching_whatever_the_task_sets(options):
    with temporary_settings(ASYNCFLOW_TASKS_DISABLE_CACHING="true"):
        names, calls = _calls_when_called_twice(lambda fn: task(name="step", **options)(fn))
        assert task(**options)(lambda x: x).cache_policy is NO_CACHE
    assert names == ["Completed", "Completed"] and calls == [1, 1]


def test_with_caching_disabled_a_flow_retry_runs_persisted_tasks_again():
    calls = []

    with temporary_settings(ASYNCFLOW_TASKS_DISABLE_CACHING="true"):
        @task(persist_result=True)
        def step():
            calls.append(1)

    @flow(retries=1)
    def pipeline():
        step()
        if flow_run.run_count == 1:
            raise RuntimeError("fail after the task")

    pipeline()
    assert len(calls) == 2


def test_the_settings_apply_to_tasks_defined_while_they_are_set():
    @task(cache_policy=INPUTS)
    def before(x):
        return x

    with temporary_settings(ASYNCFLOW_TASKS_DISABLE_CACHING="true"):
        assert before.cache_policy is INPUTS
        assert before.with_options(name="copy").cache_policy is NO_CACHE  # a copy is defined now


@pytest.mark.parametrize("name", ["ASYNCFLOW_TASKS_DEFAULT_NO_CACHE", "ASYNCFLOW_TASKS_DISABLE_CACHING"])
def test_a_bad_caching_setting_is_refused_naming_it(monkeypatch, name):
    monkeypatch.setenv(name, "sometimes")
    _settings.reload()
    try:
        with pytest.raises(SettingError, match=rf"{name}='sometimes' is invalid: expected one of true/false"):
            _settings.get_settings()
    finally:
        monkeypatch.delenv(name)
        _settings.reload()


def test_tasks_default_persist_result_true_persists_and_caches_tasks_that_do_not_say():
    with temporary_settings(ASYNCFLOW_TASKS_DEFAULT_PERSIST_RESULT="true"):
        names, calls = _calls_when_called_twice(lambda fn: task(name="step")(fn))
        assert task(lambda: None).persist_result is None  # as in Prefect: the task itself did not say
    assert names == ["Completed", "Cached"] and calls == [1]


def test_tasks_default_persist_result_false_overrides_the_flow_but_not_the_task():
    with temporary_settings(ASYNCFLOW_TASKS_DEFAULT_PERSIST_RESULT="false"):
        quiet = task(name="quiet")(lambda x: x)
        loud = task(name="loud", persist_result=True)(lambda x: x)

    @flow(persist_result=True)
    def both():
        return [t(1, return_state=True).name for t in (quiet, quiet, loud, loud)]

    assert both() == ["Completed", "Completed", "Completed", "Cached"]


@pytest.mark.parametrize("name", ["ASYNCFLOW_TASKS_DEFAULT_PERSIST_RESULT"])
def test_a_bad_persist_setting_is_refused_naming_it(monkeypatch, name):
    test_a_bad_caching_setting_is_refused_naming_it(monkeypatch, name)
