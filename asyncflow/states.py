"""States and their constructors (Prefect's `prefect.states`)."""

from ._states import AwaitingRetry as AwaitingRetry
from ._states import Cached as Cached
from ._states import Cancelled as Cancelled
from ._states import Cancelling as Cancelling
from ._states import Completed as Completed
from ._states import Crashed as Crashed
from ._states import Failed as Failed
from ._states import NotReady as NotReady
from ._states import Paused as Paused
from ._states import Pending as Pending
from ._states import Retrying as Retrying
from ._states import Running as Running
from ._states import Scheduled as Scheduled
from ._states import State as State
from ._states import StateDetails as StateDetails
from ._states import StateType as StateType
from ._states import TimedOut as TimedOut

__all__ = [
    "AwaitingRetry", "Cached", "Cancelled", "Cancelling", "Completed", "Crashed", "Failed", "NotReady", "Paused",
    "Pending", "Retrying", "Running", "Scheduled", "State", "StateDetails", "StateType", "TimedOut",
]
