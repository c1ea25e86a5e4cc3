"""Prefect's path `prefect.locking.filesystem`."""

from ._managers import FileSystemLockManager as FileSystemLockManager

__all__ = ["FileSystemLockManager"]
