"""asyncflow: tracked, cacheable, retryable, time-limited tasks and flows on anyio (asyncio and trio)."""

from typing import TYPE_CHECKING

from ._annotations import allow_failure as allow_failure
from ._annotations import unmapped as unmapped
from ._context import tags as tags
from ._flows import Flow as Flow
from ._flows import flow as flow
from ._logging import get_run_logger as get_run_logger
from ._states import State as State
from ._tasks import Task as Task
from ._tasks import task as task

if TYPE_CHECKING:
    from ._transactions import transaction as transaction
    from .client import get_client as get_client

__version__ = "0.1.0"


# imported on first use: defining and running flows needs neither the client (and the store's query
# layer) nor transactions, so `import asyncflow` does not pay for them
_LAZY = {"get_client": "client", "transaction": "_transactions"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["Flow", "State", "Task", "allow_failure", "flow", "get_client", "get_run_logger", "tags", "task",
           "transaction", "unmapped"]
