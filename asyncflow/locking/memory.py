"""Prefect's path `prefect.locking.memory`."""

from ._managers import MemoryLockManager as MemoryLockManager

__all__ = ["MemoryLockManager"]
