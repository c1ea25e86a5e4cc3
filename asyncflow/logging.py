"""Loggers (Prefect's `prefect.logging`)."""

from ._logging import get_logger as get_logger
from ._logging import get_run_logger as get_run_logger

__all__ = ["get_logger", "get_run_logger"]
