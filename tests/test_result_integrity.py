"""Results you can trust: every persisted result carries a checksum, the task's own serializer decides
how a file is read, writes are durable and private, a failed write fails the attempt (so retries apply)
and names the path, and stale key-lock files can be pruned."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import cloudpickle
import pytest

from asyncflow import task
from asyncflow._results import KeyLock, ResultStore, get_serializer, lock_is_current, prune_locks
from asyncflow.cache_policies import INPUTS
from asyncflow.exceptions import ResultRecordError, ResultWriteError
from asyncflow.testing import state_names

VALUE = {"amount": 12345, "user": "alice", "ok": True}


def _flips_and_truncations(original: bytes) -> list[tuple[str, bytes]]:
    trials = []
    for i in range(len(original)):
        for x in (0x01, 0x20, 0xFF):
            damaged = bytearray(original)
            damaged[i] ^= x
            trials.append((f"byte {i} ^ {x:#04x}", bytes(damaged)))
    trials.extend((f"truncated to {n} bytes", original[:n]) for n in range(len(original)))
    return trials


class _Planted:
    """A pickle that, when loaded, creates `marker` (what an attacker's payload would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _legacy_record(serializer: str, payload: bytes, task_name: str = "work") -> bytes:
    """A record as asyncflow wrote them before checksums: a JSON header line, then the payload."""
    header = {"expiration": None, "serializer": serializer, "task": task_name}
    return json.dumps(header).encode() + b"\n" + payload


# -- checksums --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_no_byte_flip_or_truncation_of_a_result_file_ever_returns_a_different_value(store, tmp_path, capsys,
                                                                                     serializer):
    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", cache_result_in_memory=False,
          result_serializer=serializer)
    def compute():
        calls.append(1)
        return dict(VALUE)

    assert compute() == VALUE
    path = tmp_path / "k"
    original = path.read_bytes()
    outcomes: Counter[str] = Counter()
    for label, damaged in _flips_and_truncations(original):
        path.write_bytes(damaged)
        before = len(calls)
        capsys.readouterr()
        value = compute()
        err = capsys.readouterr().err
        assert value == VALUE, f"{label}: the cached call returned {value!r}"
        if len(calls) > before:  # a miss: said once, naming the file
            assert err.count("Cache miss") == 1, f"{label}: {err}"
            assert str(path) in err, f"{label}: {err}"
            outcomes["miss"] += 1
        else:
            outcomes["same value"] += 1
    assert outcomes["miss"] >= 4 * len(original) - 4  # every damage is noticed (a few may be harmless)
    path.write_bytes(original)  # the undamaged record is still served: the sweep really read the file
    before = len(calls)
    assert compute() == VALUE and len(calls) == before


def test_a_payload_replaced_by_another_valid_value_is_a_miss(store, tmp_path, capsys):
    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", cache_result_in_memory=False)
    def compute():
        calls.append(1)
        return 12345

    assert compute() == 12345
    path = tmp_path / "k"
    header, _, _payload = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b"\n" + cloudpickle.dumps(99))
    assert compute() == 12345
    assert len(calls) == 2
    assert "checksum" in capsys.readouterr().err


def test_reading_a_damaged_record_for_its_value_raises_an_error_naming_the_path(store, tmp_path):
    results = ResultStore(tmp_path, get_serializer("json"), keep_in_memory=False)
    path = tmp_path / "k"
    data = results.encode(VALUE, None, "work")
    results.write("k", VALUE, data, None)
    assert results.load("k") == VALUE
    damaged = bytearray(data)
    damaged[-3] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(ResultRecordError) as caught:
        results.load("k")
    assert caught.value.path == path
    assert str(path) in str(caught.value) and "checksum" in str(caught.value)
    path.unlink()
    with pytest.raises(ResultRecordError, match="does not exist"):
        results.load("k")


# -- the task's serializer decides -------------------------------------------------------------------------
def test_a_planted_pickle_is_never_unpickled_for_a_json_task(store, tmp_path, capsys):
    marker = tmp_path / "PLANTED-PAYLOAD-RAN"
    storage = tmp_path / "store"
    calls = []

    @task(result_storage=storage, result_storage_key="reports/q4.json", result_serializer="json",
          cache_result_in_memory=False)
    def report():
        calls.append(1)
        return {"total": 4}

    path = storage / "reports" / "q4.json"
    path.parent.mkdir(parents=True)
    pickler = ResultStore(storage, get_serializer("pickle"), keep_in_memory=False)
    planted = [  # with a valid checksum (anyone can compute one), and in the previous format
        pickler.encode(_Planted(marker), None, "report"),
        _legacy_record("pickle", cloudpickle.dumps(_Planted(marker)), "report"),
    ]
    for data, why in zip(planted, ("'pickle' serializer", "no checksum"), strict=True):
        path.write_bytes(data)
        capsys.readouterr()
        assert report() == {"total": 4}
        err = capsys.readouterr().err
        assert not marker.exists()
        assert str(path) in err and "Cache miss" in err and why in err
    assert len(calls) == 2
    path.write_bytes(planted[0])
    with pytest.raises(ResultRecordError, match="pickle"):
        ResultStore(storage, get_serializer("json"), keep_in_memory=False).load("reports/q4.json")
    assert not marker.exists()


