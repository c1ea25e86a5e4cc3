"""Futures of submitted task runs (Prefect's `prefect.futures`)."""

from ._futures import DoneAndNotDoneFutures as DoneAndNotDoneFutures
from ._futures import TaskRunFuture as PrefectFuture  # Prefect's name, for code that imports it
from ._futures import TaskRunFuture as TaskRunFuture
from ._futures import TaskRunFutureList as TaskRunFutureList
from ._futures import as_completed as as_completed
from ._futures import wait as wait

__all__ = ["DoneAndNotDoneFutures", "PrefectFuture", "TaskRunFuture", "TaskRunFutureList", "as_completed", "wait"]
