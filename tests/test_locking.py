"""Lock managers at Prefect's paths (`asyncflow.locking.memory`, `.filesystem`): a holder takes a key,
others wait (or time out), the holder releases it; a cache policy configured with one takes its
SERIALIZABLE turns through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from asyncflow import task
from asyncflow.cache_policies import INPUTS, TASK_SOURCE
from asyncflow.locking import LockManager
from asyncflow.locking.filesystem import FileSystemLockManager
from asyncflow.locking.memory import MemoryLockManager


@pytest.fixture(params=["memory", "filesystem"])
def manager(request, tmp_path):
    if request.param == "memory":
        return MemoryLockManager()
    return FileSystemLockManager(lock_files_directory=tmp_path / "locks")


def _key():
    return f"key-{uuid.uuid4().hex}"


def test_a_holder_takes_a_key_others_time_out_until_it_is_released(manager):
    key = _key()
    assert isinstance(manager, LockManager)
    assert not manager.is_locked(key)
    assert manager.acquire_lock(key, holder="a") is True
    assert manager.acquire_lock(key, holder="a", acquire_timeout=0) is True  # its own: it keeps it
    assert manager.is_locked(key) and manager.is_lock_holder(key, "a") and not manager.is_lock_holder(key, "b")
    assert manager.acquire_lock(key, holder="b", acquire_timeout=0.05) is False
    assert manager.wait_for_lock(key, timeout=0.02) is False
    with pytest.raises(ValueError, match="No lock held by 'b'"):
        manager.release_lock(key, holder="b")
    manager.release_lock(key, holder="a")
    assert not manager.is_locked(key) and manager.wait_for_lock(key, timeout=0)
    assert manager.acquire_lock(key, holder="b", acquire_timeout=0) is True
    manager.release_lock(key, holder="b")


def test_a_waiting_holder_gets_the_key_when_it_is_released(manager):
    key = _key()
    manager.acquire_lock(key, holder="first")
    got = []
    waiter = threading.Thread(target=lambda: got.append(manager.acquire_lock(key, holder="second", acquire_timeout=5)))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    manager.release_lock(key, holder="first")
    waiter.join(5)
    assert got == [True] and manager.is_lock_holder(key, "second")
    manager.release_lock(key, holder="second")


@pytest.mark.anyio
async def test_async_acquire_waits_without_a_thread(anyio_backend, manager):
    import anyio

    key = _key()
    manager.acquire_lock(key, holder="sync")
    assert await manager.aacquire_lock(key, holder="async", acquire_timeout=0.02) is False

    async def release_soon():
        await anyio.sleep(0.02)
        manager.release_lock(key, holder="sync")

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_soon)
        assert await manager.aacquire_lock(key, holder="async", acquire_timeout=5) is True
    assert await manager.await_for_lock(key, timeout=0) is False
    manager.release_lock(key, holder="async")


def test_memory_locks_are_one_per_process_and_expire_after_hold_timeout():
    assert MemoryLockManager() is MemoryLockManager()
    key = _key()
    manager = MemoryLockManager()
    manager.acquire_lock(key, holder="slow", hold_timeout=0.01)
    time.sleep(0.02)
    assert not manager.is_locked(key)
    assert manager.acquire_lock(key, holder="next", acquire_timeout=0) is True
    manager.release_lock(key, holder="next")


def test_bad_arguments_are_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="acquire_timeout must be a number of seconds"):
        MemoryLockManager().acquire_lock("k", holder="h", acquire_timeout=-1)
    with pytest.raises(TypeError, match="key and holder are strings"):
        MemoryLockManager().acquire_lock("k", holder=None)
    with pytest.raises(ValueError, match="must be a file name"):
        FileSystemLockManager(tmp_path).acquire_lock("a/b", holder="h")


def test_a_file_lock_is_held_across_processes_and_freed_when_its_process_dies(tmp_path):
    """A real second process takes the key's lock file; this one cannot, until that process is killed."""
    directory = tmp_path / "locks"
    key = _key()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from asyncflow.locking.filesystem import FileSystemLockManager
            FileSystemLockManager({str(directory)!r}).acquire_lock({key!r}, holder="other-process")
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        manager = FileSystemLockManager(lock_files_directory=directory)
        assert (directory / f"{key}.lock").exists() and manager.is_locked(key)
        assert manager.acquire_lock(key, holder="here", acquire_timeout=0.05) is False
    finally:
        child.kill()
        child.wait(10)
    assert manager.acquire_lock(key, holder="here", acquire_timeout=5) is True
    manager.release_lock(key, holder="here")


def test_a_policy_with_a_file_lock_manager_holds_the_keys_lock_while_the_run_computes(store, tmp_path):
    policy = INPUTS.configure(lock_manager=FileSystemLockManager(lock_files_directory=tmp_path),
                              isolation_level="SERIALIZABLE")
    key = policy.compute_key(task_ctx=None, inputs={"x": 1}, flow_parameters=None)
    seen = []

    @task(cache_policy=policy)
    def work(x):
        seen.append(policy.lock_manager.is_locked(key))
        return x

    assert work(1) == 1 and seen == [True]
    assert not policy.lock_manager.is_locked(key)


@pytest.mark.anyio
async def test_concurrent_runs_with_a_memory_lock_manager_compute_once(anyio_backend):
    import anyio

    computed = []

    @task(cache_policy=(INPUTS + TASK_SOURCE).configure(isolation_level="SERIALIZABLE",
                                                          lock_manager=MemoryLockManager()))
    async def work(x):
        computed.append(x)
        await anyio.sleep(0.01)
        return uuid.uuid4().hex

    results = []

    async def call():
        results.append(await work(7))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
    assert len(computed) == 1 and len(set(results)) == 1
