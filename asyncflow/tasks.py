"""Prefect's `prefect.tasks` import path."""

from ._engine.retry import exponential_backoff as exponential_backoff
from ._hashing import task_input_hash as task_input_hash
from ._tasks import Task as Task
from ._tasks import task as task

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]
