"""The CLI's retention and live commands: `flow-run delete`, `store prune`, `task-run logs` and
`flow-run logs` with `--follow` (a real flow in another process, followed by a real `asyncflow`
process), `flow-run inspect --limit`, and clear errors for bad numbers and empty strings (U7)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from asyncflow import _settings, flow, get_run_logger, task
from asyncflow.cli import main
from asyncflow.testing import isolated_home


@task
def step(i):
    get_run_logger().info("step %s says hello", i)
    return i


@flow
def inner():
    return step(99)


@flow
def etl(n=3):
    inner()
    return [step(i) for i in range(n)]


@pytest.fixture
def home(monkeypatch):
    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_") and name != "ASYNCFLOW_HOME":
            monkeypatch.delenv(name)
    with isolated_home() as store:
        yield store


def run(capsys, *argv):
    capsys.readouterr()  # what the flows printed before
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Terminal(io.StringIO):
    """The stdin of a person at a terminal, who types what it holds."""

    def isatty(self) -> bool:
        return True


# -- flow-run delete -------------------------------------------------------------------------------
def test_flow_run_delete_with_yes_deletes_the_run_its_subflows_and_says_what(home, capsys):
    doomed = etl(return_state=True).state_details.flow_run_id
    spared = etl(return_state=True).state_details.flow_run_id
    code, out, err = run(capsys, "flow-run", "delete", str(doomed)[-8:], "--yes")
    assert code == 0 and err == ""
    assert "Deleted flow run '" in out and f"({doomed}) of flow 'etl'." in out
    assert "Deleted 1 flow run(s) and 1 subflow run(s), 4 task run(s), 18 state(s) and 14 log line(s)" in out
    assert {r.id for r in home.read_flow_runs(flow_name="etl")} == {spared}
    assert len(home.read_flow_runs(flow_name="inner")) == 1 and len(home.read_task_runs()) == 4


def test_flow_run_delete_asks_in_a_terminal_and_deletes_nothing_without_a_yes(home, capsys, monkeypatch):
    run_id = str(etl(return_state=True).state_details.flow_run_id)
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run(capsys, "flow-run", "delete", run_id)
    assert code == 1 and out == ""
    assert "About to delete flow run '" in err and "Completed, with its subflow runs, task runs" in err
    assert "Delete 1 flow run(s) from" in err and "[y/N]" in err and err.endswith("Nothing was deleted.\n")
    assert len(home.read_flow_runs()) == 2
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, _ = run(capsys, "flow-run", "delete", run_id, "--json")
    assert code == 0 and json.loads(out)["counts"]["flow_runs"] == 2 and home.read_flow_runs() == []


def test_flow_run_delete_does_not_ask_when_not_in_a_terminal(home, capsys, monkeypatch):
    run_id = str(etl(return_state=True).state_details.flow_run_id)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a script, a pipe
    code, out, err = run(capsys, "flow-run", "delete", run_id, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert [d["id"] for d in data["deleted"]] == [run_id] and data["deleted"][0]["state"]["name"] == "Completed"
    assert data["counts"] == {"flow_runs": 2, "task_runs": 4, "states": 18, "logs": 14, "flows": 2}


def test_flow_run_delete_with_an_unknown_id_deletes_nothing(home, capsys):
    run_id = str(etl(return_state=True).state_details.flow_run_id)
    code, _, err = run(capsys, "flow-run", "delete", run_id, "0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90", "--yes")
    assert code == 1 and "error: No flow run with id 0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90" in err
    assert len(home.read_flow_runs()) == 2


# -- store prune -----------------------------------------------------------------------------------
def test_store_prune_dry_run_counts_then_prune_deletes_finished_runs(home, capsys):
    etl()
    code, out, _ = run(capsys, "store", "prune", "--older-than", "0", "--dry-run")
    assert code == 0 and out.startswith("Would delete (dry run: nothing was deleted) what finished before ")
    rows = dict(line.split() for line in out.splitlines()[2:])
    assert rows == {"flow_runs": "2", "task_runs": "4", "states": "18", "logs": "14", "flows": "2"}
    assert len(home.read_flow_runs()) == 2
    code, out, _ = run(capsys, "store", "prune", "--older-than", "30d", "--json")
    data = json.loads(out)
    assert code == 0 and data["older_than_seconds"] == 30 * 86400 and set(data["counts"].values()) == {0}
    code, out, _ = run(capsys, "store", "prune", "--older-than", "0s", "--json")
    assert code == 0 and json.loads(out)["counts"]["flow_runs"] == 2 and home.read_flow_runs() == []


def test_store_prune_defaults_to_the_retention_setting_and_needs_an_age_when_it_is_off(home, capsys, monkeypatch):
    etl()
    monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", "12h")
    _settings.reload()
    code, out, _ = run(capsys, "store", "prune", "--json")
    assert code == 0 and json.loads(out)["older_than_seconds"] == 43200 and len(home.read_flow_runs()) == 2
    monkeypatch.setenv("ASYNCFLOW_STORE_RETENTION", "off")
    _settings.reload()
    code, _, err = run(capsys, "store", "prune")
    assert code == 1 and "ASYNCFLOW_STORE_RETENTION is off" in err and "--older-than 30d" in err
    _settings.reload()


# -- logs --------------------------------------------------------------------------------------------
def test_task_run_logs_prints_the_task_runs_own_lines(home, capsys):
    state = etl(return_state=True)
    task_runs = home.read_task_runs(flow_run_id=state.state_details.flow_run_id)
    one = next(t for t in task_runs if t.name == "step-1")
    code, out, _ = run(capsys, "task-run", "logs", str(one.id)[-10:])
    assert code == 0
    assert out.splitlines()[0].endswith("| INFO    | Task run 'step-1' - step 1 says hello")
    assert "step 0" not in out and out.rstrip().endswith("Finished in state Completed()")
    _, out, _ = run(capsys, "task-run", "logs", str(one.id), "--json")
    assert [line["message"] for line in json.loads(out)] == ["step 1 says hello", "Finished in state Completed()"]
    outside = step(7, return_state=True)  # a task run outside any flow: its lines are found too
    home.flush()
    _, out, _ = run(capsys, "task-run", "logs", str(outside.state_details.task_run_id))
    assert "Task run 'step-" in out and "step 7 says hello" in out


def test_flow_run_inspect_limit_shows_that_many_task_runs_and_counts_them_all(home, capsys):
    run_id = str(etl(n=5, return_state=True).state_details.flow_run_id)
    code, out, _ = run(capsys, "flow-run", "inspect", run_id, "--limit", "2")
    assert code == 0 and "task runs:  5 (5 Completed)" in out
    table = out.split("TASK RUN")[1].splitlines()[1:]
    assert [line.split()[0] for line in table[:2]] == ["step-0", "step-1"]
    assert "(the first 2 of 5 task runs; --limit 0 shows all" in out
    _, out, _ = run(capsys, "flow-run", "inspect", run_id, "--limit", "0", "--json")
    data = json.loads(out)
    assert data["task_run_count"] == 5 and len(data["task_runs"]) == 5


# -- following a live run ------------------------------------------------------------------------------
LIVE_FLOW = """
    import os, sys, time
    from asyncflow import flow, task, get_run_logger

    @task
    def waiting(gate):
        logger = get_run_logger()
        logger.info("first line")
        while not os.path.exists(gate):
            time.sleep(0.01)
        logger.info("second line")
        return 1

    @flow
    def live(gate):
        get_run_logger().info("flow starts")
        return waiting(gate)

    live(sys.argv[1])
