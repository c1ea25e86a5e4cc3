"""Results every machine can read (issue 14): persisted results and cache records in the PostgreSQL store's
database (`ASYNCFLOW_RESULT_STORAGE`, `auto` with a PostgreSQL store), a size limit with a clear error,
SERIALIZABLE keys locked across machines (advisory locks), `asyncflow cache ls | clear`. Real PostgreSQL,
real subprocesses with homes of their own (other machines)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from asyncflow import flow, task
from asyncflow._store.postgres_results import PostgresResults


def env_for(home, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    env.update(ASYNCFLOW_HOME=str(home), ASYNCFLOW_STORE=url, PYTHONUNBUFFERED="1", **extra)
    return env


def run(script: str, home, url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          env=env_for(home, url, **extra), timeout=120)


HELLO = """
    from datetime import timedelta
    from asyncflow import flow, task
    from asyncflow.tasks import task_input_hash

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=5))
    def hello_task(name_input):
        print(f"Saying hello {name_input}")
        return {"greeting": "hello " + name_input}

    @flow
    def hello_flow(name_input):
        return hello_task(name_input)

    print("result:", hello_flow("Marvin"))
"""


def test_a_cache_hit_crosses_processes_with_different_homes(postgres_url, tmp_path):
    first = run(HELLO, tmp_path / "machine-a", postgres_url)
    second = run(HELLO, tmp_path / "machine-b", postgres_url)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "Saying hello Marvin" in first.stdout and "result: {'greeting': 'hello Marvin'}" in first.stdout
    assert "Saying hello Marvin" not in second.stdout and "result: {'greeting': 'hello Marvin'}" in second.stdout
    assert "Finished in state Cached(type=COMPLETED)" in second.stderr
    assert not (tmp_path / "machine-a" / "storage").exists()  # nothing written on the machine itself


def test_local_result_storage_keeps_the_cache_on_each_machine(postgres_url, tmp_path):
    first = run(HELLO, tmp_path / "machine-a", postgres_url, ASYNCFLOW_RESULT_STORAGE="local")
    second = run(HELLO, tmp_path / "machine-b", postgres_url, ASYNCFLOW_RESULT_STORAGE="local")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "Saying hello Marvin" in first.stdout and "Saying hello Marvin" in second.stdout
    assert (tmp_path / "machine-a" / "storage").is_dir()


BIG = """
    from asyncflow import task

    @task(persist_result=True)
    def big(n):
        return "x" * n

    state = big(int(__import__("sys").argv[1]), return_state=True)
    print("state:", state.name)
    print("message:", state.message)
"""


def test_a_result_past_the_size_limit_fails_its_attempt_with_a_clear_error(postgres_url, tmp_path):
    done = run(BIG, tmp_path, postgres_url, "5000", ASYNCFLOW_RESULT_STORAGE_MAX_BYTES="4096")
    assert done.returncode == 0, done.stderr
    assert "state: Failed" in done.stdout
    assert "over the 4,096 bytes" in done.stdout and "ASYNCFLOW_RESULT_STORAGE_MAX_BYTES" in done.stdout
    small = run(BIG, tmp_path, postgres_url, "100", ASYNCFLOW_RESULT_STORAGE_MAX_BYTES="4096")
    assert "state: Completed" in small.stdout, small.stderr


def test_a_damaged_record_in_the_database_is_a_miss_with_a_warning(postgres_url, monkeypatch, capfd):
    import psycopg

    from asyncflow import _results, _settings
    from asyncflow.cache_policies import INPUTS

    monkeypatch.setenv("ASYNCFLOW_STORE", postgres_url)
    _settings.reload()
    calls = []

    @task(cache_policy=INPUTS, persist_result=True)
    def double(x):
        calls.append(x)
        return 2 * x

    assert double(21) == 42
    _results.clear_memory()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("UPDATE results SET data = overlay(data placing '\\x00'::bytea from 120)").rowcount == 1
    assert double(21) == 42 and calls == [21, 21]
    assert "is corrupt (its checksum does not match" in capfd.readouterr().err


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


def test_serializable_runs_on_several_machines_compute_once(postgres_url, tmp_path):
    marker = tmp_path / "computed.txt"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(SERIALIZED), str(marker), "0.5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_for(tmp_path / f"machine-{i}", postgres_url)) for i in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("result: 40" in out for out, _ in outputs), outputs
    assert marker.read_text().count("computed") == 1


@pytest.mark.anyio
async def test_an_advisory_key_lock_waits_on_a_loop_without_holding_a_thread(postgres_url):
    import anyio

    storage = PostgresResults(postgres_url)
    key = f"key-{uuid.uuid4()}"
    holder = storage.key_lock(key)
    holder.acquire()
    order: list[str] = []

    async def waiter() -> None:
        async with storage.key_lock(key).held_async():
            order.append("waiter")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.3)
        order.append("holder releases")
        holder.release()
    assert order == ["holder releases", "waiter"]


def test_cache_ls_and_clear_read_the_database(postgres_url, tmp_path):
    assert run(HELLO, tmp_path / "machine-a", postgres_url).returncode == 0

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "asyncflow", *args], env=env_for(tmp_path / "cli", postgres_url),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "hello_task" in cli("cache", "ls")
    assert "Removed 1 cache record(s)" in cli("cache", "clear", "--all")
    assert "No cache records" in cli("cache", "ls")
    again = run(HELLO, tmp_path / "machine-b", postgres_url)
    assert "Saying hello Marvin" in again.stdout


def test_a_result_storage_url_can_be_given_to_a_task(postgres_url, tmp_path, monkeypatch):
    from asyncflow import _results

    calls = []

    @task(result_storage=postgres_url, persist_result=True, cache_key_fn=lambda ctx, params: "fixed-key")
    def answer():
        calls.append(1)
        return 42

    @flow
    def f():
        return answer()

    assert f() == 42
    _results.clear_memory()
    assert f() == 42 and calls == [1]
    assert [r["key"] for r in PostgresResults(postgres_url).list_records()] == ["fixed-key"]
    with pytest.raises(ValueError, match="result_storage 'postgresql://' is not a PostgreSQL URL"):
        task(result_storage="postgresql://", persist_result=True)(lambda: 1)
