"""Settings: defaults < profile file (ASYNCFLOW_HOME/profile.env) < environment; every setting declared
once; bad values fail at start, naming the setting, where the value came from and what it accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncflow import _settings, task
from asyncflow.exceptions import SettingError

PACKAGE = Path(__file__).resolve().parent.parent / "asyncflow"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ASYNCFLOW_HOME and no other ASYNCFLOW_* variable in the environment."""
    import os

    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path))
    _settings.reload()
    yield tmp_path
    _settings.reload()


def test_environment_beats_profile_beats_default(home, monkeypatch):
    assert _settings.TASK_DEFAULT_RETRIES.value() == 0
    assert _settings.TASK_DEFAULT_RETRIES.source() == "default"
    _settings.update_profile({"ASYNCFLOW_TASK_DEFAULT_RETRIES": "3"})
    assert _settings.TASK_DEFAULT_RETRIES.value() == 3
    assert _settings.TASK_DEFAULT_RETRIES.source() == "profile"
    monkeypatch.setenv("ASYNCFLOW_TASK_DEFAULT_RETRIES", "5")
    assert _settings.TASK_DEFAULT_RETRIES.value() == 5
    assert _settings.get_settings().sources["ASYNCFLOW_TASK_DEFAULT_RETRIES"] == "environment"


def test_profile_setting_reaches_decorators(home):
    _settings.update_profile({"ASYNCFLOW_TASK_DEFAULT_RETRIES": "2"})

    @task
    def flaky():
        pass

    assert flaky.retry_policy.retries == 2


def test_profile_file_is_plain_name_value_lines_and_updates_keep_comments(home):
    profile = home / "profile.env"
    profile.write_text("# my settings\n\n  ASYNCFLOW_LOGGING_LEVEL = debug  \n# keep me\n", encoding="utf-8")
    _settings.reload()
    assert _settings.LOGGING_LEVEL.value() == "DEBUG"
    _settings.update_profile({"ASYNCFLOW_LOGGING_LEVEL": "WARNING", "asyncflow_task_default_retries": "1"})
    assert profile.read_text(encoding="utf-8") == (
        "# my settings\n\nASYNCFLOW_LOGGING_LEVEL=WARNING\n# keep me\nASYNCFLOW_TASK_DEFAULT_RETRIES=1\n")
    _settings.update_profile(unset=["ASYNCFLOW_LOGGING_LEVEL"])
    assert "LOGGING_LEVEL" not in profile.read_text(encoding="utf-8")
    assert _settings.LOGGING_LEVEL.value() == "INFO"


def test_profile_changes_by_another_process_are_seen(home, monkeypatch):
    assert _settings.FLOW_DEFAULT_RETRIES.value() == 0
    (home / "profile.env").write_text("ASYNCFLOW_FLOW_DEFAULT_RETRIES=4\n", encoding="utf-8")
    monkeypatch.setattr(_settings, "_PROFILE_RECHECK_SECONDS", 0.0)  # the file is looked at once a second
    assert _settings.FLOW_DEFAULT_RETRIES.value() == 4


def test_bad_profile_value_names_setting_file_and_fix(home):
    (home / "profile.env").write_text("ASYNCFLOW_TASK_DEFAULT_RETRIES=many\n", encoding="utf-8")
    _settings.reload()
    with pytest.raises(SettingError) as info:
        _settings.TASK_DEFAULT_RETRIES.value()
    message = str(info.value)
    assert "ASYNCFLOW_TASK_DEFAULT_RETRIES='many' is invalid: expected an integer >= 0" in message
    assert str(home / "profile.env") in message
    assert "asyncflow config unset ASYNCFLOW_TASK_DEFAULT_RETRIES" in message


