"""Parameter resolution: futures and states inside a run's parameters become their results.

Two passes: `collect` finds the futures that are not done yet (so the engine can wait for them,
asynchronously or blocking, without holding a thread slot), then `substitute` rebuilds only the
containers that changed: dataclasses with `dataclasses.replace`, named tuples with `_make`, attrs
classes with `attrs.evolve`, pydantic models with `model_construct`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from .._annotations import BaseAnnotation, allow_failure, opaque, quote
from .._exceptions import UpstreamTaskError
from .._futures import TaskRunFuture
from .._states import State

_ATOMS = (int, float, str, bytes, bool, type(None), complex)


def _is_attrs(value: Any) -> bool:
    """An instance of an attrs class, known without importing attrs (imported only for such values)."""
    return getattr(type(value), "__attrs_attrs__", None) is not None


def _is_pydantic(value: Any) -> bool:
    return hasattr(type(value), "model_construct") and hasattr(value, "model_fields_set")


def _children(value: Any) -> Any:
    """The traversable items of a container, or None for a leaf."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    if isinstance(value, dict):
        return [item for pair in value.items() for item in pair]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value) if f.init]
    if _is_attrs(value):
        import attrs

        return [getattr(value, a.name) for a in attrs.fields(type(value)) if a.init]
    if _is_pydantic(value):
        return list(dict(value).values())
    return None


def collect_unfinished(value: Any, found: list[TaskRunFuture[Any]], seen: set[int] | None = None) -> None:
    """Append every future in `value` (recursively) that has not finished yet."""
    if isinstance(value, _ATOMS):
        return
    if isinstance(value, TaskRunFuture):
        if not value.done():
            found.append(value)
        return
    if isinstance(value, quote):
        return
    if isinstance(value, BaseAnnotation):
        inner = value.value
        if isinstance(value, opaque):
            if isinstance(inner, TaskRunFuture) and not inner.done():
                found.append(inner)
            return
        collect_unfinished(inner, found, seen)
        return
    items = _children(value)
    if items is None:
        return
    if seen is None:
        seen = set()
    if id(value) in seen:
        return
    seen.add(id(value))
    for item in items:
        collect_unfinished(item, found, seen)


def unfinished_in(*values: Any) -> list[TaskRunFuture[Any]]:
    """The futures in any of `values` (recursively) that have not finished yet."""
    found: list[TaskRunFuture[Any]] = []
    for value in values:
        collect_unfinished(value, found)
    return found


def has_futures_or_states(value: Any, seen: set[int] | None = None) -> bool:
    if isinstance(value, _ATOMS):
        return False
    if isinstance(value, (TaskRunFuture, State, BaseAnnotation)):
        return True
    items = _children(value)
    if items is None:
        return False
    if seen is None:
        seen = set()
    if id(value) in seen:
        return False
    seen.add(id(value))
    return any(has_futures_or_states(item, seen) for item in items)


class Resolver:
    """Replaces finished futures and states by their results (all futures must be done)."""

    def __init__(self, current_run_id: Any) -> None:
        self.current_run_id = current_run_id
        self.upstream: list[Any] = []

    def leaf(self, state: State[Any], name: str, allow_failed: bool) -> Any:
        if state.is_completed():
            return state._result()
        if allow_failed and state.is_final():
            return state._result(raise_on_failure=False)
        if allow_failed and state.type.value == "PENDING":
            return state.data
        raise UpstreamTaskError(f"Upstream task run '{name}' did not reach a 'COMPLETED' state.")

    def _future_result(self, future: TaskRunFuture[Any], allow_failed: bool) -> Any:
        if future.task_run.id == self.current_run_id:
            raise ValueError(
                f"Task run '{future.task_run.name}' depends on its own future. Raising to avoid a deadlock.")
        if allow_failed:
            future._observed = True  # the downstream receives the exception
        self.upstream.append(future.task_run.id)
        return self.leaf(future._final or future.task_run.state, future.task_run.name, allow_failed)

    def resolve(self, value: Any, allow_failed: bool = False, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, _ATOMS):
            return value
        if isinstance(value, TaskRunFuture):
            return self.resolve(self._future_result(value, allow_failed), allow_failed, memo)
        if isinstance(value, State):
            return self.resolve(self.leaf(value, value.name, allow_failed), allow_failed, memo)
        if isinstance(value, quote):
            return value.value
        if isinstance(value, opaque):  # resolve the top level only, never look inside the result
            inner = value.value
            if isinstance(inner, TaskRunFuture):
                return self._future_result(inner, allow_failed)
            if isinstance(inner, State):
                return self.leaf(inner, inner.name, allow_failed)
            return inner
        if isinstance(value, allow_failure):
            return self.resolve(value.value, True, memo)
        if isinstance(value, BaseAnnotation):
            return self.resolve(value.value, allow_failed, memo)
        return self._container(value, allow_failed, memo)

    def _container(self, value: Any, allow_failed: bool, memo: dict[int, Any] | None) -> Any:
        if memo is None:
            memo = {}
        key = id(value)
        if key in memo:
            return memo[key]
        memo[key] = value  # cycles resolve to the original object
        result = self._rebuild(value, allow_failed, memo)
        memo[key] = result
        return result

    def _rebuild(self, value: Any, allow_failed: bool, memo: dict[int, Any]) -> Any:
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [self.resolve(item, allow_failed, memo) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            if isinstance(value, tuple) and hasattr(type(value), "_make"):
                return cast(Any, type(value))._make(items)  # named tuple
            return type(value)(items)
        if isinstance(value, dict):
            pairs = [(self.resolve(k, allow_failed, memo), self.resolve(v, allow_failed, memo))
                     for k, v in value.items()]
            if all(nk is k and nv is v for (nk, nv), (k, v) in zip(pairs, value.items(), strict=True)):
                return value
            rebuilt = type(value)() if type(value) is not dict else {}
            rebuilt.update(pairs)
            return rebuilt
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = self._changed_fields(value, [f.name for f in dataclasses.fields(value) if f.init],
                                           allow_failed, memo)
            return dataclasses.replace(value, **changes) if changes else value
        if _is_attrs(value):
            import attrs

            changes = self._changed_fields(value, [a.name for a in attrs.fields(type(value)) if a.init],
                                           allow_failed, memo)
            return attrs.evolve(value, **{k.lstrip("_"): v for k, v in changes.items()}) if changes else value
        if _is_pydantic(value):
            changes = self._changed_fields(value, list(dict(value)), allow_failed, memo)
            if not changes:
                return value
            fields = {**dict(value), **changes}
            rebuilt = type(value).model_construct(_fields_set=value.model_fields_set, **fields)
            private = getattr(value, "__pydantic_private__", None)
            if private:
                object.__setattr__(rebuilt, "__pydantic_private__", dict(private))
            return rebuilt
        return value

    def _changed_fields(self, value: Any, names: list[str], allow_failed: bool, memo: dict[int, Any]
                        ) -> dict[str, Any]:
        changes = {}
        for name in names:
            old = getattr(value, name)
            new = self.resolve(old, allow_failed, memo)
            if new is not old:
                changes[name] = new
        return changes
