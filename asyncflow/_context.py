"""Run context lives in contextvars only: the current run and the tags of `with tags(...)`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._engine.children import ChildTracker
    from ._engine.scope import Scope
    from ._protocols import EngineRunner
    from ._runs import FlowRun, TaskRun
    from ._transactions import Transaction

current_run: ContextVar[RunContext | None] = ContextVar("asyncflow_current_run", default=None)
current_tags: ContextVar[frozenset[str]] = ContextVar("asyncflow_tags", default=frozenset())
# the innermost open transaction (`_transactions`); here so that the engine reads it without importing them
current_transaction: ContextVar[Transaction | None] = ContextVar("asyncflow_transaction", default=None)


@contextlib.contextmanager
def tags(*new_tags: str) -> Iterator[frozenset[str]]:
    """Add tags to every run created inside the block (nested blocks add up)."""
    for tag in new_tags:
        if not isinstance(tag, str):
            raise TypeError(f"tags() takes strings; got {tag!r} of type {type(tag).__name__}.")
    merged = current_tags.get() | frozenset(new_tags)
    token = current_tags.set(merged)
    try:
        yield merged
    finally:
        current_tags.reset(token)


class RunContext:
    """What the engine knows about the run that is executing user code right now."""

    __slots__ = ("parent", "log_prints", "scope", "children", "flow_context", "_logger")

    def __init__(self, parent: RunContext | None, log_prints: bool, scope: Scope | None) -> None:
        self.parent = parent
        self.log_prints = log_prints
        self.scope = scope
        self.children: ChildTracker | None = None  # created at the first submit
        self.flow_context: FlowRunContext | None = parent.flow_context if parent is not None else None
        self._logger: Any = None

    @property
    def logger(self) -> Any:
        raise NotImplementedError


class FlowRunContext(RunContext):
    __slots__ = ("flow", "flow_run", "task_runner", "run_counters", "label", "ids", "subflow_calls",
                 "completed_subflows")

    def __init__(self, flow: Any, flow_run: FlowRun, parent: RunContext | None, log_prints: bool,
                 scope: Scope | None, task_runner: EngineRunner | None, ids: dict[str, Any] | None = None) -> None:
        super().__init__(parent, log_prints, scope)
        self.flow_context = self
        self.flow = flow
        self.flow_run = flow_run
        self.task_runner = task_runner  # None only in a task worker's copy of its flow's context
        self.run_counters: dict[str, Any] = {}  # task key -> itertools.count
        self.label = f"Flow run '{flow_run.name}'"  # set again once the run is named
        # the run's ids for its log lines (the engine passes the dict its flow call already made)
        self.ids = ids if ids is not None else {"flow_run_id": str(flow_run.id)}
        # a flow with retries: its subflow calls in this attempt, and the subflows that completed in its
        # attempts so far (`_engine/reuse.py`)
        self.subflow_calls: dict[Any, Any] | None = None
        self.completed_subflows: dict[Any, Any] | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        return self.flow_run.parameters

    @classmethod
    def get(cls) -> FlowRunContext | None:
        """The flow run the current code runs in (also inside its tasks), or None (Prefect's
        `FlowRunContext.get()`)."""
        ctx = current_run.get()
        return ctx.flow_context if ctx is not None else None

    @property
    def logger(self) -> Any:
        if self._logger is None:
            from ._logging import base_logger

            self._logger = base_logger().bind(
                label=f"Flow run '{self.flow_run.name}'", flow_run_id=str(self.flow_run.id))
        return self._logger


class TaskRunContext(RunContext):
    __slots__ = ("task", "task_run", "parameters")

    def __init__(self, task: Any, task_run: TaskRun, parameters: dict[str, Any], parent: RunContext | None,
                 log_prints: bool, scope: Scope | None) -> None:
        super().__init__(parent, log_prints, scope)
        self.task = task
        self.task_run = task_run
        self.parameters = parameters

    @classmethod
    def get(cls) -> TaskRunContext | None:
        """The task run the current code runs in, or None (in a flow's own code, or outside any run;
        Prefect's `TaskRunContext.get()`)."""
        ctx = current_run.get()
        return ctx if isinstance(ctx, TaskRunContext) else None

    @property
    def logger(self) -> Any:
        if self._logger is None:
            from ._logging import base_logger

            run = self.task_run
            self._logger = base_logger().bind(
                label=f"Task run '{run.name}'", task_run_id=str(run.id),
                flow_run_id=str(run.flow_run_id) if run.flow_run_id else None)
        return self._logger


def get_run_context() -> FlowRunContext | TaskRunContext:
    """The run the current code runs in: its task run inside a task, its flow run in a flow's own code
    (also a subflow called inside a task); raises MissingContextError outside any run."""
    from ._exceptions import MissingContextError

    ctx = current_run.get()
    if ctx is None:
        raise MissingContextError(
            "No run context available: get_run_context() was called outside of a flow or task run. Call it "
            "inside a function decorated with @flow or @task.")
    return ctx  # type: ignore[return-value]
