"""SIGTERM and SIGHUP (what Docker, systemd and Kubernetes send) end the open runs Crashed, naming the
signal, and the process still ends by the signal; an application's own handler is kept. Real
subprocesses with a real SQLite store in a temporary ASYNCFLOW_HOME, real signals. Also what happens
to runs at interpreter exit (L8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from asyncflow._store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

BOUND = 60.0  # seconds a subprocess may take to start, or to end after the signal (it takes about one)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def start(home: Path, source: str, *args: str) -> subprocess.Popen[str]:
    script = home / "script.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.Popen([sys.executable, str(script), str(home / "ready"), *args], env=env_for(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], home: Path) -> None:
    """Until the script's task is running (it touches the `ready` file)."""
    deadline = time.monotonic() + BOUND
    while not (home / "ready").exists():
        if proc.poll() is not None:
            pytest.fail(f"the script ended before its task ran: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the script's task did not start within {BOUND} s: {proc.communicate()}")
        time.sleep(0.01)


def signal_and_wait(proc: subprocess.Popen[str], signum: int) -> tuple[int, str, str]:
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process did not end within {BOUND} s of the signal: {err}")
    return proc.returncode, out, err


def runs_in(home: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (current state name, message) of every flow run and task run in the home's store."""
    store = SQLiteStore(home / "asyncflow.db", create=False)
    try:
        runs = {r.flow_name: (r.state.name, r.state.message) for r in store.read_flow_runs()}
        runs.update({r.task_name: (r.state.name, r.state.message) for r in store.read_task_runs()})
        return runs
    finally:
        store.close()


SYNC_FLOW = """
    import sys, time
    from pathlib import Path
    from asyncflow import flow, task

    @task
    def work():
        Path(sys.argv[1]).touch()
        time.sleep(3600)

    @flow
    def pipeline():
        work()

    pipeline()
"""

ASYNC_FLOW = """
    import sys
    from pathlib import Path
    import anyio
    from asyncflow import flow, task

    @task
    async def work():
        Path(sys.argv[1]).touch()
        await anyio.sleep(3600)

    @flow
    async def pipeline():
        await work()

    anyio.run(pipeline, backend=sys.argv[2])
"""

SYNC_TASK_ON_A_THREAD_OF_AN_ASYNC_FLOW = """
    import sys, time
    from pathlib import Path
    import anyio
    from asyncflow import flow, task

    @task
    def work():
        Path(sys.argv[1]).touch()
        time.sleep(3600)

    @flow
    async def pipeline():
        await work.submit()

    anyio.run(pipeline, backend=sys.argv[2])
"""


def assert_ended_by(home: Path, signum: int, returncode: int, err: str) -> None:
    name = signal.Signals(signum).name
    assert returncode == -signum, err
    message = f"The process received {name} while the run was still open."
    assert runs_in(home) == {"pipeline": ("Crashed", message), "work": ("Crashed", message)}, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_a_sync_flow_mid_task_ends_its_runs_crashed_and_the_process_by_the_signal(tmp_path, signum):
    proc = start(tmp_path, SYNC_FLOW)
    wait_ready(proc, tmp_path)
    returncode, _, err = signal_and_wait(proc, signum)
    assert_ended_by(tmp_path, signum, returncode, err)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_an_async_flow_mid_task_ends_its_runs_crashed_and_the_process_by_the_signal(
        tmp_path, signum, backend):
    proc = start(tmp_path, ASYNC_FLOW, backend)
    wait_ready(proc, tmp_path)
    returncode, _, err = signal_and_wait(proc, signum)
    assert_ended_by(tmp_path, signum, returncode, err)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_ends_a_sync_task_on_a_pool_thread_of_an_async_flow_crashed(tmp_path, backend):
    proc = start(tmp_path, SYNC_TASK_ON_A_THREAD_OF_AN_ASYNC_FLOW, backend)
    wait_ready(proc, tmp_path)
    returncode, _, err = signal_and_wait(proc, signal.SIGTERM)
    assert_ended_by(tmp_path, signal.SIGTERM, returncode, err)


CAUGHT_BY_ANOTHER_THREAD = """
    import signal, sys, threading, time
    from pathlib import Path
    from asyncflow import flow, task

    def deliver_to_this_thread():
        # wait until the main thread sleeps in the task, then take SIGTERM on this thread: Python only
        # notes it here, as when the kernel picks another thread or the signal lands just before the
        # main thread enters a blocking call (the race a loaded machine hits)
        main = threading.main_thread().ident
        while sys._current_frames()[main].f_code.co_name != "work":
            time.sleep(0.01)
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    @task
    def work():
        Path(sys.argv[1]).touch()
        time.sleep(3600)

    @flow
    def pipeline():
        threading.Thread(target=deliver_to_this_thread, daemon=True).start()
        work()

    pipeline()
"""

STUCK_IN_C = """
    import sqlite3, sys, threading
    from pathlib import Path
    from asyncflow import flow, task

    locked = Path(sys.argv[1]).with_name("locked.db")
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    @task
    def work():
        waiter = sqlite3.connect(locked, timeout=3600, isolation_level=None)
        threading.Timer(0.2, Path(sys.argv[1]).touch).start()
        waiter.execute("BEGIN EXCLUSIVE")  # SQLite's busy wait: C code that never returns to Python

    @flow
    def pipeline():
        work()

    pipeline()
"""


def test_a_signal_caught_on_another_thread_still_ends_a_sleeping_sync_flow_by_the_signal(tmp_path):
    proc = start(tmp_path, CAUGHT_BY_ANOTHER_THREAD)
    try:
        _, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the process did not end within {BOUND} s of the signal: {err}")
    assert_ended_by(tmp_path, signal.SIGTERM, proc.returncode, err)


def test_sigterm_ends_a_flow_whose_main_thread_is_stuck_in_c_code_that_never_returns_to_python(tmp_path):
    proc = start(tmp_path, STUCK_IN_C)
    wait_ready(proc, tmp_path)
    returncode, _, err = signal_and_wait(proc, signal.SIGTERM)
    assert_ended_by(tmp_path, signal.SIGTERM, returncode, err)


def run_script(home: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = home / "script.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.run([sys.executable, "-W", "error", str(script)], env=env_for(home), capture_output=True,
                          text=True, timeout=BOUND)


TRIO_AFTER_A_FLOW = """
    import json, anyio
    from asyncflow import flow

    @flow
    def first():
        return 1

    @flow
    async def later():
        return 2

    print(json.dumps([first(), anyio.run(later, backend="trio"), anyio.run(later, backend="asyncio")]))
"""

TRIO_IN_A_TASK = """
    import json, anyio
    from asyncflow import flow, task

    @task
    def work():
        async def main():
            return 1
        return anyio.run(main, backend="trio")

    @flow
    def pipeline():
        return work()

    print(json.dumps([pipeline(), pipeline()]))
"""


@pytest.mark.parametrize("source", [TRIO_AFTER_A_FLOW, TRIO_IN_A_TASK], ids=["after a flow", "in a task"])
def test_the_signal_watch_never_makes_trio_warn_of_a_wakeup_fd_collision(tmp_path, source):
    proc = run_script(tmp_path, source)  # -W error: trio's RuntimeWarning would be an error
    assert proc.returncode == 0, proc.stderr
    assert "collided" not in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) in ([1, 2, 2], [1, 1])


