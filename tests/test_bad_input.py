"""Bad input: every option of `@task`, `@flow`, `.with_options()`, `.map()` and every setting either gives a
clear ValueError/TypeError at definition (or settings read) time that names the option and the fix, or a
task that works. Never a crash from inside asyncflow at run time, never a hang (the review's §8 run)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import random
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import run_in_thread
from hypothesis import HealthCheck, assume, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from asyncflow import _settings, cache_policies, flow, task
from asyncflow.exceptions import MappingTooLarge, SettingError
from asyncflow.tasks import exponential_backoff, task_input_hash
from asyncflow.testing import fake_clock, isolated_home, temporary_settings

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


class CountingRandom(random.Random):
    """A random source that counts its draws, and stops a sampler that keeps drawing past `limit`."""

    def __init__(self, limit: int) -> None:
        self.draws, self.limit = 0, limit
        super().__init__(20240601)

    def _draw(self) -> None:
        self.draws += 1
        if self.draws > self.limit:
            raise AssertionError(f"the sampler is still drawing after {self.limit} draws (a rejection loop?)")

    def random(self) -> float:
        self._draw()
        return super().random()

    def getrandbits(self, k: int) -> int:
        self._draw()
        return super().getrandbits(k)


@pytest.mark.parametrize("jitter", [1e-300, 1e-12, 5e-324, 1e-6, 0.5, 10])
def test_any_accepted_jitter_draws_a_delay_at_once_within_the_documented_bounds(jitter, monkeypatch):
    """A tiny jitter made the old rejection sampler loop for hours (its window was nearly empty): every delay
    takes at most two draws from the random source, whatever the factor (counted, not timed)."""
    from asyncflow._engine import retry

    policy = _define({"retries": 1, "retry_delay_seconds": 10, "retry_jitter_factor": jitter}).retry_policy
    source = CountingRandom(limit=100_000)
    monkeypatch.setattr(retry, "random", source)
    delays = [policy.delay_for(0) for _ in range(2_000)]
    assert 2_000 <= source.draws <= 2 * 2_000
    assert all(0 < d <= 10 * (1 + jitter) * (1 + 1e-9) for d in delays)


def test_jittered_delays_keep_their_mean_with_the_direct_draw():
    policy = _define({"retries": 1, "retry_delay_seconds": 10, "retry_jitter_factor": 0.5}).retry_policy
    delays = [policy.delay_for(0) for _ in range(20_000)]
    assert 9.7 < sum(delays) / len(delays) < 10.3
    assert min(delays) >= 6.2 and max(delays) <= 15.0


@pytest.mark.parametrize("delay", [86_401, 10**10, 2**63, 10**100, 1e300, [1, 90_000], (5, 10**20)])
def test_retry_delay_above_one_day_is_refused_at_definition_naming_the_limit(delay):
    with pytest.raises(
        ValueError, match=r"`retry_delay_seconds` must be a finite number from 0 to 86400 \(one day\)"
    ):
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
        assert run_in_thread(flaky) == "ok"
    assert len(clock.slept) == 1 and 0 < clock.slept[0] <= 86_400 * 11


def test_flow_retry_delay_has_the_same_bounds():
    with pytest.raises(
        ValueError,
        match=r"flow 'work': `retry_delay_seconds` must be a finite number from 0 to "
        r"86400",
    ):
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


# -- tags ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tags, shown",
    [
        (1, "int"),
        (False, "bool"),
        (0.5, "float"),
        (dt.timedelta(0), "timedelta"),
        (b"ab", "bytes"),
        (bytearray(b"ab"), "bytearray"),
        ({"a": 1}, "dict"),
    ],
)
def test_tags_that_are_not_a_list_of_strings_are_a_type_error_naming_tags(tags, shown):
    with pytest.raises(TypeError, match=rf"`tags` must be a list of strings.*got {shown}"):
        _define({"tags": tags})


@pytest.mark.parametrize("tags", [["a", 1], [0.01], [-1], [None], ["a", b"b"], [["nested"]]])
def test_tags_with_an_item_that_is_not_a_string_name_the_item(tags):
    with pytest.raises(TypeError, match=r"`tags` must be a list of strings.* is not a string"):
        _define({"tags": tags})


def test_tags_from_an_infinite_iterable_are_refused_without_hanging():
    with pytest.raises(ValueError, match=r"`tags`: more than 1000 tags"):
        run_in_thread(_define, {"tags": itertools.repeat("a")})


def test_tags_from_a_generator_or_set_of_strings_are_accepted():
    assert _define({"tags": (t for t in ["b", "a"])}).tags == frozenset({"a", "b"})
    assert _define({"tags": {"x"}}).tags == frozenset({"x"})


def test_tags_with_mixed_types_never_reach_the_engine():
    """They made every call raise `'<' not supported between 'str' and 'int'` from the engine."""
    with pytest.raises(TypeError, match="`tags`"):
        task(tags=["a", 1])(lambda: 1)
    with pytest.raises(TypeError, match="`tags`"):
        task(lambda: 1).with_options(tags=["a", 1])


# -- found by the property tests below -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["task", "flow"])
@pytest.mark.parametrize("option, value", [("version", []), ("version", 2), ("description", 5)])
def test_version_and_description_must_be_strings(kind, option, value):
    """A list as version was accepted, and the SQLite store then left the run out ("type 'list' is not
    supported"): the run vanished from the CLI."""
    with pytest.raises(TypeError, match=f"`{option}` must be a string or None"):
        _define({option: value}, kind)


@pytest.mark.parametrize("kind, option", [("task", "task_run_name"), ("flow", "flow_run_name")])
def test_a_run_name_callable_that_cannot_be_called_so_is_refused_at_definition(kind, option):
    from asyncflow.tasks import task_input_hash

    with pytest.raises(
        TypeError,
        match=f"the `{option}` callable .* must take no arguments, or one argument named `parameters`",
    ):
        _define({option: task_input_hash}, kind)
    assert _define({option: lambda parameters: f"run-{parameters['x']}"}, kind)


@pytest.mark.parametrize("template", ["{}", "{0}"])
def test_a_run_name_template_with_a_positional_field_is_refused(template):
    with pytest.raises(ValueError, match="task_run_name"):
        _define({"task_run_name": template})


def test_a_run_name_template_that_fails_on_a_value_names_the_option():
    work = _define({"task_run_name": "{x[0]}"})
    with pytest.raises(ValueError, match=r"'task_run_name' template '\{x\[0\]\}' cannot be formatted"):
        work(5)


def test_an_iterable_option_whose_iteration_fails_is_a_type_error_naming_it():
    def broken():
        yield "a"
        raise KeyError("boom")

    with pytest.raises(
        TypeError, match="`tags` must be a list of tags; taking them from generator raised KeyError"
    ):
        _define({"tags": broken()})
    with pytest.raises(TypeError, match="`on_completion`"):
        _define({"on_completion": broken()})


def test_hooks_from_an_infinite_iterator_are_refused_without_hanging():
    with pytest.raises(ValueError, match="`on_failure`: more than 1000 hooks"):
        run_in_thread(_define, {"on_failure": itertools.repeat(print)})


# -- task_run_name, result_storage_key, cache_expiration ----------------------------------------------------
@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
@pytest.mark.parametrize("kind, option", [("task", "task_run_name"), ("flow", "flow_run_name")])
def test_an_empty_run_name_or_one_with_a_nul_is_refused(kind, option, name):
    with pytest.raises(ValueError, match=f"`{option}`"):
        _define({option: name}, kind)


@pytest.mark.parametrize(
    "key, fix",
    [
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
    ],
)
def test_result_storage_key_is_checked_against_the_signature_at_definition(key, fix):
    with pytest.raises(ValueError, match=rf"`result_storage_key` .*{fix}"):
        _define({"result_storage_key": key})


@pytest.mark.parametrize(
    "key",
    ["{parameters[x]}.pkl", "r/{parameters[x]}-{flow_run.id}/{task_run.task_name}", "fixed", "{parameters}"],
)
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


# -- the same checks through with_options --------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"retry_jitter_factor": math.inf}, ValueError, "retry_jitter_factor"),
        ({"retry_delay_seconds": 10**10}, ValueError, "retry_delay_seconds"),
        ({"tags": [1]}, TypeError, "tags"),
        ({"task_run_name": ""}, ValueError, "task_run_name"),
        ({"result_storage_key": "{nope}"}, ValueError, "result_storage_key"),
        ({"cache_expiration": dt.timedelta(-1)}, ValueError, "cache_expiration"),
        ({"timeout_seconds": math.inf}, ValueError, "timeout_seconds"),
    ],
)
def test_task_with_options_checks_like_the_decorator(options, error, match):
    with pytest.raises(error, match=match):
        _define({}).with_options(**options)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"retry_delay_seconds": 10**10}, ValueError, "retry_delay_seconds"),
        ({"flow_run_name": ""}, ValueError, "flow_run_name"),
        ({"timeout_seconds": 1e300}, ValueError, "timeout_seconds"),
        ({"retries": -1}, ValueError, "retries"),
    ],
)
def test_flow_with_options_checks_like_the_decorator(options, error, match):
    with pytest.raises(error, match=match):
        _define({}, "flow").with_options(**options)