def test_a_record_written_with_another_serializer_names_both_serializers(store, tmp_path, capsys):
    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", result_serializer="json",
          cache_result_in_memory=False)
    def work():
        return [1, 2]

    pickler = ResultStore(tmp_path, get_serializer("pickle"), keep_in_memory=False)
    (tmp_path / "k").write_bytes(pickler.encode([1, 2], None, "work"))
    assert work() == [1, 2]
    err = capsys.readouterr().err
    assert "'pickle' serializer" in err and "'json'" in err and str(tmp_path / "k") in err


def test_a_record_in_the_previous_format_is_a_miss_with_a_warning_then_rewritten(store, tmp_path, capsys):
    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", cache_result_in_memory=False)
    def work():
        calls.append(1)
        return "fresh"

    path = tmp_path / "k"
    path.write_bytes(_legacy_record("pickle", cloudpickle.dumps("stale")))
    assert work() == "fresh"
    err = capsys.readouterr().err
    assert "no checksum" in err and str(path) in err
    assert work() == "fresh"  # rewritten in the current format: a hit, no second warning
    assert len(calls) == 1
    assert "Cache miss" not in capsys.readouterr().err


# -- durable and private writes -----------------------------------------------------------------------------
def test_result_files_are_0600_and_the_directories_asyncflow_creates_0700(store, tmp_path):
    old_umask = os.umask(0o022)
    try:
        storage = tmp_path / "store"

        @task(result_storage=storage, result_storage_key="a/b/{parameters[x]}",
              cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"))
        def work(x):
            return x

        assert work(1) == 1
    finally:
        os.umask(old_umask)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(storage) == 0o700
    assert mode(storage / "a") == 0o700
    assert mode(storage / "a" / "b") == 0o700
    assert mode(storage / "a" / "b" / "1") == 0o600
    assert mode(storage / ".locks") == 0o700
    (lock_file,) = (storage / ".locks").iterdir()
    assert mode(lock_file) == 0o600


def test_the_temporary_file_is_fsynced_before_it_replaces_the_record(store, tmp_path, monkeypatch):
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync directory" if stat.S_ISDIR(info.st_mode) else "fsync file", info.st_ino))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k")
    def work():
        return 1

    assert work() == 1
    record_inode = (tmp_path / "k").stat().st_ino
    kinds = [kind for kind, _ in events]
    assert ("fsync file", record_inode) in events
    assert events.index(("fsync file", record_inode)) < events.index(("replace", record_inode))
    assert "fsync directory" in kinds[kinds.index("replace"):]


# -- a write that fails -------------------------------------------------------------------------------------
def _unwritable(storage: Path) -> tuple[str, Path, str]:
    """A storage path the key's record cannot be written under: (key, record path, cause)."""
    storage.mkdir()
    if os.geteuid() != 0:
        os.chmod(storage, 0o500)
        return "k", storage / "k", "Permission denied"
    # root ignores modes: a file where the key's directory must go
    (storage / "sub").write_text("not a directory")
    return "sub/k", storage / "sub" / "k", "Not a directory"


def test_a_read_only_storage_path_fails_the_run_naming_the_path_and_the_cause(store, tmp_path):
    storage = tmp_path / "store"
    key, path, cause = _unwritable(storage)
    calls = []

    @task(result_storage=storage, result_storage_key=key)
    def work():
        calls.append(1)
        return 42

    try:
        state = work(return_state=True)
    finally:
        os.chmod(storage, 0o700)
    assert state.is_failed()
    assert "could not start" not in state.message
    assert str(path) in state.message and cause in state.message
    assert isinstance(state.data, ResultWriteError) and state.data.path == path
    assert calls == [1]


def test_a_failed_result_write_is_a_failed_attempt_so_retries_apply(store, tmp_path):
    storage = tmp_path / "store"
    storage.mkdir()
    blocker = storage / "sub"
    blocker.write_text("a file where the record's directory must go")
    calls = []

    @task(result_storage=storage, result_storage_key="sub/k", retries=2)
    def work():
        calls.append(1)
        if len(calls) == 2:
            blocker.unlink()  # the second attempt's write can succeed
        return 42

    state = work(return_state=True)
    assert state.is_completed() and state.result() == 42
    assert len(calls) == 2
    assert "Retrying" in state_names(store, state.state_details.task_run_id)
    assert (storage / "sub" / "k").is_file()


