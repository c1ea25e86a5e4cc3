"""One exception tree for asyncflow. Every error names the culprit and the fix."""

from __future__ import annotations


class AsyncflowError(Exception):
    """Base class of every error raised by asyncflow itself."""


class ReservedArgumentError(AsyncflowError, TypeError):
    """A task or flow function uses a parameter name that asyncflow reserves."""


class InvalidNameError(AsyncflowError, ValueError):
    """A flow or task name contains characters that are not allowed."""


class ParameterBindError(AsyncflowError, TypeError):
    """The arguments of a call do not fit the function's signature."""


class MappingMissingIterable(AsyncflowError, ValueError):
    """`.map()` was called without any iterable argument."""


class MappingLengthMismatch(AsyncflowError, ValueError):
    """`.map()` was called with iterables of different lengths."""


class MappingTooLarge(AsyncflowError, ValueError):
    """`.map()` was given an iterable with more items than ASYNCFLOW_MAP_MAX_ITEMS (an infinite one, say)."""


class MissingContextError(AsyncflowError, RuntimeError):
    """A run-scoped API was used outside of any flow or task run."""


class ScopeClosedError(AsyncflowError, RuntimeError):
    """A run was submitted into a flow run (or task run) that has already ended."""


class UpstreamTaskError(AsyncflowError):
    """An upstream run did not complete, so this run cannot start."""


class BlockingResultError(AsyncflowError, RuntimeError):
    """A blocking wait was attempted on the event-loop thread."""


class RunStateError(AsyncflowError):
    """Base for errors raised by `State.result()` when no user exception is available."""


class FailedRun(RunStateError):
    """The run failed and its state carries no exception object."""


class CrashedRun(RunStateError):
    """The run was interrupted (KeyboardInterrupt, cancellation, a BaseException)."""


class CancelledRun(RunStateError):
    """The run was cancelled."""


class UnfinishedRun(RunStateError):
    """The run has not reached a final state, so it has no result yet."""


class TaskRunTimeoutError(AsyncflowError, TimeoutError):
    """A task run exceeded its `timeout_seconds`."""


class FlowRunTimeoutError(AsyncflowError, TimeoutError):
    """A flow run exceeded its `timeout_seconds`."""


class ResultRecordError(AsyncflowError):
    """A persisted result cannot be used: missing, unreadable, damaged, written with another serializer
    or by an asyncflow without checksums. `path` is the record's file."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"The persisted result at {path} cannot be used: {reason}.")


class ResultWriteError(AsyncflowError):
    """A task's result could not be written to its storage path (full, read-only, no permission...).
    `path` is the record's file, `errno` the cause's error number; the OSError is its `__cause__`."""

    def __init__(self, path: object, message: str, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class BrokerUnavailableError(AsyncflowError, ConnectionError):
    """The broker of background runs cannot be reached or opened (Redis down, a bad SQLite path).
    The message names the broker (a Redis URL without its password, or the SQLite file) and the fix."""


class BrokerDataError(AsyncflowError, RuntimeError):
    """What the broker holds for a background run cannot be used: a damaged payload or result (its
    checksum does not match), an unknown state, or a result that cannot be loaded in this process."""


class LostRunError(AsyncflowError, RuntimeError):
    """The broker does not know a background run (its record was deleted, pruned, or lost by a Redis
    without persistence) for longer than ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS."""


class ConcurrencySlotAcquisitionError(AsyncflowError):
    """Concurrency slots cannot be acquired: the limits do not exist (with `strict=True`), more slots are
    asked for than the limit has, `rate_limit` on a limit without slot decay, or no retries are left."""


class AcquireConcurrencySlotTimeoutError(AsyncflowError, TimeoutError):
    """Waiting for concurrency slots took longer than `timeout_seconds`."""
