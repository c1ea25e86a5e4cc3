"""Persisted results: serializers, the on-disk result store, and per-key locks.

A record is one file, named by its key, under the storage path (ASYNCFLOW_LOCAL_STORAGE_PATH,
default ASYNCFLOW_HOME/storage): a JSON header line, then the serialized value. The header starts
with a SHA-256 checksum of every byte after it (the rest of the header and the payload), then holds
the expiration, the record format (2), the serializer and the task's name:

    {"sha256": "9f2c…", "expiration": null, "format": 2, "serializer": "json", "task": "report"}
    {"amount": 12345, "user": "alice"}

A record is served only if its checksum matches and it was written with the serializer of the task
reading it (the task decides, never the file: a planted pickle is not loaded for a JSON task). Anything
else (damaged, truncated, another serializer, a record of the previous format, which had no checksum)
is a cache miss with one warning naming the file; the run computes the value again and rewrites the
record. `ResultStore.load` reads a value for which there is no miss to fall back on, and raises
`ResultRecordError` naming the file instead. The checksum detects damage, not tampering: whoever can
write the storage path can write a valid record (see the trust model in docs/caching.md).

Writes are atomic and durable: a temporary file (mode 0600) is written, fsynced, renamed over the
record, and the directory is fsynced; directories asyncflow creates are 0700. A write that fails raises
`ResultWriteError` naming the record's path and the cause. Every process on the machine with the same
storage path shares the records. A bounded in-memory layer serves repeated hits in this process
without touching the disk. Key locks (SERIALIZABLE isolation) are files under `<storage>/.locks`;
`prune_locks` removes the ones no run holds or has taken for a while.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

from . import _settings
from ._clock import get_clock
from ._digest import md5
from ._exceptions import ResultRecordError, ResultWriteError

MISSING: Any = object()
_MEMORY_RECORDS = 1000
RECORD_FORMAT = 2  # 2: a SHA-256 checksum in the header; 1 (no "format" field): none
# A record's header line starts with its checksum, which covers every byte after it (the rest of the
# header and the payload), so checking it needs no re-encoding: {"sha256": "<64 hex>", "expiration": …}
_CHECKSUM_FIELD = b'{"sha256": "'
_COVERED_FROM = len(_CHECKSUM_FIELD) + 64


class SerializationError(Exception):
    """A result could not be serialized for storage."""


class Serializer:
    """A result serializer. `name` is written in each record's header, and a record is only read by a
    serializer of the same name: give a custom serializer a name of its own."""

    name = "?"

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError


class PickleSerializer(Serializer):
    """cloudpickle: any Python value that can be pickled, functions and lambdas included."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import cloudpickle  # on the first result pickled: not on asyncflow's import path

        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        import cloudpickle

        return cloudpickle.loads(data)


