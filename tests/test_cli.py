"""The `asyncflow` command: runs, states and logs for people (tables) and scripts (--json), settings,
cached results, and clear errors (exit status 1) for unknown ids and missing stores.

Most commands are called in-process through `main(argv)` (fast); the console script and
`python -m asyncflow` are checked once each in a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest

from asyncflow import _settings, flow, task
from asyncflow.cli import main
from asyncflow.tasks import task_input_hash
from asyncflow.testing import isolated_home


@task(retries=1)
def step(i):
    if i == 1 and not step.__dict__.setdefault("failed_once", False):
        step.__dict__["failed_once"] = True
        raise ValueError("flaky once")
    return i


@flow
def etl(n=3):
    return [step(i) for i in range(n)]


@flow
def broken():
    raise RuntimeError("broken on purpose")


@pytest.fixture
def home(monkeypatch):
    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_") and name != "ASYNCFLOW_HOME":
            monkeypatch.delenv(name)
    step.__dict__["failed_once"] = False  # step-1 fails once in every test
    with isolated_home() as store:
        yield store


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_flow_run_ls_lists_newest_first_with_filters(home, capsys):
    ok = etl(return_state=True)
    bad = broken(return_state=True)
    code, out, _ = run(capsys, "flow-run", "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "FLOW", "NAME", "STATE", "STARTED", "DURATION"]
    assert str(bad.state_details.flow_run_id) in lines[1] and "Failed" in lines[1]
    assert str(ok.state_details.flow_run_id) in lines[2] and "Completed" in lines[2]
    _, out, _ = run(capsys, "flow-run", "ls", "--state", "completed")
    assert "etl" in out and "broken" not in out
    _, out, _ = run(capsys, "flow-run", "ls", "--flow-name", "broken", "--json")
    [record] = json.loads(out)
    assert record["flow_name"] == "broken" and record["state"]["type"] == "FAILED"
    assert "broken on purpose" in record["state"]["message"]
    _, out, _ = run(capsys, "flow-run", "ls", "--limit", "1", "--json")
    assert len(json.loads(out)) == 1
    _, out, _ = run(capsys, "flow-run", "ls", "--flow-name", "nothing")
    assert out.strip() == "No flow runs match these filters."


def test_flow_run_inspect_shows_details_history_and_task_runs(home, capsys):
    state = etl(return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    code, out, _ = run(capsys, "flow-run", "inspect", flow_run_id[-8:])  # its last characters are enough
    assert code == 0
    assert f"({flow_run_id})" in out.splitlines()[0] and "state:" in out and "Completed" in out
    assert "parameters: n=3" in out and "task runs:  3 (3 Completed)" in out
    assert "State history:" in out and "Pending" in out and "Running" in out
    assert "step-0" in out and "step-2" in out
    _, out, _ = run(capsys, "flow-run", "inspect", flow_run_id, "--json")
    data = json.loads(out)
    assert [s["name"] for s in data["states"]] == ["Pending", "Running", "Completed"]
    assert [t["name"] for t in data["task_runs"]] == ["step-0", "step-1", "step-2"]
    assert data["task_runs"][1]["run_count"] == 2


def test_flow_run_logs_prints_the_runs_lines(home, capsys):
    state = etl(return_state=True)
    code, out, _ = run(capsys, "flow-run", "logs", str(state.state_details.flow_run_id))
    assert code == 0
    assert "| INFO    | Flow run '" in out and "Created task run 'step-0' for task 'step'" in out
    assert "| WARNING | Task run 'step-1' - Task run failed with exception: ValueError('flaky once')" in out
    assert out.rstrip().endswith("Finished in state Completed()")
    _, out, _ = run(capsys, "flow-run", "logs", str(state.state_details.flow_run_id), "--json")
    assert {line["level"] for line in json.loads(out)} == {"INFO", "WARNING"}


def test_task_run_ls_and_inspect_with_state_history(home, capsys):
    state = etl(return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    code, out, _ = run(capsys, "task-run", "ls", "--flow-run-id", flow_run_id)
    assert code == 0 and [line.split()[2] for line in out.splitlines()[1:]] == ["step-0", "step-1", "step-2"]
    _, out, _ = run(capsys, "task-run", "ls", "--json")
    runs = json.loads(out)
    assert [r["name"] for r in runs] == ["step-2", "step-1", "step-0"]  # newest first across flow runs
    retried = next(r for r in runs if r["name"] == "step-1")
    code, out, _ = run(capsys, "task-run", "inspect", retried["id"])
    assert code == 0 and "run count:  2" in out and "parameters: i=1" in out
    history = [line.split()[2] for line in out.split("State history:")[1].strip().splitlines()[1:]]
    assert history == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    _, out, _ = run(capsys, "task-run", "inspect", retried["id"], "--json")
    assert [s["name"] for s in json.loads(out)["states"]] == history


def test_unknown_ids_are_a_clear_error(home, capsys):
    etl()
    code, out, err = run(capsys, "flow-run", "inspect", "0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90")
    assert code == 1 and out == ""
    assert "\nerror: No flow run with id 0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90 in the store" in err
    code, _, err = run(capsys, "task-run", "inspect", "zzz")
    assert code == 1
    assert "No task run with an id starting or ending with 'zzz'" in err and "asyncflow task-run ls" in err
    code, _, err = run(capsys, "task-run", "ls", "--flow-run-id", "0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90")
    assert code == 1 and "No flow run with id" in err


def test_an_ambiguous_prefix_asks_for_more_characters(home, capsys):
    for _ in range(40):
        broken(return_state=True)
    first_chars = [run.id.hex[0] for run in home.read_flow_runs()]
    shared = max(set(first_chars), key=first_chars.count)  # 40 ids over 16 hex digits: some share one
    code, _, err = run(capsys, "flow-run", "inspect", shared)
    assert code == 1 and f"{shared!r} is the start of several flow run ids" in err and "give more characters" in err


def test_a_home_without_a_store_is_a_clear_error_and_stays_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("ASYNCFLOW_STORE", raising=False)
    _settings.reload()
    code, _, err = run(capsys, "flow-run", "ls")
    assert code == 1 and f"error: No asyncflow store at {tmp_path / 'fresh' / 'asyncflow.db'} yet" in err
    assert not (tmp_path / "fresh").exists()
    _settings.reload()


def test_the_memory_store_has_nothing_for_the_cli_to_read(home, monkeypatch, capsys):
    monkeypatch.setenv("ASYNCFLOW_STORE", "memory")
    code, _, err = run(capsys, "task-run", "ls")
    assert code == 1 and "ASYNCFLOW_STORE=memory" in err and "asyncflow config unset ASYNCFLOW_STORE" in err


def test_config_set_view_and_unset(home, capsys):
    code, out, _ = run(capsys, "config", "set", "ASYNCFLOW_LOGGING_LEVEL=warning", "asyncflow_task_default_retries=2")
    profile = os.path.join(os.environ["ASYNCFLOW_HOME"], "profile.env")
    assert code == 0 and f"Set ASYNCFLOW_LOGGING_LEVEL='warning' in {profile}." in out
    code, out, _ = run(capsys, "config", "view")
    assert code == 0 and "ASYNCFLOW_LOGGING_LEVEL='WARNING' (from profile)" in out
    assert "ASYNCFLOW_TASK_DEFAULT_RETRIES=2 (from profile)" in out and "ASYNCFLOW_STORE" not in out
    code, out, _ = run(capsys, "config", "view", "--show-defaults")
    assert all(name in out for name in _settings.SETTINGS)
    assert "ASYNCFLOW_STORE='sqlite' (from default)" in out and "accepts: sqlite, memory or postgresql://" in out
    code, out, _ = run(capsys, "config", "view", "--json")
    data = json.loads(out)
    assert data["profile"] == profile and {e["name"] for e in data["settings"]} >= {"ASYNCFLOW_LOGGING_LEVEL"}
    code, out, _ = run(capsys, "config", "unset", "ASYNCFLOW_LOGGING_LEVEL")
    assert code == 0 and "Unset ASYNCFLOW_LOGGING_LEVEL" in out
    assert _settings.LOGGING_LEVEL.value() == "INFO" and _settings.TASK_DEFAULT_RETRIES.value() == 2


def test_config_misuse_names_the_setting_and_the_fix(home, capsys):
    code, _, err = run(capsys, "config", "set", "ASYNCFLOW_TASK_DEFAULT_RETRIES=lots")
    assert code == 1 and "ASYNCFLOW_TASK_DEFAULT_RETRIES='lots' is invalid: expected an integer >= 0" in err
    code, _, err = run(capsys, "config", "set", "ASYNCFLOW_LOGING_LEVEL=DEBUG")
    assert code == 1 and "Unknown setting 'ASYNCFLOW_LOGING_LEVEL'. Did you mean ASYNCFLOW_LOGGING_LEVEL?" in err
    code, _, err = run(capsys, "config", "set", "ASYNCFLOW_STORE")
    assert code == 1 and "'ASYNCFLOW_STORE' is not NAME=VALUE" in err
    code, _, err = run(capsys, "config", "set", "ASYNCFLOW_HOME=/elsewhere")
    assert code == 1 and "ASYNCFLOW_HOME cannot be set in the profile" in err
    code, _, err = run(capsys, "config", "unset", "ASYNCFLOW_STORE")
    assert code == 1 and "ASYNCFLOW_STORE is not set in the profile" in err


def test_config_view_shows_bad_values_and_exits_1(home, monkeypatch, capsys):
    monkeypatch.setenv("ASYNCFLOW_STORE", "postgres")
    code, out, _ = run(capsys, "config", "view")
    assert code == 1 and "ASYNCFLOW_STORE='postgres' (from environment) INVALID:" in out
    assert "expected one of sqlite, memory" in out


def test_cache_ls_and_clear(home, capsys):
    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    def slow_square(x):
        return x * x

    @flow
    def squares():
        return [slow_square(i) for i in range(2)]

    squares()
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0 and out.splitlines()[0].split() == ["KEY", "TASK", "EXPIRES", "SIZE"]
    assert out.count("slow_square") == 2
    _, out, _ = run(capsys, "cache", "ls", "--json")
    assert [r["task"] for r in json.loads(out)] == ["slow_square", "slow_square"]
    _, out, _ = run(capsys, "cache", "clear", "--expired")
    assert out.startswith("Removed 0 expired cache record(s)")
    _, out, _ = run(capsys, "cache", "clear", "--task", "slow_square")
    assert out.startswith("Removed 2 cache record(s) of task 'slow_square'")
    _, out, _ = run(capsys, "cache", "ls")
    assert out.startswith("No cache records under")


def test_cache_clear_needs_to_be_told_what_to_clear(home, capsys):
    with pytest.raises(SystemExit) as info:
        main(["cache", "clear"])
    assert info.value.code == 2
    assert "one of the arguments --all --task --expired is required" in capsys.readouterr().err


def test_version(home, capsys):
    import asyncflow

    code, out, _ = run(capsys, "version")
    assert code == 0 and f"Version:  {asyncflow.__version__}" in out and "Store:    sqlite," in out
    _, out, _ = run(capsys, "version", "--json")
    assert json.loads(out)["home"] == os.environ["ASYNCFLOW_HOME"]


def test_task_worker_serve_hands_over_to_the_task_worker(home):
    with pytest.raises(SystemExit, match="cannot import 'no_such_module_here'"):
        main(["task-worker", "serve", "no_such_module_here:job"])


def test_the_console_script_and_python_m_asyncflow(home):
    etl()
    env = {**os.environ}
    script = shutil.which("asyncflow", path=os.path.dirname(sys.executable))
    commands = [[sys.executable, "-m", "asyncflow", "flow-run", "ls", "--json"]]
    if script is not None:  # installed with the package (pip install -e .)
        commands.append([script, "flow-run", "ls", "--json"])
    for command in commands:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert [r["flow_name"] for r in json.loads(proc.stdout)] == ["etl"]
    proc = subprocess.run([sys.executable, "-m", "asyncflow", "flow-run", "inspect", "nope"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: No flow run with an id starting or ending with 'nope'")


def test_every_command_is_documented_with_an_example():
    import argparse
    from pathlib import Path

    from asyncflow.cli import build_parser

    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    groups = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in groups.choices.items():
        actions = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for action in actions[0].choices if actions else [""]:
            usage = f"asyncflow {name} {action}".strip()
            assert f"$ {usage}" in text, f"docs/cli.md has no example of `{usage}`"


def test_runs_made_together_share_their_first_characters_and_are_named_by_their_last(home, capsys):
    for _ in range(3):
        broken(return_state=True)
    ids = [str(run.id) for run in home.read_flow_runs()]
    assert len({run_id[:6] for run_id in ids}) == 1  # time-ordered ids: made in the same minute
    code, out, _ = run(capsys, "flow-run", "inspect", ids[1][-6:])
    assert code == 0 and ids[1] in out
