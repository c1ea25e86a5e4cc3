"""The current flow run: `flow_run.id`, `.name`, `.flow_name`, `.parameters`, `.tags`, ...

Outside a flow run, each attribute has an empty value (None, [], {} or 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._context import current_run


def _flow_run() -> Any:
    ctx = current_run.get()
    flow_ctx = ctx.flow_context if ctx is not None else None
    return flow_ctx.flow_run if flow_ctx is not None else None


_ATTRIBUTES: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "id": (lambda r: str(r.id), None),
    "name": (lambda r: r.name, None),
    "flow_name": (lambda r: r.flow_name, None),
    "flow_version": (lambda r: r.flow_version, None),
    "parameters": (lambda r: dict(r.parameters), {}),
    "tags": (lambda r: list(r.tags), []),
    "run_count": (lambda r: r.run_count, 0),
    "parent_flow_run_id": (lambda r: str(r.parent_flow_run_id) if r.parent_flow_run_id else None, None),
}

__all__ = sorted(_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    if name not in _ATTRIBUTES:
        raise AttributeError(f"asyncflow.runtime.flow_run has no attribute {name!r}; available: {__all__}.")
    getter, empty = _ATTRIBUTES[name]
    run = _flow_run()
    return getter(run) if run is not None else (type(empty)() if empty is not None else None)


def __dir__() -> list[str]:
    return __all__