"""


def _asyncflow(*argv: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "asyncflow", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture
def live(home, tmp_path):
    """A flow running in another process whose task logs "first line", then waits for the gate file."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIVE_FLOW), str(gate)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not home.read_task_runs():  # a bound on the wait, not an assertion on timing
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the flow did not start within 60 s"
            time.sleep(0.02)
        yield home.read_task_runs()[0], gate
    finally:
        gate.touch()
        proc.wait(timeout=60)


def _read_until(follower: subprocess.Popen[str], text: str) -> list[str]:
    lines = []
    for line in follower.stdout:  # blocks until the follower prints; ends if it exits
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"the follower exited before printing {text!r}: {lines} {follower.stderr.read()}")


def test_task_run_logs_follow_prints_new_lines_and_ends_when_the_run_ends(live):
    task_run, gate = live
    follower = _asyncflow("task-run", "logs", str(task_run.id), "--follow")
    seen = _read_until(follower, "first line")
    gate.touch()  # the task logs its second line and ends
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    lines = seen + out.splitlines(keepends=True)
    assert [line.split(" - ", 1)[1].strip() for line in lines][:2] == ["first line", "second line"]
    assert all(f"Task run '{task_run.name}'" in line for line in lines) and "flow starts" not in "".join(lines)


def test_flow_run_logs_follow_shows_its_task_runs_lines_and_ends_with_the_flow(live):
    task_run, gate = live
    follower = _asyncflow("flow-run", "logs", str(task_run.flow_run_id)[-8:], "--follow", "--json")
    seen = _read_until(follower, "first line")
    gate.touch()
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    messages = [json.loads(line)["message"] for line in seen + out.splitlines()]
    assert messages[messages.index("first line") + 1] == "second line" and "flow starts" in messages


def test_ctrl_c_stops_following_without_a_traceback(live):
    task_run, _gate = live
    follower = _asyncflow("task-run", "logs", str(task_run.id), "--follow")
    _read_until(follower, "first line")
    follower.send_signal(signal.SIGINT)
    _out, err = follower.communicate(timeout=60)
    assert follower.returncode == 130 and "Traceback" not in err


# -- bad input (U7) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["flow-run", "ls", "--limit", "99999999999999999999"], "argument --limit: expected an integer from 0 to"),
    (["flow-run", "ls", "--limit", "-1"], "argument --limit: expected an integer from 0 to"),
    (["task-run", "ls", "--limit", "1e3"], "argument --limit: expected an integer from 0 to"),
    (["flow-run", "inspect", "abc", "--limit", str(2**63)], "argument --limit: expected an integer from 0 to"),
    (["flow-run", "ls", "--flow-name", ""], "argument --flow-name: expected a non-empty value, got ''"),
    (["flow-run", "ls", "--state", " "], "argument --state: expected a non-empty value"),
    (["task-run", "ls", "--flow-run-id", ""], "argument --flow-run-id: expected a non-empty value"),
    (["task-run", "logs", ""], "argument id: expected a non-empty value"),
    (["flow-run", "delete", "abc", ""], "argument ID: expected a non-empty value"),
    (["cache", "ls", "--task", ""], "argument --task: expected a non-empty value"),
    (["store", "prune", "--older-than=-1d"], "argument --older-than: expected a duration such as 30d, 12h"),
    (["store", "prune", "--older-than", "9" * 400], "argument --older-than: expected a duration"),
])
def test_bad_numbers_and_empty_strings_are_clear_errors(home, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