def test_a_result_write_that_keeps_failing_exhausts_the_retries(store, tmp_path):
    storage = tmp_path / "store"
    key, path, cause = _unwritable(storage)
    calls = []

    @task(result_storage=storage, result_storage_key=key, retries=1)
    def work():
        calls.append(1)
        return 42

    try:
        state = work(return_state=True)
    finally:
        os.chmod(storage, 0o700)
    assert state.is_failed() and str(path) in state.message and cause in state.message
    assert len(calls) == 2


@pytest.mark.anyio
async def test_an_async_task_whose_result_cannot_be_written_fails_naming_the_path(store, tmp_path):
    storage = tmp_path / "store"
    key, path, cause = _unwritable(storage)

    @task(result_storage=storage, result_storage_key=key)
    async def work():
        return 42

    try:
        state = await work(return_state=True)
    finally:
        os.chmod(storage, 0o700)
    assert state.is_failed() and "could not start" not in state.message
    assert str(path) in state.message and cause in state.message


@pytest.mark.anyio
async def test_an_async_task_never_serves_a_damaged_record(store, tmp_path, capsys):
    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", cache_result_in_memory=False,
          result_serializer="json")
    async def compute():
        calls.append(1)
        return dict(VALUE)

    assert await compute() == VALUE
    path = tmp_path / "k"
    data = bytearray(path.read_bytes())
    data[data.index(b"12345")] ^= 0x01  # 12345 -> 02345
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert await compute() == VALUE
    assert len(calls) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "checksum" in err


# -- stale lock files ----------------------------------------------------------------------------------
def _age(path: Path, seconds: float) -> None:
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


def test_prune_locks_removes_lock_files_not_held_and_older_than_the_age(store, tmp_path):
    results = ResultStore(tmp_path, get_serializer("pickle"))
    old, young, held = (KeyLock(results.lock_path(k)) for k in ("old", "young", "held"))
    for lock in (old, young, held):
        with lock.held():
            pass
    held.acquire()
    try:
        _age(old.path, 3600)
        _age(held.path, 3600)
        assert prune_locks(600, root=tmp_path) == 1
    finally:
        held.release()
    assert not old.path.exists()
    assert young.path.exists() and held.path.exists()
    with old.held():  # a pruned key can be locked again
        assert old.path.exists()


def test_prune_locks_uses_the_default_storage_path_and_tolerates_no_locks(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_LOCAL_STORAGE_PATH", str(tmp_path / "storage"))
    assert prune_locks(0) == 0  # no lock directory yet
    lock = KeyLock(ResultStore(tmp_path / "storage", get_serializer(None)).lock_path("k"))
    with lock.held():
        pass
    _age(lock.path, 120)
    assert prune_locks(60) == 1
    with pytest.raises(ValueError, match="older_than_seconds"):
        prune_locks(-1)


def test_taking_a_lock_refreshes_its_age(store, tmp_path):
    lock = KeyLock(ResultStore(tmp_path, get_serializer(None)).lock_path("k"))
    with lock.held():
        pass
    _age(lock.path, 3600)
    with lock.held():
        pass
    assert prune_locks(600, root=tmp_path) == 0


def test_a_lock_file_pruned_under_a_waiter_is_never_shared(store, tmp_path):
    """A waiter that opened the lock file before it was pruned must not take a lock on the unlinked
    file while a newcomer holds the new one: it sees its file is no longer the key's lock, and retries."""
    lock_path = ResultStore(tmp_path, get_serializer(None)).lock_path("k")
    with KeyLock(lock_path).held():
        pass
    waiter_fd = os.open(lock_path, os.O_RDWR)  # the waiter has opened the file, not yet locked it
    try:
        _age(lock_path, 3600)
        assert prune_locks(600, root=tmp_path) == 1
        newcomer = KeyLock(lock_path)
        with newcomer.held():
            assert not lock_is_current(lock_path, waiter_fd)
    finally:
        os.close(waiter_fd)


def test_a_record_with_a_valid_checksum_and_a_bad_expiration_is_a_miss_not_a_crash(store, tmp_path, capsys):
    import hashlib

    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k", cache_result_in_memory=False)
    def work():
        calls.append(1)
        return 1

    covered = b'", "expiration": "tomorrow", "format": 2, "serializer": "pickle", "task": "work"}\n'
    payload = cloudpickle.dumps(2)
    checksum = hashlib.sha256(covered + payload).hexdigest().encode()
    (tmp_path / "k").write_bytes(b'{"sha256": "' + checksum + covered + payload)
    assert work() == 1
    assert "expiration" in capsys.readouterr().err
