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
from ._transactions import transaction as transaction

if TYPE_CHECKING:
    from .client import get_client as get_client

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`get_client` is imported on first use: the client (and the store's query layer) is not needed to
    define and run flows, so `import asyncflow` does not pay for it."""
    if name == "get_client":
        from .client import get_client

        globals()["get_client"] = get_client
        return get_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "get_client"})


__all__ = ["Flow", "State", "Task", "allow_failure", "flow", "get_client", "get_run_logger", "tags", "task",
           "transaction", "unmapped"]
