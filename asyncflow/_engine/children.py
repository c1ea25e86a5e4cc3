"""Children of a run: the futures it submitted. A run waits for all of them before it ends, and
reports failures that nobody observed (errors never vanish)."""

from __future__ import annotations

from typing import Any

from .._futures import TaskRunFuture


class ChildTracker:
    __slots__ = ("pending", "failed")

    def __init__(self) -> None:
        self.pending: dict[TaskRunFuture[Any], None] = {}
        self.failed: dict[TaskRunFuture[Any], None] = {}

    def add(self, future: TaskRunFuture[Any]) -> None:
        self.pending[future] = None

    def finished(self, future: TaskRunFuture[Any]) -> None:
        """Called by the future's done-callback, and again by the waits below (idempotent): a waiter
        can see a future done before its callbacks have run, and must still see its failure."""
        if future._final is not None and future._final.type.value in ("FAILED", "CRASHED"):
            self.failed[future] = None
        self.pending.pop(future, None)  # after recording: nobody sees it gone but its failure unrecorded

    def _waiting(self) -> list[TaskRunFuture[Any]]:
        """The futures still pending, oldest first: waited for in one pass, then again for those
        submitted meanwhile. (Not the first key of `pending` each time: a dict emptied from its front
        walks every deleted slot to find it, which made a flow's end quadratic in its pending runs.)"""
        while True:
            try:
                return list(self.pending)
            except RuntimeError:  # resized by another thread while we looked
                continue

    async def wait_all(self) -> None:
        while waiting := self._waiting():
            for future in waiting:
                if future in self.pending:
                    await future.wait_async(settled=True)  # a run has ended when its done callbacks have run
                    self.finished(future)

    def wait_all_blocking(self) -> None:
        while waiting := self._waiting():
            for future in waiting:
                if future in self.pending:
                    future._block(None, "wait", settled=True)
                    self.finished(future)

    def unobserved_failures(self) -> list[TaskRunFuture[Any]]:
        return [f for f in self.failed if not f._observed]
