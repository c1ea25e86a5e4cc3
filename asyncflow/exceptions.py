"""Every exception asyncflow raises."""

from ._exceptions import AsyncflowError as AsyncflowError
from ._exceptions import BlockingResultError as BlockingResultError
from ._exceptions import BrokerDataError as BrokerDataError
from ._exceptions import BrokerUnavailableError as BrokerUnavailableError
from ._exceptions import CancelledRun as CancelledRun
from ._exceptions import CrashedRun as CrashedRun
from ._exceptions import FailedRun as FailedRun
from ._exceptions import FlowRunTimeoutError as FlowRunTimeoutError
from ._exceptions import InvalidNameError as InvalidNameError
from ._exceptions import LostRunError as LostRunError
from ._exceptions import MappingLengthMismatch as MappingLengthMismatch
from ._exceptions import MappingMissingIterable as MappingMissingIterable
from ._exceptions import MappingTooLarge as MappingTooLarge
from ._exceptions import MissingContextError as MissingContextError
from ._exceptions import ParameterBindError as ParameterBindError
from ._exceptions import ReservedArgumentError as ReservedArgumentError
from ._exceptions import ResultRecordError as ResultRecordError
from ._exceptions import ResultWriteError as ResultWriteError
from ._exceptions import RunStateError as RunStateError
from ._exceptions import ScopeClosedError as ScopeClosedError
from ._exceptions import TaskRunTimeoutError as TaskRunTimeoutError
from ._exceptions import UnfinishedRun as UnfinishedRun
from ._exceptions import UpstreamTaskError as UpstreamTaskError
from ._settings import SettingError as SettingError
from ._store.base import ObjectAlreadyExists as ObjectAlreadyExists
from ._store.base import ObjectNotFound as ObjectNotFound
from ._store.base import StoreError as StoreError

__all__ = [
    "AsyncflowError", "BlockingResultError", "BrokerDataError", "BrokerUnavailableError", "CancelledRun",
    "CrashedRun", "FailedRun", "FlowRunTimeoutError", "InvalidNameError", "LostRunError",
    "MappingLengthMismatch", "MappingMissingIterable", "MappingTooLarge", "MissingContextError",
    "ObjectAlreadyExists", "ObjectNotFound", "ParameterBindError", "ReservedArgumentError", "ResultRecordError",
    "ResultWriteError",
    "RunStateError", "ScopeClosedError", "SettingError", "StoreError", "TaskRunTimeoutError", "UnfinishedRun",
    "UpstreamTaskError",
]
