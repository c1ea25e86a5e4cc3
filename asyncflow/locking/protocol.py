"""Prefect's path `prefect.locking.protocol`."""

from ._managers import LockManager as LockManager

__all__ = ["LockManager"]
