"""Loggers (Prefect's `prefect.logging`)."""

from ._logging import disable_run_logger as disable_run_logger
from ._logging import get_logger as get_logger
from ._logging import get_run_logger as get_run_logger

__all__ = ["disable_run_logger", "get_logger", "get_run_logger"]