# -- .map over huge or infinite iterables --------------------------------------------------------------------
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


# -- settings ------------------------------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    "name", ["ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS", "ASYNCFLOW_FLOW_DEFAULT_RETRY_DELAY_SECONDS"]
)
@pytest.mark.parametrize(
    "raw", ["inf", "1e309", "nan", "-inf", "86401", "1e10", "[Infinity]", "[NaN]", "[1, 1e10]"]
)
def test_default_retry_delays_are_checked_as_settings_not_blamed_on_the_decorator(
    home, monkeypatch, name, raw
):
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


@pytest.mark.parametrize(
    "raw, expect",
    [
        ("sqlite:///x.db", "is relative"),
        ("sqlite:///~/x.db", "is relative"),
        ("sqlite:////dev/null/x.db", "'/dev/null' exists and is not a directory"),
        ("sqlite:////tmp", "is a directory"),
        ("sqlite:////" + "x" * 5000 + "/q.db", "too long"),
        ("mysql://x", "expected sqlite:////absolute/path/to/file.db, redis://host:port/db or postgresql://"),
    ],
)
def test_a_sqlite_broker_url_that_cannot_name_a_database_file_is_refused(home, monkeypatch, raw, expect):
    """It gave a raw FileNotFoundError at the first delay()."""
    assert expect in _read_error(monkeypatch, "ASYNCFLOW_BROKER_URL", raw)


