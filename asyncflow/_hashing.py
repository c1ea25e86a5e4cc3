"""Stable hashes of Python values (for cache keys)."""

from __future__ import annotations

import weakref
from typing import Any

from ._caching import code_fingerprint, stable_hash
from ._digest import md5

_task_prefixes: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()


def hash_objects(*args: Any, **kwargs: Any) -> str:
    """An md5 hex digest of the values, keeping their types apart (see `_caching.stable_hash`)."""
    return stable_hash([list(args), kwargs], "the values")


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str:
    """The classic cache key function: the task's key, its code and its inputs. An input that cannot
    be hashed raises, and the engine turns caching off for that run with a warning naming it."""
    task = context.task
    fn = task.fn
    known = _task_prefixes.get(task)
    if known is not None and known[0] is fn:
        prefix = known[1]
    else:  # the task's part of the key, computed once per task and function (`task.fn` may be replaced)
        prefix = md5(f"{task.task_key}|{code_fingerprint(fn)}".encode()).hexdigest()
        _task_prefixes[task] = (fn, prefix)
    return prefix + stable_hash(arguments, "the task's inputs")[:24]
