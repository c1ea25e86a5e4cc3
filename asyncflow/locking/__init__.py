"""Lock managers (Prefect's `prefect.locking`): what takes the turns of `SERIALIZABLE` runs with the same
cache key when a policy is configured with one (`INPUTS.configure(isolation_level="SERIALIZABLE",
lock_manager=FileSystemLockManager(lock_files_directory=...))`). Without one, asyncflow uses its own
file lock under the storage path."""

from ._managers import FileSystemLockManager as FileSystemLockManager
from ._managers import LockManager as LockManager
from ._managers import MemoryLockManager as MemoryLockManager

__all__ = ["FileSystemLockManager", "LockManager", "MemoryLockManager"]