def test_a_sqlite_broker_url_with_an_absolute_path_is_accepted(home, monkeypatch, tmp_path):
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", f"sqlite:///{tmp_path}/queue/broker.db")
    _settings.reload()
    assert _settings.BROKER_URL.value() == f"sqlite:///{tmp_path}/queue/broker.db"


@pytest.mark.parametrize(
    "value",
    ["/x\nASYNCFLOW_TASK_DEFAULT_RETRIES=5", "/x\rASYNCFLOW_TASK_DEFAULT_RETRIES=5", "/x\u2028y", "/x\x00y"],
)
def test_config_set_refuses_a_value_with_a_line_break_and_writes_nothing(home, value):
    """W4: the newline wrote a second setting into the profile."""
    with pytest.raises(SettingError, match="line break or NUL"):
        _settings.update_profile({"ASYNCFLOW_LOCAL_STORAGE_PATH": value})
    assert not (home / "profile.env").exists()
    assert _settings.TASK_DEFAULT_RETRIES.value() == 0


def test_config_set_on_the_command_line_refuses_a_newline(home):
    env = {**os.environ, "ASYNCFLOW_HOME": str(home)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncflow",
            "config",
            "set",
            "ASYNCFLOW_LOCAL_STORAGE_PATH=/x\nASYNCFLOW_TASK_DEFAULT_RETRIES=5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "line break" in proc.stderr and "Traceback" not in proc.stderr
    assert not (home / "profile.env").exists()


# -- property tests: any value of any option -----------------------------------------------------------------
# Each example defines a task (or flow) with one to three options drawn from values of every shape, then
# calls it on a fake clock (retry delays take no time) in a thread with a time limit. The outcome must be a
# ValueError/TypeError at definition naming one of the options, or a run that works: Completed (or Cached)
# with its value, Failed with the function's own error, or TimedOut. Never another exception, never a hang.

PROPERTY = hypothesis_settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "150")),
    deadline=dt.timedelta(seconds=10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class _Odd:
    """Iterable, sized and truth-valued, and every one of them raises."""

    def __iter__(self):
        raise KeyError("from a user callable: __iter__")

    def __len__(self):
        raise KeyError("from a user callable: __len__")

    def __bool__(self):
        raise KeyError("from a user callable: __bool__")

    def __repr__(self):
        return "_Odd()"


def _raiser(*args, **kwargs):
    raise KeyError("from a user callable")


_SHAPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(),
    st.floats(min_value=0, max_value=5e-3),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.none()), max_size=4),
    st.tuples(st.text(max_size=3), st.integers()),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.timedeltas(),
    st.builds(itertools.count),
    st.builds(itertools.repeat, st.just("a")),
    st.builds(iter, st.lists(st.text(max_size=2))),
    st.sampled_from(
        [
            Decimal("1.5"),
            Fraction(1, 3),
            complex(1, 1),
            range(10**19),
            range(3),
            Path("/"),
            _Odd(),
            object(),
            print,
            _raiser,
            lambda: None,
            lambda *a, **k: "x",
            lambda *a, **k: 1,
            lambda *a, **k: [1, 2],
            lambda *a, **k: None,
            float("nan"),
            float("inf"),
            -0.0,
            2**63,
            10**100,
            cache_policies.INPUTS,
            cache_policies.NO_CACHE,
            task_input_hash,
            "json",
            "pickle",
            exponential_backoff(10),
            "",
        ]
    ),
)
_SECONDS = st.one_of(
    st.floats(),
    st.integers(min_value=-5, max_value=10**12),
    st.floats(min_value=0, max_value=1e-3),
    st.sampled_from([86_400, 86_401, 365 * 86_400, 4668.0, 1e9, 2**63]),
)
_NAMES = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["{x}", "{y}", "{x}-{x}", "{", "{0}", "{}", "", " ", "a\x00"]),
    st.sampled_from([lambda: "n", lambda: 5, lambda: "", lambda parameters: str(parameters), _raiser]),
)
_TARGETED = {
    "retries": st.one_of(st.integers(min_value=-3, max_value=3), st.integers()),
    "retry_delay_seconds": st.one_of(
        _SECONDS,
        st.lists(_SECONDS, max_size=5),
        st.lists(st.just(1), min_size=49, max_size=52),
        st.builds(exponential_backoff, st.floats()),
        st.builds(exponential_backoff, st.integers(min_value=0)),
    ),
    "retry_jitter_factor": st.one_of(st.floats(), st.floats(min_value=0, max_value=1e-9), st.integers()),
    "timeout_seconds": _SECONDS,
    "tags": st.one_of(
        st.lists(st.text(max_size=4), max_size=4),
        st.lists(st.one_of(st.text(max_size=2), st.integers(), st.floats()), max_size=4),
    ),
    "task_run_name": _NAMES,
    "flow_run_name": _NAMES,
    "name": _NAMES,
    "result_storage_key": st.one_of(
        st.text(alphabet="{}[]x./\\\x00parmets_ylowidn", max_size=20),
        st.sampled_from(
            [
                "{parameters[x]}",
                "{parameters[y]}",
                "{flow_run.id}/{task_run.name}",
                "k/{parameters[x]}",
                "{parameters[x]:>{parameters[x]}}",
                "../up",
                "{missing}",
            ]
        ),
    ),
    "cache_expiration": st.one_of(st.timedeltas(), st.timedeltas(max_value=dt.timedelta(0))),
    "cache_policy": st.sampled_from(
        [
            cache_policies.INPUTS,
            cache_policies.TASK_SOURCE,
            cache_policies.RUN_ID,
            cache_policies.NO_CACHE,
            cache_policies.INPUTS - "x",
            cache_policies.DEFAULT,
        ]
    ),
    "cache_key_fn": st.sampled_from(
        [task_input_hash, lambda c, p: "k", lambda c, p: None, lambda c, p: 5, _raiser]
    ),
    "retry_condition_fn": st.sampled_from([lambda t, r, s: True, lambda t, r, s: False, _raiser]),
    "result_serializer": st.sampled_from(["json", "pickle", "yaml"]),
    "result_storage": st.one_of(st.text(alphabet="ab/._~", max_size=8), st.just(Path("results"))),
    "redact_parameters": st.one_of(
        st.lists(st.sampled_from(["x", "y", ""]), max_size=3), st.just(["x"] * 2000)
    ),
    "on_completion": st.lists(st.sampled_from([lambda *a: None, _raiser, 5]), max_size=2),
    "on_failure": st.lists(st.sampled_from([lambda *a: None, _raiser, 5]), max_size=2),
}
TASK_OPTIONS = sorted(
    [
        "name",
        "description",
        "tags",
        "version",
        "cache_policy",
        "cache_key_fn",
        "cache_expiration",
        "task_run_name",
        "retries",
        "retry_delay_seconds",
        "retry_jitter_factor",
        "retry_condition_fn",
        "persist_result",
        "result_storage",
        "result_serializer",
        "result_storage_key",
        "cache_result_in_memory",
        "timeout_seconds",
        "log_prints",
        "refresh_cache",
        "on_completion",
        "on_failure",
        "on_running",
        "on_commit",
        "on_rollback",
        "redact_parameters",
    ]
)
FLOW_OPTIONS = sorted(
    [
        "name",
        "version",
        "flow_run_name",
        "retries",
        "retry_delay_seconds",
        "task_runner",
        "description",
        "timeout_seconds",
        "validate_parameters",
        "persist_result",
        "result_storage",
        "result_serializer",
        "cache_result_in_memory",
        "log_prints",
        "on_completion",
        "on_failure",
        "on_cancellation",
        "on_crashed",
        "on_running",
        "redact_parameters",
    ]
)


