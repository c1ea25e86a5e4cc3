"""Bad input: every option of `@task`, `@flow`, `.with_options()`, `.map()` and every setting either gives a
clear ValueError/TypeError at definition (or settings read) time that names the option and the fix, or a
task that works. Never a crash from inside asyncflow at run time, never a hang (the review's §8 run)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncflow import _settings, flow, task
from asyncflow.exceptions import MappingTooLarge, SettingError
from asyncflow.testing import fake_clock, temporary_settings

from helpers import run_in_thread

ROOT = Path(__file__).resolve().parent.parent


def _define(options: dict, kind: str = "task"):
    decorator = task if kind == "task" else flow

    def work(x: int = 1) -> int:
        return x

    return decorator(**options)(work)


# -- retries: delays and jitter ------------------------------------------------------------------------------
@pytest.mark.parametrize("jitter", [math.inf, -math.inf, math.nan, 1e300, 2**1024, 11])
def test_retry_jitter_factor_that_is_not_finite_or_too_large_is_refused_at_definition(jitter):
    with pytest.raises(ValueError, match=r"`retry_jitter_factor` must be a finite number from 0 to 10"):
        _define({"retries": 1, "retry_delay_seconds": 1, "retry_jitter_factor": jitter})


@pytest.mark.parametrize("jitter", ["1", [1], True, object()])
def test_retry_jitter_factor_of_another_type_is_a_type_error_naming_it(jitter):
    with pytest.raises(TypeError, match="`retry_jitter_factor` must be a number"):
        _define({"retries": 1, "retry_jitter_factor": jitter})


@pytest.mark.parametrize("jitter", [1e-300, 1e-12, 5e-324, 1e-6, 0.5, 10])
def test_any_accepted_jitter_draws_a_delay_at_once_within_the_documented_bounds(jitter):
    """A tiny jitter made the old rejection sampler loop for hours (its window was nearly empty)."""
    policy = _define({"retries": 1, "retry_delay_seconds": 10, "retry_jitter_factor": jitter}).retry_policy
    started = time.monotonic()
    delays = [policy.delay_for(0) for _ in range(2_000)]
    assert time.monotonic() - started < 2
    assert all(0 < d <= 10 * (1 + jitter) * (1 + 1e-9) for d in delays)


def test_jittered_delays_keep_their_mean_with_the_direct_draw():
    policy = _define({"retries": 1, "retry_delay_seconds": 10, "retry_jitter_factor": 0.5}).retry_policy
    delays = [policy.delay_for(0) for _ in range(20_000)]
    assert 9.7 < sum(delays) / len(delays) < 10.3
    assert min(delays) >= 6.2 and max(delays) <= 15.0


@pytest.mark.parametrize("delay", [86_401, 10**10, 2**63, 10**100, 1e300, [1, 90_000], (5, 10**20)])
def test_retry_delay_above_one_day_is_refused_at_definition_naming_the_limit(delay):
    with pytest.raises(ValueError, match=r"`retry_delay_seconds` must be a finite number from 0 to 86400 \(one day\)"):
        _define({"retries": 2, "retry_delay_seconds": delay})


@pytest.mark.parametrize("delay", [math.inf, math.nan, -1, [1, math.nan]])
def test_retry_delay_that_is_not_finite_or_negative_is_refused(delay):
    with pytest.raises(ValueError, match=r"`retry_delay_seconds` must be a finite number from 0 to 86400"):
        _define({"retries": 1, "retry_delay_seconds": delay})


def test_a_delay_of_exactly_one_day_is_accepted():
    assert _define({"retries": 1, "retry_delay_seconds": 86_400}).retry_policy.delays == (86_400.0,)


def test_a_retry_delay_callable_that_cannot_be_called_with_the_retries_names_the_option():
    with pytest.raises(TypeError, match=r"`retry_delay_seconds` callable .* raised TypeError"):
        _define({"retries": 1, "retry_delay_seconds": lambda: [1]})


def test_a_retry_delay_callable_that_returns_a_huge_range_is_refused_without_materialising_it():
    with pytest.raises(ValueError, match="more than 50 retry delays"):
        _define({"retries": 1, "retry_delay_seconds": lambda retries: range(10**19)})


def test_an_exponential_backoff_that_overflows_is_refused_at_definition():
    from asyncflow.tasks import exponential_backoff

    with pytest.raises(ValueError, match="`retry_delay_seconds`"):
        _define({"retries": 50, "retry_delay_seconds": exponential_backoff(backoff_factor=10)})


def test_the_largest_accepted_delay_runs_its_retry_on_a_fake_clock():
    attempts = []

    @task(retries=1, retry_delay_seconds=86_400, retry_jitter_factor=10)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    with fake_clock() as clock:
        assert run_in_thread(flaky, timeout=10) == "ok"
    assert len(clock.slept) == 1 and 0 < clock.slept[0] <= 86_400 * 11


def test_flow_retry_delay_has_the_same_bounds():
    with pytest.raises(ValueError, match=r"flow 'work': `retry_delay_seconds` must be a finite number from 0 to "
                                         r"86400"):
        _define({"retries": 1, "retry_delay_seconds": 10**10}, "flow")
    with pytest.raises(ValueError, match="`retry_delay_seconds`"):
        _define({"retries": 1, "retry_delay_seconds": math.nan}, "flow")


# -- timeouts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["task", "flow"])
def test_timeout_seconds_zero_means_no_timeout_as_in_prefect(kind):
    defined = _define({"timeout_seconds": 0}, kind)
    assert defined.timeout_seconds is None
    limited = _define({"timeout_seconds": 5}, kind)
    assert limited.with_options(timeout_seconds=0).timeout_seconds is None


@pytest.mark.parametrize("kind", ["task", "flow"])
@pytest.mark.parametrize("timeout", [365 * 86_400 + 1, 1e300, 2**63])
def test_timeout_above_a_year_is_refused_naming_the_limit(kind, timeout):
    with pytest.raises(ValueError, match=r"`timeout_seconds` must be a finite number from 0 to 31536000"):
        _define({"timeout_seconds": timeout}, kind)


def test_a_timeout_of_a_year_is_accepted_and_the_task_works():
    assert run_in_thread(_define({"timeout_seconds": 365 * 86_400}), 3) == 3


# -- tags ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tags, shown", [
    (1, "int"), (False, "bool"), (0.5, "float"), (dt.timedelta(0), "timedelta"), (b"ab", "bytes"),
    (bytearray(b"ab"), "bytearray"), ({"a": 1}, "dict"),
])
def test_tags_that_are_not_a_list_of_strings_are_a_type_error_naming_tags(tags, shown):
    with pytest.raises(TypeError, match=rf"`tags` must be a list of strings.*got {shown}"):
        _define({"tags": tags})


@pytest.mark.parametrize("tags", [["a", 1], [0.01], [-1], [None], ["a", b"b"], [["nested"]]])
def test_tags_with_an_item_that_is_not_a_string_name_the_item(tags):
    with pytest.raises(TypeError, match=r"`tags` must be a list of strings.* is not a string"):
        _define({"tags": tags})


def test_tags_from_an_infinite_iterable_are_refused_without_hanging():
    with pytest.raises(ValueError, match=r"`tags`: more than 1000 tags"):
        run_in_thread(_define, {"tags": itertools.repeat("a")}, timeout=10)


def test_tags_from_a_generator_or_set_of_strings_are_accepted():
    assert _define({"tags": (t for t in ["b", "a"])}).tags == frozenset({"a", "b"})
    assert _define({"tags": {"x"}}).tags == frozenset({"x"})


def test_tags_with_mixed_types_never_reach_the_engine():
    """They made every call raise `'<' not supported between 'str' and 'int'` from the engine."""
    with pytest.raises(TypeError, match="`tags`"):
        task(tags=["a", 1])(lambda: 1)
    with pytest.raises(TypeError, match="`tags`"):
        task(lambda: 1).with_options(tags=["a", 1])


# -- task_run_name, result_storage_key, cache_expiration ----------------------------------------------------
@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
@pytest.mark.parametrize("kind, option", [("task", "task_run_name"), ("flow", "flow_run_name")])
def test_an_empty_run_name_or_one_with_a_nul_is_refused(kind, option, name):
    with pytest.raises(ValueError, match=f"`{option}`"):
        _define({option: name}, kind)


@pytest.mark.parametrize("key, fix", [
    ("{missing}", "names 'missing'"),
    ("{parameters[y]}", "parameter 'y'"),
    ("{parameters.x}", "parameters\\[x\\]"),
    ("{0}", "names '0'"),
    ("{}", "empty field"),
    ("{", "not a valid format string"),
    ("{flow_run.nope}", "flow_run has no attribute 'nope'"),
    ("{task_run.nope}", "task_run has no attribute 'nope'"),
    ("", "empty"),
    ("   ", "empty"),
    ("a\x00b", "NUL"),
    ("../../etc/x", "'\\.\\.'"),
    ("/", "must name a file"),
])
def test_result_storage_key_is_checked_against_the_signature_at_definition(key, fix):
    with pytest.raises(ValueError, match=rf"`result_storage_key` .*{fix}"):
        _define({"result_storage_key": key})


@pytest.mark.parametrize("key", ["{parameters[x]}.pkl", "r/{parameters[x]}-{flow_run.id}/{task_run.task_name}",
                                 "fixed", "{parameters}"])
def test_valid_result_storage_keys_are_accepted_and_used(key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = _define({"result_storage_key": key})
    assert run_in_thread(work, 7) == 7


def test_a_result_storage_key_on_a_function_with_kwargs_may_name_any_parameter():
    @task(result_storage_key="{parameters[anything]}")
    def work(**kwargs):
        return 1

    assert work.caching.storage_key == "{parameters[anything]}"


def test_negative_cache_expiration_is_refused():
    with pytest.raises(ValueError, match=r"`cache_expiration` must not be negative"):
        _define({"cache_expiration": dt.timedelta(seconds=-5)})
    assert _define({"cache_expiration": dt.timedelta(0)}).caching.expiration == dt.timedelta(0)


# -- the same checks through with_options ----------------------------------------------------------------------
@pytest.mark.parametrize("options, error, match", [
    ({"retry_jitter_factor": math.inf}, ValueError, "retry_jitter_factor"),
    ({"retry_delay_seconds": 10**10}, ValueError, "retry_delay_seconds"),
    ({"tags": [1]}, TypeError, "tags"),
    ({"task_run_name": ""}, ValueError, "task_run_name"),
    ({"result_storage_key": "{nope}"}, ValueError, "result_storage_key"),
    ({"cache_expiration": dt.timedelta(-1)}, ValueError, "cache_expiration"),
    ({"timeout_seconds": math.inf}, ValueError, "timeout_seconds"),
])
def test_task_with_options_checks_like_the_decorator(options, error, match):
    with pytest.raises(error, match=match):
        _define({}).with_options(**options)


@pytest.mark.parametrize("options, error, match", [
    ({"retry_delay_seconds": 10**10}, ValueError, "retry_delay_seconds"),
    ({"flow_run_name": ""}, ValueError, "flow_run_name"),
    ({"timeout_seconds": 1e300}, ValueError, "timeout_seconds"),
    ({"retries": -1}, ValueError, "retries"),
])
def test_flow_with_options_checks_like_the_decorator(options, error, match):
    with pytest.raises(error, match=match):
        _define({}, "flow").with_options(**options)


# -- .map over huge or infinite iterables ------------------------------------------------------------------------
def _map_in_flow(iterable, **settings):
    @task
    def one(x):
        return x

    @flow
    def mapper():
        return len(one.map(iterable))

    with temporary_settings(**settings):
        return run_in_thread(mapper, timeout=60)


def test_map_over_an_infinite_iterable_is_refused_naming_the_cap_and_the_setting():
    with pytest.raises(MappingTooLarge, match=r"more than 1000000 items.*ASYNCFLOW_MAP_MAX_ITEMS"):
        _map_in_flow(itertools.count())


def test_map_consumes_at_most_the_cap_plus_one_item():
    taken = []

    def counting():
        for i in itertools.count():
            taken.append(i)
            yield i

    with pytest.raises(MappingTooLarge, match="more than 5 items"):
        _map_in_flow(counting(), ASYNCFLOW_MAP_MAX_ITEMS="5")
    assert len(taken) == 6


def test_map_over_a_huge_range_is_refused_without_materialising_it():
    with pytest.raises(MappingTooLarge, match="more than 1000000 items"):
        _map_in_flow(range(10**19))


def test_map_up_to_the_cap_works_and_the_error_is_a_value_error():
    assert _map_in_flow(range(5), ASYNCFLOW_MAP_MAX_ITEMS="5") == 5
    assert issubclass(MappingTooLarge, ValueError)


# -- settings ----------------------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ASYNCFLOW_HOME and no other ASYNCFLOW_* variable in the environment."""
    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path / "home"))
    _settings.reload()
    yield tmp_path / "home"
    _settings.reload()


