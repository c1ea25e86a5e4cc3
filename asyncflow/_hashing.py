"""Stable hashes of Python values (for cache keys)."""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

import cloudpickle


def hash_objects(*args: Any, **kwargs: Any) -> str | None:
    """An md5 hex digest of the values (JSON when possible, else cloudpickle); None if neither works."""
    try:
        payload = json.dumps((args, kwargs), sort_keys=True, default=repr).encode()
        if b" object at 0x" not in payload:  # reprs with addresses are not stable
            return hashlib.md5(payload).hexdigest()
    except (TypeError, ValueError):
        pass
    try:
        return hashlib.md5(cloudpickle.dumps((args, kwargs))).hexdigest()
    except Exception:
        return None


_task_prefixes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str | None:
    """The classic cache key function: the task's key, its code and its inputs."""
    task = context.task
    prefix = _task_prefixes.get(task)
    if prefix is None:  # the task's part of the key, computed once per task
        code = getattr(getattr(task.fn, "__code__", None), "co_code", b"")
        prefix = _task_prefixes[task] = hashlib.md5(f"{task.task_key}|{code.hex()}".encode()).hexdigest()
    return hash_objects(prefix, arguments)
