"""Run and engine log lines also go through the standard library's `logging` (`asyncflow.*` loggers with
Prefect-like attributes), extra loggers named in a setting are captured into run logs,
`disable_run_logger()`, `get_run_context()` at Prefect's path, and tracebacks in `flow-run logs`."""

from __future__ import annotations

import logging
import threading

import pytest

from asyncflow import _logging, _settings, flow, task
from asyncflow.cli import main
from asyncflow.context import FlowRunContext, TaskRunContext, get_run_context
from asyncflow.exceptions import MissingContextError
from asyncflow.logging import disable_run_logger, get_run_logger
from asyncflow.testing import isolated_home


@pytest.fixture
def sqlite_store():
    with isolated_home() as store:
        yield store


@task
def greet(name):
    get_run_logger().info("hello %s", name)
    return name


@flow
def greeting(name="world"):
    return greet(name)


def _records(caplog, logger):
    return [r for r in caplog.records if r.name == logger]


def test_run_lines_reach_stdlib_run_loggers_with_run_attributes(caplog, sqlite_store):
    state = greeting(return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    [hello] = [r for r in _records(caplog, "asyncflow.task_runs") if r.getMessage() == "hello world"]
    assert hello.levelno == logging.INFO
    assert hello.flow_run_id == flow_run_id and hello.task_run_id
    assert hello.task_run_name == "greet-0" and hello.task_name == "greet" and hello.flow_name == "greeting"
    flow_lines = [r.getMessage() for r in _records(caplog, "asyncflow.flow_runs")]
    assert "Created task run 'greet-0' for task 'greet'" in flow_lines
    assert flow_lines[-1] == "Finished in state Completed()"
    assert all(r.flow_run_id == flow_run_id for r in _records(caplog, "asyncflow.flow_runs"))
    assert any(r.getMessage().startswith("Created flow run") for r in _records(caplog, "asyncflow.engine"))


def test_a_failed_run_s_stdlib_record_carries_the_exception(caplog, sqlite_store):
    @task
    def boom():
        raise KeyError("missing")

    @flow
    def f():
        boom()

    f(return_state=True)
    [failure] = [r for r in _records(caplog, "asyncflow.task_runs") if r.levelno == logging.ERROR
                 and "KeyError" in r.getMessage() and r.exc_info]
    assert failure.exc_info[0] is KeyError
    assert "raise KeyError" in caplog.text


def test_a_handler_on_the_asyncflow_logger_sees_run_lines_and_its_level_filters_them(sqlite_store):
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record)

    handler = Collect()
    std = logging.getLogger("asyncflow")
    std.addHandler(handler)
    saved = std.level
    try:
        greeting("handler")
        assert "hello handler" in [r.getMessage() for r in seen]
        seen.clear()
        std.setLevel(logging.WARNING)
        greeting("quiet")
        assert seen == []
    finally:
        std.removeHandler(handler)
        std.setLevel(saved)


