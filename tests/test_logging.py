"""Logging: Prefect-shaped console lines, run loggers, print capture scoped to the run, JSON format."""

import json
import re

import pytest

from asyncflow import flow, get_run_logger, task
from asyncflow.exceptions import MissingContextError
from asyncflow.testing import temporary_settings

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING|ERROR|DEBUG) +\| .+ - .+$")


@task
def get_url(url):
    return {"url": url}


@flow(log_prints=True)
def get_repo_info(repo_name="PrefectHQ/prefect"):
    get_url(f"http://localhost/{repo_name}")
    print(f"{repo_name} repository statistics")


def test_console_lines_have_prefects_shape(capsys):
    get_repo_info()
    lines = capsys.readouterr().err.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    text = "\n".join(lines)
    assert re.search(r"\| INFO    \| asyncflow\.engine - "
                     r"Created flow run '[a-z]+-[a-z]+' for flow 'get-repo-info'", text)
    assert re.search(r"Flow run '[a-z]+-[a-z]+' - Created task run 'get_url-0' for task 'get_url'", text)
    assert "Task run 'get_url-0' - Finished in state Completed()" in text
    assert re.search(r"Flow run '[a-z]+-[a-z]+' - PrefectHQ/prefect repository statistics", text)
    assert re.search(r"Flow run '[a-z]+-[a-z]+' - Finished in state Completed\(\)", text)


def test_print_capture_is_scoped_to_runs_with_log_prints(capsys):
    @task
    def quiet():
        print("plain print")

    @task(log_prints=True)
    def loud():
        print("logged print")

    @flow
    def f():
        quiet()
        loud()

    f()
    print("outside any run")
    captured = capsys.readouterr()
    assert "plain print" in captured.out and "outside any run" in captured.out
    assert "logged print" not in captured.out
    assert "Task run 'loud-0' - logged print" in captured.err


def test_tasks_inherit_log_prints_from_their_flow_and_can_opt_out(capsys):
    @task
    def inherits():
        print("inherited")

    @task(log_prints=False)
    def opts_out():
        print("opted out")

    @flow(log_prints=True)
    def f():
        inherits()
        opts_out()

    f()
    captured = capsys.readouterr()
    assert "Task run 'inherits-0' - inherited" in captured.err
    assert "opted out" in captured.out


def test_print_to_another_file_is_not_captured(capsys):
    import sys

    @task(log_prints=True)
    def to_stderr():
        print("direct to stderr", file=sys.stderr)

    to_stderr()
    err = capsys.readouterr().err
    assert "direct to stderr\n" in err and " - direct to stderr" not in err


def test_run_logger_lines_carry_the_run_and_are_stored(capsys, store):
    @task
    def t():
        get_run_logger().info("working on %s", "it")
        return 1

    state = t(return_state=True)
    # (the name's number counts this task's runs outside a flow in the process: 't-0' only the first time)
    name = store.read_task_run(state.state_details.task_run_id).name
    assert name.startswith("t-")
    assert f"Task run '{name}' - working on it" in capsys.readouterr().err
    messages = [log.message for log in store.read_logs(task_run_id=state.state_details.task_run_id)]
    assert "working on it" in messages


def test_get_run_logger_outside_a_run_is_a_clear_error():
    with pytest.raises(MissingContextError, match="outside of a flow or task run"):
        get_run_logger()


def test_failures_are_logged_with_traceback(capsys):
    @task
    def boom():
        raise ValueError("nope")

    boom(return_state=True)
    err = capsys.readouterr().err
    assert "Task run failed with exception: ValueError('nope')" in err
    assert "Traceback (most recent call last)" in err
    assert "Finished in state Failed('Task run encountered an exception ValueError: nope')" in err


def test_logging_level_setting_filters_lines(capsys):
    with temporary_settings(ASYNCFLOW_LOGGING_LEVEL="WARNING"):
        get_url("x")
    assert capsys.readouterr().err == ""


def test_json_log_format(capsys):
    with temporary_settings(ASYNCFLOW_LOGGING_FORMAT="json"):
        get_url("x")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert records[-1]["event"] == "Finished in state Completed()"
    assert records[-1]["level"] == "INFO" and re.fullmatch(r"Task run 'get_url-\d+'", records[-1]["logger"])
    assert "task_run_id" in records[-1]
