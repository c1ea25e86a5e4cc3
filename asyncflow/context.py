"""The run context (Prefect's `prefect.context`): which flow or task run the current code runs in."""

from ._context import FlowRunContext as FlowRunContext
from ._context import TaskRunContext as TaskRunContext
from ._context import get_run_context as get_run_context
from ._context import tags as tags

__all__ = ["FlowRunContext", "TaskRunContext", "get_run_context", "tags"]
