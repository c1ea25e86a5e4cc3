"""Persisted results: serializers, the on-disk result store, and per-key locks.

A record is one file, named by its key, under the storage path (ASYNCFLOW_LOCAL_STORAGE_PATH,
default ASYNCFLOW_HOME/storage): a JSON header line (expiration, serializer, task) and the payload.
Writes are atomic (a temporary file, then a rename), so a reader sees a whole record or none; a
corrupt or missing record is a cache miss with a warning, never a crash. Every process on the machine
with the same storage path shares the records. A bounded in-memory layer serves repeated hits in this
process without touching the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import cloudpickle

from . import _settings
from ._clock import get_clock

MISSING: Any = object()
_MEMORY_RECORDS = 1000


class SerializationError(Exception):
    """A result could not be serialized for storage."""


class Serializer:
    name = "?"

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError


class PickleSerializer(Serializer):
    """cloudpickle: any Python value that can be pickled, functions and lambdas included."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
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


_default_roots: dict[tuple[str | None, str | None], Path] = {}


def storage_root(result_storage: Any) -> Path:
    if result_storage is None:  # the settings' default, resolved once per environment
        env = (os.environ.get("ASYNCFLOW_LOCAL_STORAGE_PATH"), os.environ.get("ASYNCFLOW_HOME"))
        root = _default_roots.get(env)
        if root is None:
            root = _default_roots[env] = Path(_settings.LOCAL_STORAGE_PATH.value())
        return root
    if isinstance(result_storage, (str, os.PathLike)):
        return Path(result_storage).expanduser()
    raise TypeError(f"result_storage must be a path (str or pathlib.Path); got {type(result_storage).__name__}.")


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
    def __init__(self, root: Path, serializer: Serializer, keep_in_memory: bool = True) -> None:
        self.root = root
        self._root_key = str(root)
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
        """(value or MISSING, warning or None) from memory, else from disk (blocking)."""
        value = MEMORY.get(self._root_key, key)
        if value is not MISSING:
            return value, None
        try:
            data = self.path_for(key).read_bytes()
        except FileNotFoundError:
            return MISSING, None
        except OSError as exc:
            return MISSING, f"cannot read the cached result for key {key!r} ({exc}); computing it again"
        return self._decode(key, data)

    def _decode(self, key: str, data: bytes) -> tuple[Any, str | None]:
        try:
            header_line, _, payload = data.partition(b"\n")
            header = json.loads(header_line)
            expires = header.get("expiration")
            if expires is not None and get_clock().time() >= expires:
                self._remove(key)  # expired records are not served, and are cleaned up
                return MISSING, None
            value = get_serializer(header.get("serializer", "pickle")).loads(payload)
        except Exception as exc:
            return MISSING, (f"the cached result for key {key!r} is corrupt ({type(exc).__name__}: {exc}); "
                             f"computing it again")
        if self.keep_in_memory:
            MEMORY.put(self._root_key, key, value, expires)
        return value, None

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
        header = {"expiration": expiration, "serializer": self.serializer.name, "task": task_name}
        return json.dumps(header).encode() + b"\n" + payload

    def write(self, key: str, value: Any, data: bytes, expiration: float | None) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # atomic: readers see the old record or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.keep_in_memory:
            MEMORY.put(self._root_key, key, value, expiration)

    async def write_async(self, key: str, value: Any, data: bytes, expiration: float | None) -> None:
        await anyio.to_thread.run_sync(self.write, key, value, data, expiration)

    def _remove(self, key: str) -> None:
        MEMORY.forget(self._root_key, key)
        with contextlib.suppress(OSError):
            self.path_for(key).unlink()

    # locks
    def lock_path(self, key: str) -> Path:
        return self.root / ".locks" / (hashlib.md5(key.encode()).hexdigest() + ".lock")


# -- per-key locks (SERIALIZABLE isolation) ------------------------------------------------------------
class KeyLock:
    """An exclusive lock on one key, between threads, coroutines and processes (flock); the OS
    releases it if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self) -> None:
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    async def acquire_async(self) -> None:
        fd = self._open()
        delay = 0.001
        while True:  # poll without holding a thread while we wait
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd

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


def clear_memory() -> None:
    MEMORY.clear()


def list_records(root: Path | None = None) -> list[dict[str, Any]]:
    """Every cache record under the storage path: key, task, expiration, size (for `asyncflow cache ls`)."""
    root = root or storage_root(None)
    records = []
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


def lock_is_current(path: Path, fd: int) -> bool:  # stub: the test comes first
    raise NotImplementedError


def prune_locks(older_than_seconds: float, root: Path | None = None) -> int:  # stub: the test comes first
    raise NotImplementedError
