"""Prefect's `prefect.client.schemas`: the objects the client takes and returns (concurrency limits)."""

from .._schemas import ConcurrencyLimit as ConcurrencyLimit
from .._schemas import ConcurrencyLimitCreate as ConcurrencyLimitCreate
from .._schemas import GlobalConcurrencyLimitCreate as GlobalConcurrencyLimitCreate
from .._schemas import GlobalConcurrencyLimitResponse as GlobalConcurrencyLimitResponse
from .._schemas import GlobalConcurrencyLimitUpdate as GlobalConcurrencyLimitUpdate

__all__ = ["ConcurrencyLimit", "ConcurrencyLimitCreate", "GlobalConcurrencyLimitCreate",
           "GlobalConcurrencyLimitResponse", "GlobalConcurrencyLimitUpdate"]