class JSONSerializer(Serializer):
    """JSON through cattrs: plain data, dataclasses and attrs classes (read back as plain data)."""

    name = "json"

    def __init__(self) -> None:
        import cattrs

        self._converter = cattrs.Converter()

    def dumps(self, value: Any) -> bytes:
        return json.dumps(self._converter.unstructure(value), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


_SERIALIZERS: dict[str, type[Serializer]] = {"pickle": PickleSerializer, "json": JSONSerializer}
_serializer_instances: dict[str, Serializer] = {}


def get_serializer(spec: Any) -> Serializer:
    if spec is None:
        spec = "pickle"
    if isinstance(spec, Serializer):
        return spec
    if isinstance(spec, str) and spec in _SERIALIZERS:
        serializer = _serializer_instances.get(spec)
        if serializer is None:
            serializer = _serializer_instances[spec] = _SERIALIZERS[spec]()
        return serializer
    raise ValueError(f"result_serializer must be 'pickle', 'json' or a Serializer instance; got {spec!r}.")


_default_roots: dict[tuple[str | None, ...], Any] = {}
_ENVIRONMENT = ("ASYNCFLOW_LOCAL_STORAGE_PATH", "ASYNCFLOW_HOME", "ASYNCFLOW_RESULT_STORAGE", "ASYNCFLOW_STORE",
                "ASYNCFLOW_RESULT_STORAGE_MAX_BYTES")
_POSTGRES = ("postgresql://", "postgres://")


def storage_root(result_storage: Any) -> Any:
    """Where results live: a `Path` (a directory on this machine, or one every machine mounts) or a remote
    result storage (`PostgresResults`: small records in a PostgreSQL database, one per URL and process)."""
    if result_storage is None:  # the settings' default, resolved once per environment
        env = _settings.env_snapshot(_ENVIRONMENT)
        root = _default_roots.get(env)
        if root is None:
            root = _default_roots[env] = _default_root()
        return root
    if isinstance(result_storage, str) and result_storage.strip().lower().startswith(_POSTGRES):
        return _postgres(result_storage, "result_storage")
    if hasattr(result_storage, "read_bytes") and hasattr(result_storage, "write_bytes") and \
            hasattr(result_storage, "key_lock"):
        return result_storage  # a result storage object (PostgresResults)
    if isinstance(result_storage, (str, os.PathLike)):
        try:
            return _settings.expand_home(result_storage)
        except ValueError as exc:
            raise ValueError(f"result_storage: {exc}.") from None
    raise TypeError(f"result_storage must be a path (str or pathlib.Path) or a postgresql:// URL; got "
                    f"{type(result_storage).__name__}.")


def _default_root() -> Any:
    choice = _settings.RESULT_STORAGE.value()
    if choice == "auto":
        store = _settings.STORE.value()
        choice = store if store not in ("sqlite", "memory") else "local"
    if choice == "local":
        return Path(_settings.LOCAL_STORAGE_PATH.value())
    return _postgres(choice, "ASYNCFLOW_RESULT_STORAGE")


def _postgres(url: str, what: str) -> Any:
    from ._store.postgres_results import storage_for

    try:
        return storage_for(url.strip(), _settings.RESULT_STORAGE_MAX_BYTES.value())
    except ValueError as exc:
        from ._settings import hide_password

        raise ValueError(f"{what} {hide_password(url)!r} is not a PostgreSQL URL: {exc}.") from None


# -- the in-memory layer ---------------------------------------------------------------------------
class _Memory:
    def __init__(self, size: int) -> None:
        self._records: OrderedDict[tuple[str, str], tuple[Any, float | None]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, root: str, key: str) -> Any:
        record = self._records.get((root, key))
        if record is None:
            return MISSING
        value, expires = record
        if expires is not None and get_clock().time() >= expires:
            self.forget(root, key)
            return MISSING
        return value

    def put(self, root: str, key: str, value: Any, expires: float | None) -> None:
        with self._lock:
            self._records[(root, key)] = (value, expires)
            self._records.move_to_end((root, key))
            while len(self._records) > self._size:
                self._records.popitem(last=False)

    def forget(self, root: str, key: str) -> None:
        with self._lock:
            self._records.pop((root, key), None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


MEMORY = _Memory(_MEMORY_RECORDS)


# -- the store -------------------------------------------------------------------------------------------
class ResultStore:
    """The records of one storage location (`root`: a directory, or a remote storage such as
    `PostgresResults`, which keeps the same record bytes by key) read and written with one serializer."""

    def __init__(self, root: Any, serializer: Serializer, keep_in_memory: bool = True) -> None:
        self.root = root
        self.remote = None if isinstance(root, Path) else root
        self._root_key = str(root) if self.remote is None else repr(root)
        self.serializer = serializer
        self.keep_in_memory = keep_in_memory

    def path_for(self, key: str) -> Path:
        parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"Invalid result storage key {key!r}: it must name a file under the storage path.")
        return self.root.joinpath(*parts)

    # reading
    def memory_get(self, key: str) -> Any:
        return MEMORY.get(self._root_key, key)

    def read(self, key: str) -> tuple[Any, str | None]:
        """(value or MISSING, warning or None) from memory, else from disk (blocking). A record that
        cannot be used is a miss; the warning names its file and why."""
        value = MEMORY.get(self._root_key, key)
        if value is not MISSING:
            return value, None
        if self.remote is not None:
            path: Any = self.remote.where(key)
            try:
                found = self.remote.read_bytes(key)
            except Exception as exc:
                return MISSING, (f"the cached result for key {key!r} in {path} cannot be read: "
                                 f"{type(exc).__name__}: {exc}; computing it again")
            if found is None:
                return MISSING, None
            data = found
        else:
            path = self.path_for(key)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return MISSING, None
            except OSError as exc:
                return MISSING, (f"the cached result for key {key!r} at {path} cannot be read: {_cause(exc)}; "
                                 f"computing it again")
        try:
            header, payload = self._verify(path, data)
            expires = header.get("expiration")
            if expires is not None and get_clock().time() >= expires:
                self._remove(key)  # expired records are not served, and are cleaned up
                return MISSING, None
            value = self._loads(path, payload)
        except ResultRecordError as exc:
            return MISSING, f"the cached result for key {key!r} at {path} {exc.reason}; computing it again"
        if self.keep_in_memory:
            MEMORY.put(self._root_key, key, value, expires)
        return value, None

    def load(self, key: str) -> Any:
        """The value of the record at `key`, whatever its expiration, for a reader with no miss to fall
        back on (a run's result read back later): raises `ResultRecordError` naming the file if the
        record is missing, unreadable, damaged, of the previous format or of another serializer."""
        if self.remote is not None:
            where = self.remote.where(key)
            try:
                found = self.remote.read_bytes(key)
            except Exception as exc:
                raise ResultRecordError(where, f"cannot be read: {type(exc).__name__}: {exc}") from exc
            if found is None:
                raise ResultRecordError(where, "does not exist")
            _header, payload = self._verify(where, found)
            return self._loads(where, payload)
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ResultRecordError(path, "does not exist") from None
        except OSError as exc:
            raise ResultRecordError(path, f"cannot be read: {_cause(exc)}") from exc
        _header, payload = self._verify(path, data)
        return self._loads(path, payload)

    def _verify(self, path: Path, data: bytes) -> tuple[dict[str, Any], bytes]:
        """The header and payload of a record whose checksum matches and whose serializer is this
        store's; else ResultRecordError. Nothing is deserialized before both checks pass."""
        if data.startswith(_CHECKSUM_FIELD):
            checksum = data[len(_CHECKSUM_FIELD):_COVERED_FROM]
            import hashlib  # (reading or writing a result: not on a plain run's path)

            if checksum != hashlib.sha256(memoryview(data)[_COVERED_FROM:]).hexdigest().encode():
                raise ResultRecordError(path, "is corrupt (its checksum does not match its content)")
        header_line, newline, payload = data.partition(b"\n")
        try:
            header = json.loads(header_line)
        except ValueError:
            header = None
        if not newline or not isinstance(header, dict):
            raise ResultRecordError(path, "is corrupt (its header is not a record header)")
        if not data.startswith(_CHECKSUM_FIELD):
            if "sha256" in header or "format" in header:
                raise ResultRecordError(path, "is corrupt (its checksum field is damaged)")
            raise ResultRecordError(path, "has no checksum (it was written by an asyncflow before "
                                          "checksums), so it is not trusted")
        expiration = header.get("expiration")
        if expiration is not None and (type(expiration) not in (int, float) or math.isnan(expiration)):
            raise ResultRecordError(path, f"is corrupt (its expiration is {expiration!r})")
        written_with = header.get("serializer")
        if written_with != self.serializer.name:
            raise ResultRecordError(path, f"was written with the {written_with!r} serializer and this task "
                                          f"reads {self.serializer.name!r}, so it is not loaded")
        return header, payload

    def _loads(self, path: Path, payload: bytes) -> Any:
        try:
            return self.serializer.loads(payload)
        except Exception as exc:  # intact, but not loadable here (a class this process cannot import...)
            raise ResultRecordError(path, f"cannot be loaded by the {self.serializer.name!r} serializer "
                                          f"({type(exc).__name__}: {exc})") from exc

    # writing
    def encode(self, value: Any, expiration: float | None, task_name: str) -> bytes:
        try:
            payload = self.serializer.dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"Task {task_name!r} returned a value of type {type(value).__name__} that the "
                f"{self.serializer.name!r} serializer cannot store ({type(exc).__name__}: {exc}). Return a "
                f"serializable value, choose another result_serializer, or turn caching off for this task "
                f"(cache_policy=NO_CACHE).") from exc
        header = {"expiration": expiration, "format": RECORD_FORMAT, "serializer": self.serializer.name,
                  "task": task_name}
        # what the checksum covers: the header's other fields (after `{"sha256": "<hex>`), then the payload
        covered = b'", ' + json.dumps(header, sort_keys=True).encode()[1:] + b"\n"
        import hashlib

        digest = hashlib.sha256(covered)
        digest.update(payload)
        return _CHECKSUM_FIELD + digest.hexdigest().encode() + covered + payload

    def write(self, key: str, value: Any, data: bytes, expiration: float | None) -> None:
        """Write a record atomically and durably; ResultWriteError (naming the path and the cause) if
        it cannot be written."""
        if self.remote is not None:
            self.remote.write_bytes(key, data, expiration, _task_of(data))  # ResultWriteError naming it
        else:
            path = self.path_for(key)
            try:
                _write_durably(path, data)
            except OSError as exc:
                raise ResultWriteError(path, _write_failure(path, exc), exc.errno) from exc
        if self.keep_in_memory:
            MEMORY.put(self._root_key, key, value, expiration)

    async def write_async(self, key: str, value: Any, data: bytes, expiration: float | None) -> None:
        from anyio import to_thread

        await to_thread.run_sync(self.write, key, value, data, expiration)

    def _remove(self, key: str) -> None:
        MEMORY.forget(self._root_key, key)
        if self.remote is not None:
            self.remote.remove(key)
            return
        with contextlib.suppress(OSError):
            self.path_for(key).unlink()

    # locks
    def lock_path(self, key: str) -> Path:
        return self.root / ".locks" / (md5(key.encode()).hexdigest() + ".lock")

    def key_lock(self, key: str) -> Any:
        """An exclusive lock on `key` between processes (`KeyLock`: a file under the path, or the remote
        storage's own, such as a PostgreSQL advisory lock, which spans machines)."""
        if self.remote is not None:
            return self.remote.key_lock(key)
        return KeyLock(self.lock_path(key))