def _read_error(monkeypatch, name: str, raw: str) -> str:
    monkeypatch.setenv(name, raw)
    _settings.reload()
    with pytest.raises(SettingError) as caught:
        _settings.get_settings()
    message = str(caught.value)
    assert name in message
    return message


@pytest.mark.parametrize("name", ["ASYNCFLOW_HOME", "ASYNCFLOW_LOCAL_STORAGE_PATH"])
@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "./x", "redis://host/0", "sqlite:///x.db"])
def test_a_relative_home_or_storage_path_is_refused_naming_the_fix(home, monkeypatch, name, raw):
    message = _read_error(monkeypatch, name, raw)
    assert "absolute" in message and "current directory" in message


@pytest.mark.parametrize("name", ["ASYNCFLOW_HOME", "ASYNCFLOW_LOCAL_STORAGE_PATH"])
def test_a_home_relative_path_with_a_tilde_is_accepted(home, monkeypatch, name):
    monkeypatch.setenv(name, "~/somewhere")
    _settings.reload()
    assert _settings.SETTINGS[name].value() == Path.home() / "somewhere"


@pytest.mark.parametrize("name", ["ASYNCFLOW_HOME", "ASYNCFLOW_LOCAL_STORAGE_PATH"])
@pytest.mark.parametrize("make", [lambda tmp: "/" + "x" * 5000, lambda tmp: str(tmp / ("y" * 300))])
def test_paths_too_long_for_the_system_are_refused_at_read_time(home, monkeypatch, tmp_path, name, make):
    assert "too long" in _read_error(monkeypatch, name, make(tmp_path))