@st.composite
def _options(draw, names):
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    return {
        name: draw(st.one_of(_TARGETED[name], _SHAPES) if name in _TARGETED else _SHAPES) for name in chosen
    }


class FirstAttemptFails(RuntimeError):
    pass


def _make_function():
    attempts = []

    def work(x: int = 1) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise FirstAttemptFails("the first attempt fails, so retries and their delays are used")
        return x

    return work


def _read_back(store, kind: str, state) -> str:
    details = state.state_details
    if kind == "flow":
        return store.read_flow_run(details.flow_run_id).state.name
    return store.read_task_run(details.task_run_id).state.name


def _every_attempt_may_time_out_many_times(options: dict) -> bool:
    """Many retries and a limit shorter than any attempt: the run makes every attempt it was given (as
    it should), so its length is the number drawn (found drawn: 10**18 retries, a 0.1 µs limit)."""
    retries, limit = options.get("retries"), options.get("timeout_seconds")
    numbers = (int, float)
    return (isinstance(retries, int) and not isinstance(retries, bool) and retries > 5
            and isinstance(limit, numbers) and not isinstance(limit, bool) and 0 < limit < 0.05)


def _check(kind: str, options: dict, via_with_options: bool, store) -> None:
    assume(not _every_attempt_may_time_out_many_times(options))
    decorator = task if kind == "task" else flow
    given_options = {"retries": 1, **options}  # one retry unless drawn: delays and jitter are used
    try:
        if via_with_options:
            defined = decorator(_make_function()).with_options(**given_options)
        else:
            defined = decorator(**given_options)(_make_function())
    except (ValueError, TypeError) as exc:
        message = str(exc)
        named = [name for name in options if name in message]
        assert named, f"the error does not name any of the options {sorted(options)}: {exc!r}"
        assert len(options) > 1 or named == list(options), f"{exc!r} does not name {next(iter(options))}"
        event(f"refused at definition: {type(exc).__name__}")
        return
    callables = [name for name, value in options.items() if callable(value) or isinstance(value, list)]
    with fake_clock():
        try:
            state = run_in_thread(lambda: defined(return_state=True))
        except (ValueError, TypeError) as exc:  # a callable option's value is only known when it is called
            assert any(name in str(exc) for name in callables), f"{options!r}: the call raised {exc!r}"
            event("refused at call: a callable option")
            return
        except KeyError as exc:  # raised by a callable given as an option (a run name), handed back as it is
            assert "from a user callable" in str(exc), f"{options!r}: the call raised {exc!r}"
            return
    event(f"ran: {state.name}")
    assert _read_back(store, kind, state) == state.name, f"{options!r}: the store did not record the run"
    if state.is_completed():
        assert state.result() == 1, state
        return
    assert state.is_failed(), f"{options!r} ended {state!r}"
    error = state.result(raise_on_failure=False)
    if state.name == "TimedOut":
        return
    if isinstance(error, FirstAttemptFails) or "from a user callable" in str(error):
        return  # the function's own error, or one that a callable given as an option raised
    assert isinstance(error, (ValueError, TypeError)) and any(name in str(error) for name in callables), (
        f"{options!r}: the run failed with an error from inside asyncflow: {error!r}"
    )