def test_a_child_forked_in_a_sync_flow_that_gets_sigterm_does_not_end_its_parent(tmp_path):
    proc = run_script(tmp_path, """
        import json, os, signal, time
        from asyncflow import flow, task

        @task
        def work():
            pid = os.fork()
            if pid == 0:  # the child: ends by SIGTERM, as it would without asyncflow
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(60)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            time.sleep(1)  # long enough for a watcher to act on a signal it took for its own
            return os.waitstatus_to_exitcode(status)

        @flow
        def pipeline():
            return work()

        print(json.dumps(pipeline()))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == -signal.SIGTERM


SYNC_FLOW_SHORT_SLEEPS = SYNC_FLOW.replace("time.sleep(3600)", "for _ in range(3600):\n            time.sleep(1)")


def test_sigint_still_ends_a_sync_flow_crashed_by_keyboard_interrupt(tmp_path):
    # SIGINT is Python's own (`default_int_handler`): a Ctrl-C that lands just before a blocking call
    # waits for it to return, with or without asyncflow (asyncflow's watch covers only its own handlers:
    # interrupting the main thread again could raise a second KeyboardInterrupt). Short sleeps keep
    # that race out of this test, which is about what the interrupt does to the runs.
    proc = start(tmp_path, SYNC_FLOW_SHORT_SLEEPS)
    wait_ready(proc, tmp_path)
    returncode, _, err = signal_and_wait(proc, signal.SIGINT)
    assert returncode != 0
    assert "KeyboardInterrupt" in err
    runs = runs_in(tmp_path)
    assert {name: state for name, (state, _) in runs.items()} == {"pipeline": "Crashed", "work": "Crashed"}, err


APPLICATION_HANDLER = """
    import json, signal, sys, time
    from pathlib import Path
    from asyncflow import flow, task

    received = []

    def on_sigterm(signum, frame):  # the application's own graceful stop
        received.append(signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    @task
    def work():
        Path(sys.argv[1]).touch()
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        return "stopped gracefully"

    @flow
    def pipeline():
        return work()

    result = pipeline()
    print(json.dumps({"result": result, "received": received,
                      "handler kept": signal.getsignal(signal.SIGTERM) is on_sigterm}))
"""


def test_an_application_that_handles_sigterm_itself_keeps_its_handler_and_its_process(tmp_path):
    proc = start(tmp_path, APPLICATION_HANDLER)
    wait_ready(proc, tmp_path)
    returncode, out, err = signal_and_wait(proc, signal.SIGTERM)
    assert returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "result": "stopped gracefully", "received": [signal.SIGTERM], "handler kept": True}
    assert {name: state for name, (state, _) in runs_in(tmp_path).items()} == {
        "pipeline": "Completed", "work": "Completed"}


def test_handlers_are_installed_when_the_first_run_opens_and_only_over_the_default(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json, signal
        from asyncflow import flow

        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the application ignores SIGHUP

        @flow
        def f():
            return 1

        before = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        f()
        print(json.dumps({"default before the first run": before,
                          "sigterm handled after": signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
                          "sighup still ignored": signal.getsignal(signal.SIGHUP) is signal.SIG_IGN}))
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "default before the first run": True, "sigterm handled after": True, "sighup still ignored": True}


def test_no_handler_is_installed_when_the_first_run_opens_off_the_main_thread(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json, signal, threading
        from asyncflow import flow

        @flow
        def f():
            return 1

        t = threading.Thread(target=f)
        t.start()
        t.join()
        print(json.dumps(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL))
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is True


# -- interpreter exit (L8) -----------------------------------------------------------------------
def test_a_run_that_opens_while_the_interpreter_exits_is_recorded_crashed_and_stays_so(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json, threading, time
        from asyncflow import flow, task
        from asyncflow._engine import open_runs
        from asyncflow._store import get_store

        started = threading.Event()

        @task
        def block():
            started.set()
            time.sleep(3600)

        @flow
        def late():
            block()

        get_store()
        open_runs._record_open_runs_crashed()  # the interpreter is exiting: atexit has called it
        threading.Thread(target=late, daemon=True).start()  # a daemon thread still starts a run
        assert started.wait(30)
        store = get_store()
        [flow_run] = store.read_flow_runs()
        [task_run] = store.read_task_runs()
        print(json.dumps({"flow": [flow_run.state.name, flow_run.state.message],
                          "task": [task_run.state.name, task_run.state.message]}))
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    message = "The process exited while the run was still open."
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "flow": ["Crashed", message], "task": ["Crashed", message]}


def test_a_submitted_run_still_queued_when_the_interpreter_exits_is_recorded_crashed(tmp_path):
    """A queued run has no run record of its own yet (it is made when the run starts): the exit handler
    still finds it open and records it Crashed, after the Pending the store saw at submit."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json
        import anyio
        from asyncflow import flow, task
        from asyncflow._engine import open_runs
        from asyncflow._store import get_store

        @task
        async def quick(i):
            return i

        @flow
        async def main():
            futures = [quick.submit(i) for i in range(2)]  # queued: nothing runs until the flow awaits
            open_runs._record_open_runs_crashed()  # the interpreter is exiting: atexit has called it
            store = get_store()
            store.flush()
            print(json.dumps([[[s.name for s in store.read_states(f.task_run_id)],
                               store.read_task_run(f.task_run_id).state.message, f.state.name] for f in futures]))

        anyio.run(main)
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    message = "The process exited while the run was still open."
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [[["Pending", "Crashed"], message, "Crashed"]] * 2