@pytest.mark.parametrize("raw", ["/dev/null", "/dev/null/sub"])
def test_a_storage_path_under_a_file_is_refused_at_read_time(home, monkeypatch, raw):
    """It gave a raw FileExistsError at the first persisted result. (An ASYNCFLOW_HOME that cannot be a
    directory is the store's business: it falls back to memory with a warning, see test_store_faults.)"""
    message = _read_error(monkeypatch, "ASYNCFLOW_LOCAL_STORAGE_PATH", raw)
    assert "'/dev/null' exists and is not a directory" in message


@pytest.mark.parametrize("name", ["ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS",
                                  "ASYNCFLOW_FLOW_DEFAULT_RETRY_DELAY_SECONDS"])
@pytest.mark.parametrize("raw", ["inf", "1e309", "nan", "-inf", "86401", "1e10", "[Infinity]", "[NaN]", "[1, 1e10]"])
def test_default_retry_delays_are_checked_as_settings_not_blamed_on_the_decorator(home, monkeypatch, name, raw):
    if name.startswith("ASYNCFLOW_FLOW") and raw.startswith("["):
        raw = raw.strip("[]").split(",")[-1]
    message = _read_error(monkeypatch, name, raw)
    assert "86400" in message and "`retry_delay_seconds`" not in message


