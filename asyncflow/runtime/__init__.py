"""Information about the current run: `from asyncflow.runtime import flow_run, task_run`."""

from . import flow_run, task_run

__all__ = ["flow_run", "task_run"]
