"""asyncflow: tracked, cacheable, retryable, time-limited tasks and flows on anyio (asyncio and trio)."""

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
from .client import get_client as get_client

__version__ = "0.1.0"

__all__ = ["Flow", "State", "Task", "allow_failure", "flow", "get_client", "get_run_logger", "tags", "task",
           "transaction", "unmapped"]
