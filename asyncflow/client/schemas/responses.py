"""Prefect's `prefect.client.schemas.responses`: what the client's global-limit reads return."""

from .._schemas import GlobalConcurrencyLimitResponse as GlobalConcurrencyLimitResponse

__all__ = ["GlobalConcurrencyLimitResponse"]