@PROPERTY
@given(options=_options(TASK_OPTIONS), via_with_options=st.booleans())
def test_any_task_options_give_a_clear_error_naming_one_or_a_task_that_works(
    options, via_with_options, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # relative result_storage paths land here
    with isolated_home(tmp_path / "home") as store:  # a real SQLite store: what it records must be storable
        _check("task", options, via_with_options, store)


@PROPERTY
@given(options=_options(FLOW_OPTIONS), via_with_options=st.booleans())
def test_any_flow_options_give_a_clear_error_naming_one_or_a_flow_that_works(
    options, via_with_options, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with isolated_home(tmp_path / "home") as store:
        _check("flow", options, via_with_options, store)


_RAW_SPECIAL = [
    "",
    " ",
    "inf",
    "-inf",
    "nan",
    "1e309",
    "-1",
    "0",
    "1",
    "0.000001",
    "0.5",
    "30",
    "86400",
    "86401",
    "1e10",
    "99999999999999999999999",
    "[1, 2]",
    "[]",
    "[Infinity]",
    "[NaN]",
    "[1, 1e10]",
    str([1] * 51),
    "[[1]]",
    "[" * 5000,
    "true",
    "no",
    "memory",
    "sqlite",
    "all",
    "none",
    "DEBUG",
    "loud",
    "json",
    "console",
    "password,token",
    "bad word",
    "abc",
    "./rel",
    "~/inhome",
    "/dev/null",
    "/dev/null/sub",
    "/" + "x" * 5000,
    "sqlite:///x.db",
    "sqlite:////tmp/nope-asyncflow/x.db",
    "redis://127.0.0.1:1/0",
    "unix:///nope",
]
_RAW = st.one_of(
    st.sampled_from(_RAW_SPECIAL),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    st.floats().map(repr),
    st.integers().map(str),
    st.integers(min_value=-3, max_value=100).map(str),
)


def _settings_outcome(name: str, raw: str, tmp_path: Path) -> str:
    from asyncflow._store import set_store

    raw = raw.replace("{tmp}", str(tmp_path))
    with temporary_settings(**{name: raw}):
        try:
            _settings.get_settings()
        except SettingError as exc:
            assert name in str(exc), f"{name}={raw!r}: the error does not name the setting: {exc}"
            return "refused at read"

        @task
        def one(x: int) -> int:
            return x

        attempts = []

        @task(retries=1)
        def flaky() -> int:
            attempts.append(1)
            if len(attempts) == 1:
                raise FirstAttemptFails("the first attempt fails")
            return 1

        @flow
        def settings_flow() -> int:
            try:
                mapped = sum(f.result() for f in one.map(range(3)))
            except MappingTooLarge:
                assert _settings.MAP_MAX_ITEMS.value() < 3
                mapped = 3
            return flaky() + mapped

        previous = set_store(None)  # the store the settings choose (SQLite under ASYNCFLOW_HOME, or memory)
        try:
            with fake_clock():
                state = run_in_thread(lambda: settings_flow(return_state=True), timeout=30)
        finally:
            store = set_store(previous)
            if store is not None:
                store.close()
        assert state.is_completed() and state.result() == 4, f"{name}={raw!r}: the flow ended {state!r}"
        return "ran"


@PROPERTY
@given(name=st.sampled_from(sorted(_settings.SETTINGS)), raw=_RAW)
def test_any_setting_value_gives_a_setting_error_naming_it_or_flows_that_work(
    name, raw, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # ~ must not reach the real home
    event(_settings_outcome(name, raw, tmp_path))


@pytest.mark.parametrize("name", sorted(_settings.SETTINGS))
def test_every_special_value_of_a_setting_gives_a_setting_error_naming_it_or_flows_that_work(
    name, tmp_path, monkeypatch
):
    """The review's settings run (17 settings x 20 values), each value tried on every setting."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    outcomes = {raw: _settings_outcome(name, raw, tmp_path) for raw in [*_RAW_SPECIAL, "{tmp}/dir", "~/dir"]}
    assert "ran" in outcomes.values(), outcomes


def test_a_path_starting_with_the_home_of_an_unknown_user_is_a_clear_error(home, monkeypatch):
    """`~user` of no user made pathlib raise RuntimeError from inside asyncflow (found by Hypothesis)."""
    with pytest.raises(ValueError, match=r"result_storage: .*'~nouser_x/results' starts with ~ but names no user"):
        @task(result_storage="~nouser_x/results")
        def f(x: int) -> int:
            return x
    assert "starts with ~ but names no user" in _read_error(monkeypatch, "ASYNCFLOW_HOME", "~nouser_x/home")
