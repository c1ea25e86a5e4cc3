"""The current task run: `task_run.id`, `.name`, `.task_name`, `.parameters`, `.tags`, `.run_count`.

Outside a task run, each attribute has an empty value (None, [], {} or 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._context import TaskRunContext, current_run

_ATTRIBUTES: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "id": (lambda c: str(c.task_run.id), None),
    "name": (lambda c: c.task_run.name, None),
    "task_name": (lambda c: c.task_run.task_name, None),
    "parameters": (lambda c: dict(c.parameters), {}),
    "tags": (lambda c: list(c.task_run.tags), []),
    "run_count": (lambda c: c.task_run.run_count, 0),
}

__all__ = sorted(_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    if name not in _ATTRIBUTES:
        raise AttributeError(f"asyncflow.runtime.task_run has no attribute {name!r}; available: {__all__}.")
    getter, empty = _ATTRIBUTES[name]
    ctx = current_run.get()
    if isinstance(ctx, TaskRunContext):
        return getter(ctx)
    return type(empty)() if empty is not None else None


def __dir__() -> list[str]:
    return __all__