def test_a_default_retry_delay_list_longer_than_fifty_is_refused(home, monkeypatch):
    message = _read_error(monkeypatch, "ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS", str([1] * 51))
    assert "at most 50" in message


@pytest.mark.parametrize("raw", ["0.000001", "0", "0.5", "86401", "1e300"])
def test_a_lease_that_would_redeliver_at_once_or_never_is_refused(home, monkeypatch, raw):
    message = _read_error(monkeypatch, "ASYNCFLOW_TASK_WORKER_LEASE_SECONDS", raw)
    assert "from 1 to 86400" in message


@pytest.mark.parametrize("raw", ["1e300", "86401"])
def test_a_flush_timeout_beyond_a_day_is_refused(home, monkeypatch, raw):
    assert "86400" in _read_error(monkeypatch, "ASYNCFLOW_STORE_FLUSH_TIMEOUT_SECONDS", raw)


@pytest.mark.parametrize("raw", ["0", "-1", "x", "1e3"])
def test_the_map_cap_setting_is_an_integer_of_at_least_one(home, monkeypatch, raw):
    assert "integer >= 1" in _read_error(monkeypatch, "ASYNCFLOW_MAP_MAX_ITEMS", raw)


@pytest.mark.parametrize("value", ["/x\nASYNCFLOW_TASK_DEFAULT_RETRIES=5", "/x\rASYNCFLOW_TASK_DEFAULT_RETRIES=5",
                                   "/x\u2028y", "/x\x00y"])
def test_config_set_refuses_a_value_with_a_line_break_and_writes_nothing(home, value):
    """W4: the newline wrote a second setting into the profile."""
    with pytest.raises(SettingError, match="line break or NUL"):
        _settings.update_profile({"ASYNCFLOW_LOCAL_STORAGE_PATH": value})
    assert not (home / "profile.env").exists()
    assert _settings.TASK_DEFAULT_RETRIES.value() == 0


def test_config_set_on_the_command_line_refuses_a_newline(home):
    env = {**os.environ, "ASYNCFLOW_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "asyncflow", "config", "set",
         "ASYNCFLOW_LOCAL_STORAGE_PATH=/x\nASYNCFLOW_TASK_DEFAULT_RETRIES=5"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "line break" in proc.stderr and "Traceback" not in proc.stderr
    assert not (home / "profile.env").exists()
