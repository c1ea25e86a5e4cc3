"""Prefect's `prefect.flows` import path."""

from ._flows import Flow as Flow
from ._flows import flow as flow

__all__ = ["Flow", "flow"]