def _task_of(data: bytes) -> str | None:
    """The task named in a record's header (for listings of remote records)."""
    try:
        return json.loads(data.partition(b"\n")[0]).get("task")
    except (ValueError, AttributeError):
        return None


def _cause(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def _write_failure(path: Path, exc: OSError) -> str:
    where = f" (at {exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    advice = {
        errno.ENOSPC: "Free space on that disk, or",
        errno.EDQUOT: "Free space within your disk quota, or",
        errno.EROFS: "The file system is read-only:",
        errno.EACCES: "This process may not write there: fix the directory's permissions, or",
        errno.EPERM: "This process may not write there: fix the directory's permissions, or",
        errno.ENOTDIR: "A file is in the way of a directory:",
        errno.EEXIST: "A file is in the way of a directory:",
    }.get(exc.errno or 0, "")
    return (f"The task's result could not be written to {path}: {_cause(exc)}{where}. The function ran; this "
            f"attempt counts as failed (retries apply). {advice + ' ' if advice else ''}set "
            f"ASYNCFLOW_LOCAL_STORAGE_PATH (or the task's result_storage) to a writable directory, or turn "
            f"persistence off for this task (persist_result=False).")


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700 (existing ones are left as they are)."""
    if directory.is_dir():
        return
    try:
        os.mkdir(directory, 0o700)
    except FileNotFoundError:
        if directory.parent == directory:
            raise
        _make_private_dirs(directory.parent)
        with contextlib.suppress(FileExistsError):  # (another process made it meanwhile)
            os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))


def _write_durably(path: Path, data: bytes) -> None:
    """Temporary file (0600) in the same directory, written and fsynced, then renamed over `path`; then
    the directory is fsynced so the rename survives a power loss (where the file system allows it)."""
    directory = path.parent
    _make_private_dirs(directory)
    import tempfile  # with shutil, bz2 and lzma: imported when a result is first written

    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the old record or the new one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # some file systems cannot fsync a directory; the record itself is on disk
        pass
    finally:
        os.close(dir_fd)


# -- per-key locks (SERIALIZABLE isolation) ------------------------------------------------------------
class KeyLock:
    """An exclusive lock on one key, between threads, coroutines and processes (flock); the OS
    releases it if the process dies. Taking it touches the file (its age is the time since a run last
    took it), and a lock is only taken on the file that is still the key's lock file: `prune_locks`
    may remove an old one while a waiter has it open, and the waiter then starts again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        _make_private_dirs(self.path.parent)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def _take(self, fd: int) -> bool:
        """With the flock held on `fd`: keep it if `fd` is still the key's lock file, else let go."""
        if not lock_is_current(self.path, fd):
            os.close(fd)  # (closing releases the flock)
            return False
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(fd)
        self._fd = fd
        return True

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            if self._take(fd):
                return

    async def acquire_async(self) -> None:
        delay = 0.001
        while True:
            fd = self._open()
            while True:  # poll without holding a thread while we wait
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    try:
                        await anyio.sleep(delay)
                    except BaseException:
                        os.close(fd)
                        raise
                    delay = min(delay * 2, 0.05)
                except BaseException:
                    os.close(fd)
                    raise
            if self._take(fd):
                return

    def try_acquire(self) -> bool:
        """One attempt that does not wait: True if the lock is now held."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        return self._take(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def held_async(self) -> AsyncIterator[None]:
        await self.acquire_async()
        try:
            yield
        finally:
            self.release()


class ManagedLock:
    """A key lock taken through a user's lock manager (`cache_policy.configure(lock_manager=...)`,
    Prefect's LockManager protocol: `acquire_lock(key, holder, ...)`, `release_lock(key, holder)`, and
    optionally `aacquire_lock`), with the same face as `KeyLock`."""

    def __init__(self, manager: Any, key: str) -> None:
        import socket
        import uuid

        self.manager = manager
        self.key = key
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._held = False

    def acquire(self) -> None:
        self.manager.acquire_lock(self.key, holder=self.holder)
        self._held = True

    async def acquire_async(self) -> None:
        take = getattr(self.manager, "aacquire_lock", None)
        if take is not None:
            await take(self.key, holder=self.holder)
        else:
            import anyio.to_thread

            await anyio.to_thread.run_sync(lambda: self.manager.acquire_lock(self.key, holder=self.holder))
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.manager.release_lock(self.key, holder=self.holder)


def clear_memory() -> None:
    MEMORY.clear()


def list_records(root: Path | None = None) -> list[dict[str, Any]]:
    """Every cache record under the storage path: key, task, expiration, size (for `asyncflow cache ls`)."""
    root = root or storage_root(None)
    if not isinstance(root, Path):
        return root.list_records()  # type: ignore[no-any-return]
    records: list[dict[str, Any]] = []
    if not root.exists():
        return records
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or ".locks" in path.parts:
            continue
        try:
            with path.open("rb") as fh:
                header = json.loads(fh.readline())
        except (OSError, ValueError):
            header = {}
        records.append({"key": str(path.relative_to(root)), "task": header.get("task"),
                        "expiration": header.get("expiration"), "size": path.stat().st_size, "path": str(path)})
    return records


def clear_records(root: Path | None = None, *, task: str | None = None, expired_only: bool = False) -> int:
    """Delete cache records (all, one task's, or only the expired ones); returns how many."""
    now = get_clock().time()
    removed = 0
    root = root or storage_root(None)
    if not isinstance(root, Path):
        MEMORY.clear()
        return root.clear_records(task=task, expired_only=expired_only, now=now)  # type: ignore[no-any-return]
    for record in list_records(root):
        if task is not None and record["task"] != task:
            continue
        if expired_only and (record["expiration"] is None or record["expiration"] > now):
            continue
        with contextlib.suppress(OSError):
            os.unlink(record["path"])
            removed += 1
    MEMORY.clear()
    return removed


def lock_is_current(path: Path, fd: int) -> bool:
    """Whether the open file `fd` is still the lock file at `path` (not one pruned meanwhile)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return held.st_nlink > 0 and (held.st_ino, held.st_dev) == (on_disk.st_ino, on_disk.st_dev)


def prune_locks(older_than_seconds: float, root: Path | str | None = None) -> int:
    """Remove the key-lock files under `<root>/.locks` (default root: the storage path) that no run
    holds and no run has taken for `older_than_seconds`; returns how many were removed.

    Safe while runs use the locks: a file is removed only while this function holds its flock, and a
    run that opened it before then sees it is no longer the key's lock file and takes a new one.
    Lock files of tasks with their own `result_storage` live under that path: pass it as `root`."""
    if isinstance(older_than_seconds, bool) or not isinstance(older_than_seconds, (int, float)) or \
            math.isnan(older_than_seconds) or older_than_seconds < 0:
        raise ValueError(f"older_than_seconds must be a number of seconds >= 0; got {older_than_seconds!r}.")
    where = root if root is not None else storage_root(None)
    if not isinstance(where, (str, os.PathLike)):
        return 0  # a remote storage's locks (PostgreSQL advisory locks) leave nothing behind
    directory = Path(where) / ".locks"
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    cutoff = time.time() - older_than_seconds  # file times are wall-clock times
    removed = 0
    for entry in entries:
        if not entry.name.endswith(".lock") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a run
                continue
            path = Path(entry.path)
            if os.fstat(fd).st_mtime < cutoff and lock_is_current(path, fd):
                os.unlink(path)
                removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