def test_a_bad_value_fails_at_the_first_read_of_any_setting(home, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_LOGGING_LEVEL", "loud")
    _settings.reload()
    with pytest.raises(SettingError, match=r"ASYNCFLOW_LOGGING_LEVEL='loud' is invalid: expected one of DEBUG"):
        task(lambda: 0)  # reads only the retry defaults, yet the bad level stops it at definition time


def test_every_bad_setting_is_named_at_once(home, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_LOGGING_LEVEL", "loud")
    monkeypatch.setenv("ASYNCFLOW_STORE", "postgres")
    with pytest.raises(SettingError) as info:
        _settings.get_settings()
    assert "ASYNCFLOW_LOGGING_LEVEL" in str(info.value)
    assert "ASYNCFLOW_STORE='postgres' is invalid: expected one of sqlite, memory" in str(info.value)


def test_malformed_profile_line_names_file_and_line(home):
    (home / "profile.env").write_text("# fine\nASYNCFLOW_LOGGING_LEVEL\n", encoding="utf-8")
    _settings.reload()
    with pytest.raises(SettingError, match=r"profile.env line 2: expected NAME=VALUE, got 'ASYNCFLOW_LOGGING_LEVEL'"):
        _settings.LOGGING_LEVEL.value()


def test_unknown_profile_setting_warns_with_a_suggestion_and_is_ignored(home):
    (home / "profile.env").write_text("ASYNCFLOW_LOGING_LEVEL=DEBUG\n", encoding="utf-8")
    _settings.reload()
    with pytest.warns(UserWarning,
                      match="unknown setting ASYNCFLOW_LOGING_LEVEL \\(did you mean ASYNCFLOW_LOGGING_LEVEL\\?\\)"):
        assert _settings.LOGGING_LEVEL.value() == "INFO"


def test_home_cannot_live_in_the_profile_under_it(home):
    with pytest.raises(SettingError, match="ASYNCFLOW_HOME cannot be set in the profile"):
        _settings.update_profile({"ASYNCFLOW_HOME": "/elsewhere"})
    (home / "profile.env").write_text("ASYNCFLOW_HOME=/elsewhere\n", encoding="utf-8")
    _settings.reload()
    with pytest.raises(SettingError, match="ASYNCFLOW_HOME cannot be set in the profile"):
        _settings.STORE.value()


def test_update_profile_refuses_unknown_names_and_bad_values_and_writes_nothing(home):
    with pytest.raises(SettingError, match=r"Unknown setting 'ASYNCFLOW_STOR'\. Did you mean ASYNCFLOW_STORE"):
        _settings.update_profile({"ASYNCFLOW_STOR": "memory"})
    with pytest.raises(SettingError, match=r"ASYNCFLOW_STORE='mongo' is invalid: expected one of sqlite, memory, or a "
                                           r"PostgreSQL URL \(postgresql://user:password@host:5432/database\)\. "
                                           r"Nothing was written"):
        _settings.update_profile({"ASYNCFLOW_LOGGING_LEVEL": "DEBUG", "ASYNCFLOW_STORE": "mongo"})
    assert not (home / "profile.env").exists()
    with pytest.raises(SettingError, match="Unknown setting 'NOPE'"):
        _settings.update_profile(unset=["NOPE"])


def test_unset_removes_an_unknown_name_left_in_the_file(home):
    (home / "profile.env").write_text("ASYNCFLOW_OLD_THING=1\nASYNCFLOW_STORE=memory\n", encoding="utf-8")
    _settings.update_profile(unset=["ASYNCFLOW_OLD_THING"])
    assert (home / "profile.env").read_text(encoding="utf-8") == "ASYNCFLOW_STORE=memory\n"


def test_defaults_follow_home(home):
    assert _settings.LOCAL_STORAGE_PATH.value() == home / "storage"
    assert _settings.STORE.value() == "sqlite"


def test_describe_shows_value_source_default_and_errors_without_raising(home, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT", "lots")
    entry = _settings.describe("asyncflow_task_runner_thread_limit")
    assert entry["value"] is None and entry["source"] == "environment" and entry["raw"] == "lots"
    assert "expected an integer >= 1" in entry["error"]
    assert entry["default"] == 64 and entry["accepts"] == "an integer >= 1" and entry["help"]


def test_every_declared_setting_has_help_accepts_and_a_valid_default(home):
    for setting in _settings.SETTINGS.values():
        assert setting.name.startswith("ASYNCFLOW_") and setting.help and setting.accepts
        setting.default_value()  # computes


def test_every_setting_the_package_mentions_is_declared():
    mentioned = set()
    for path in PACKAGE.rglob("*.py"):
        mentioned |= set(re.findall(r"\b(ASYNCFLOW_[A-Z_]*[A-Z])\b", path.read_text(encoding="utf-8")))
    undeclared = mentioned - set(_settings.SETTINGS)
    assert not undeclared, f"settings read but not declared in asyncflow/_settings.py: {sorted(undeclared)}"


def test_every_setting_is_documented():
    text = (PACKAGE.parent / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [name for name in _settings.SETTINGS if f"| `{name}` |" not in text]
    assert not missing, f"docs/settings.md does not document {missing}"


def test_a_thread_limit_of_zero_is_rejected_at_the_first_read(home, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT", "0")
    _settings.reload()
    with pytest.raises(SettingError, match=r"ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT='0' is invalid: "
                                           r"expected an integer >= 1"):
        _settings.STORE.value()  # any first read checks every setting
    assert _settings.THREAD_LIMIT.accepts == "an integer >= 1"
    monkeypatch.setenv("ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT", "1")
    _settings.reload()
    assert _settings.THREAD_LIMIT.value() == 1


def test_a_flow_with_a_thread_limit_of_zero_fails_at_start_instead_of_hanging(home, tmp_path):
    """The review's r8: the submitted run never started and the flow waited for it for ever."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        try:
            from asyncflow import flow, task

            @task
            def one():
                return 1

            @flow
            def f():
                return one.submit().result(timeout=60)

            print("result:", f())
        except Exception as exc:
            print("raised:", type(exc).__name__, exc)
    """)
    env = {**os.environ, "ASYNCFLOW_HOME": str(tmp_path), "ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT": "0"}
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the flow hung with ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT=0")
    assert out.stdout.startswith("raised: SettingError Setting ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT='0' is invalid: "
                                 "expected an integer >= 1"), (out.stdout, out.stderr)


def _written(value):
    return ",".join(value) if isinstance(value, tuple) else str(value)


def test_every_setting_reads_back_its_own_default_written_as_text(home, monkeypatch):
    """Each parser returns what it parsed: a setting set to its default's text has the default's value
    (a parser that checked and forgot to return gave None)."""
    checked = []
    for name, setting in _settings.SETTINGS.items():
        default = setting.default_value()
        if default is None or isinstance(default, bool) or name == "ASYNCFLOW_HOME":
            continue
        monkeypatch.setenv(name, _written(default))
        _settings.reload()
        value = setting.value()
        assert value == default or str(value) == str(default), (name, default, value)
        monkeypatch.delenv(name)
        checked.append(name)
    assert "ASYNCFLOW_TASK_WORKER_LEASE_SECONDS" in checked and len(checked) > 10