def test_with_no_handler_anywhere_no_record_is_made(monkeypatch, sqlite_store):
    made = []
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a plain script: nothing configured (pytest's own removed)
    original = logging.Logger.makeRecord
    monkeypatch.setattr(logging.Logger, "makeRecord",
                        lambda self, *a, **k: made.append(a) or original(self, *a, **k))
    greeting("nobody")
    assert [a for a in made if a[0].startswith("asyncflow")] == []


def test_disable_run_logger_silences_run_lines_and_lets_fn_run_outside_a_run(caplog, sqlite_store):
    with disable_run_logger():
        assert greet.fn("unit") == "unit"  # get_run_logger() outside a run does not raise here
        greeting("silent")
    assert "hello silent" not in caplog.text
    assert "Finished in state" not in caplog.text
    assert not [log for log in sqlite_store.read_logs() if "silent" in log.message]
    with pytest.raises(MissingContextError):
        greet.fn("outside")
    greeting("loud")
    assert "hello loud" in caplog.text


def test_records_of_extra_loggers_emitted_in_a_run_land_in_its_logs(monkeypatch, sqlite_store, caplog):
    monkeypatch.setenv("ASYNCFLOW_LOGGING_EXTRA_LOGGERS", "thirdparty, other.lib")
    _settings.reload()
    _logging.reset_logging()
    library = logging.getLogger("thirdparty.client")  # a child of a named logger counts too

    @task
    def calls_library():
        library.info("request sent")
        logging.getLogger("other.lib").warning("slow answer")
        logging.getLogger("unrelated").warning("not captured")

    @flow
    def uses_library():
        library.info("flow-level line")
        calls_library()

    try:
        library.info("outside any run")
        state = uses_library(return_state=True)
        sqlite_store.flush()
        flow_run_id = state.state_details.flow_run_id
        logs = sqlite_store.read_logs(flow_run_id=str(flow_run_id))
        by_message = {log.message: log for log in logs}
        assert by_message["request sent"].task_run_id is not None
        assert by_message["request sent"].level == "INFO"
        assert by_message["slow answer"].level == "WARNING"
        assert by_message["flow-level line"].task_run_id is None
        assert "not captured" not in by_message and "outside any run" not in by_message
        assert caplog.text.count("request sent") == 1  # the library's own record, not a copy of it
    finally:
        monkeypatch.delenv("ASYNCFLOW_LOGGING_EXTRA_LOGGERS")
        _settings.reload()
        _logging.reset_logging()
    assert not any(isinstance(h, _logging._RunCapture) for h in logging.getLogger("thirdparty").handlers)


def test_an_invalid_extra_loggers_setting_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_LOGGING_EXTRA_LOGGERS", "good, bad name")
    _settings.reload()
    try:
        with pytest.raises(Exception, match="ASYNCFLOW_LOGGING_EXTRA_LOGGERS"):
            _settings.LOGGING_EXTRA_LOGGERS.value()
    finally:
        monkeypatch.delenv("ASYNCFLOW_LOGGING_EXTRA_LOGGERS")
        _settings.reload()


def test_get_run_context_is_the_innermost_run_and_raises_outside(sqlite_store):
    @task
    def in_task():
        ctx = get_run_context()
        return (type(ctx).__name__, ctx.task_run.name, TaskRunContext.get() is ctx,
                FlowRunContext.get().flow_run.name)

    @flow
    def inner():
        return get_run_context().flow_run.name

    @task
    def runs_a_subflow():
        return inner(), get_run_context().task_run.name

    @flow
    def outer():
        ctx = get_run_context()
        assert TaskRunContext.get() is None and FlowRunContext.get() is ctx
        return ctx.flow_run.name, in_task(), runs_a_subflow()

    name, (kind, task_run_name, same, flow_name), (subflow_name, sub_task) = outer()
    assert kind == "TaskRunContext" and task_run_name == "in_task-0" and same and flow_name == name
    assert subflow_name != name and sub_task == "runs_a_subflow-0"
    with pytest.raises(MissingContextError, match="outside of a flow or task run"):
        get_run_context()
    assert FlowRunContext.get() is None and TaskRunContext.get() is None


def test_get_run_context_in_a_sync_task_in_a_pool_thread(sqlite_store):
    @task
    def where():
        return get_run_context().task_run.name, threading.get_ident()

    @flow
    def f():
        return where.submit().result()

    name, ident = f()
    assert name == "where-0" and ident != threading.get_ident()


@pytest.mark.anyio
async def test_get_run_context_in_async_runs(anyio_backend, sqlite_store):
    @task
    async def atask():
        return get_run_context().task_run.name

    @flow
    async def aflow():
        return get_run_context().flow_run.name, await atask()

    name, task_run_name = await aflow()
    assert name and task_run_name == "atask-0"


def test_flow_run_logs_shows_the_traceback_of_a_failed_run(sqlite_store, capsys):
    @task
    def explode():
        raise ZeroDivisionError("divided by nothing")

    @flow
    def failing():
        explode()

    state = failing(return_state=True)
    assert state.is_failed()
    capsys.readouterr()
    code = main(["flow-run", "logs", str(state.state_details.flow_run_id)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Traceback (most recent call last):" in out
    assert 'raise ZeroDivisionError("divided by nothing")' in out
    assert "ZeroDivisionError: divided by nothing" in out
