"""Stable hashes of Python values (for cache keys)."""

from __future__ import annotations

import hashlib
import json
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


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str | None:
    """The classic cache key function: the task's key, its code and its inputs."""
    task = context.task
    code = getattr(getattr(task.fn, "__code__", None), "co_code", b"")
    return hash_objects(task.task_key, code.hex(), arguments)
