"""Prefect's `prefect.client.schemas.objects`: what the client's tag-limit reads return."""

from .._schemas import ConcurrencyLimit as ConcurrencyLimit

__all__ = ["ConcurrencyLimit"]
