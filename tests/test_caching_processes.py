"""Caching across processes, and SERIALIZABLE isolation: real subprocesses, real files, real locks."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from asyncflow import flow, task
from asyncflow.cache_policies import INPUTS


def _run(script: str, home, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASYNCFLOW_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, timeout=timeout)


HELLO = """
    from datetime import timedelta
    from asyncflow import flow, task
    from asyncflow.tasks import task_input_hash

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
    def hello_task(name_input):
        print(f"Saying hello {name_input}")
        return "hello " + name_input

    @flow
    def hello_flow(name_input):
        return hello_task(name_input)

    print("result:", hello_flow("Marvin"))
"""


def test_a_second_process_gets_the_cached_result(tmp_path):
    """Seed 003 run twice as a script: the task executes once."""
    first = _run(HELLO, tmp_path)
    second = _run(HELLO, tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "Saying hello Marvin" in first.stdout and "result: hello Marvin" in first.stdout
    assert "Saying hello Marvin" not in second.stdout and "result: hello Marvin" in second.stdout
    assert "Finished in state Cached(type=COMPLETED)" in second.stderr


SERIALIZED = """
    import sys, time
    from asyncflow import task
    from asyncflow.cache_policies import INPUTS

    @task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"), persist_result=True)
    def expensive(x):
        with open(sys.argv[1], "a") as fh:
            fh.write("computed\\n")
        time.sleep(float(sys.argv[2]))
        return x * 10

    print("result:", expensive(4))
"""


def _start(script: str, home, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ASYNCFLOW_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_serializable_runs_in_several_processes_compute_once(tmp_path):
    marker = tmp_path / "computed.txt"
    procs = [_start(SERIALIZED, tmp_path, str(marker), "0.3") for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("result: 40" in out for out, _ in outputs)
    assert marker.read_text().count("computed") == 1


def test_a_key_lock_is_released_when_its_holder_dies(tmp_path):
    marker = tmp_path / "computed.txt"
    holder = _start(SERIALIZED, tmp_path, str(marker), "3600")
    deadline = time.monotonic() + 30
    while not (marker.exists() and "computed" in marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)  # the line, not the file: a kill between creating it and writing would lose the line
    assert "computed" in marker.read_text(), "the first process never started computing"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    second = _start(SERIALIZED, tmp_path, str(marker), "0")
    out, err = second.communicate(timeout=30)
    assert "result: 40" in out, err
    assert marker.read_text().count("computed") == 2


def test_serializable_runs_in_threads_compute_once(store):
    computed = []

    @task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"), persist_result=True)
    def expensive(x):
        computed.append(x)
        time.sleep(0.1)
        return x + 1

    results = []
    threads = [threading.Thread(target=lambda: results.append(expensive(1))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [2, 2, 2, 2] and computed == [1]


@pytest.mark.anyio
async def test_serializable_runs_in_coroutines_compute_once(store):
    import anyio

    computed = []

    @task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"), persist_result=True)
    async def expensive(x):
        computed.append(x)
        await anyio.sleep(0.05)
        return x + 1

    results = []

    @flow
    async def f():
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                async def one():
                    results.append(await expensive(1))
                tg.start_soon(one)

    await f()
    assert results == [2, 2, 2, 2] and computed == [1]
