"""The engine's interfaces, as protocols: what the engine uses of a task runner, of a thread's runner
slot and of a dispatcher. The engine holds these objects typed by what it calls on them (never `Any`), so
a runner that lacks something the engine calls is a type error, not an AttributeError mid-run."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._runners.work import Outcome, WorkItem
    from .task_runners import Capabilities


class ThreadSlotHolder(Protocol):
    """A thread's hold on one of its runner's slots. A thread that blocks on another run hands its slot
    back for the wait (so a bounded runner never deadlocks on nested submissions)."""

    def release_while_blocked(self) -> None: ...

    def reacquire(self) -> None: ...


class Dispatcher(Protocol):
    """Where a submitted sync run executes whole, engine and user code, in one of the runner's threads."""

    def submit(self, job: Callable[[], None]) -> None: ...


class EngineRunner(Protocol):
    """What the engine uses of a flow's task runner (asyncflow.task_runners.TaskRunner implements it).

    A ticket is the runner's own opaque token for a submitted run: `ticket()` hands it out in submission
    order (None: the runner keeps no slots), `execution_slot(ticket)` holds the run's slot while it
    executes, `release(ticket)` forgets it once the run is over."""

    @property
    def capabilities(self) -> Capabilities: ...

    def ticket(self) -> object | None: ...

    def execution_slot(self, ticket: Any) -> AbstractAsyncContextManager[None]: ...

    def release(self, ticket: Any) -> None: ...

    async def submit(self, item: WorkItem) -> Outcome: ...

    def run_inline(self, item: WorkItem) -> Outcome: ...

    def dispatcher(self) -> Dispatcher | None: ...

    def duplicate(self) -> EngineRunner: ...

    async def __aenter__(self) -> EngineRunner: ...

    async def __aexit__(self, *exc_info: Any) -> None: ...
