"""Prefect's `prefect.client.schemas.actions`: what the client's create and update calls take."""

from .._schemas import ConcurrencyLimitCreate as ConcurrencyLimitCreate
from .._schemas import GlobalConcurrencyLimitCreate as GlobalConcurrencyLimitCreate
from .._schemas import GlobalConcurrencyLimitUpdate as GlobalConcurrencyLimitUpdate

__all__ = ["ConcurrencyLimitCreate", "GlobalConcurrencyLimitCreate", "GlobalConcurrencyLimitUpdate"]
