"""`.map()`: one submitted run per item; iterables are zipped, everything else is broadcast."""

from __future__ import annotations

import itertools
from typing import Any

from .. import _settings
from .._annotations import BaseAnnotation, allow_failure, quote, unmapped
from .._exceptions import MappingLengthMismatch, MappingMissingIterable, MappingTooLarge
from .._futures import TaskRunFuture, TaskRunFutureList
from .._states import State
from .task_run import submit


def _is_iterable(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict)) or hasattr(value, "read"):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _failed(value: Any) -> bool:
    """A future (waited for) or state that did not complete: under allow_failure it is passed as is."""
    if isinstance(value, TaskRunFuture):
        value.wait()
        value = value.state
    return isinstance(value, State) and not value.is_completed()


def _materialise(value: Any) -> Any:
    """Futures and states given at top level are resolved so that their data can be iterated."""
    if isinstance(value, TaskRunFuture):
        return value.result()
    if isinstance(value, State):
        return value._result()
    return value


def _items(task: Any, name: str, value: Any, cap: int) -> list[Any]:
    """The items of one mapped iterable, taking at most `cap + 1` of them: an infinite or huge iterable
    is refused before it fills memory."""
    try:
        size: int | None = len(value)
    except (TypeError, OverflowError):  # a generator has no length; range(10**19) cannot say it
        size = cap + 1 if isinstance(value, range) else None
    items = None
    if size is None:
        items = list(itertools.islice(value, cap + 1))
        size = len(items)
    if size > cap:
        raise MappingTooLarge(
            f"{task.name}.map() got more than {cap} items for {name!r}; asyncflow takes at most "
            f"ASYNCFLOW_MAP_MAX_ITEMS={cap} items per map (an infinite iterable such as itertools.count() "
            "would fill memory). Map over a finite list (itertools.islice(it, n)), split the work into "
            "batches, or raise the setting.")
    return items if items is not None else list(value)


def map_task(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], in_async_code: bool,
             submit_one: Any = submit) -> TaskRunFutureList:
    wait_for = kwargs.pop("wait_for", None)
    return_state = kwargs.pop("return_state", False)
    binder = task.binder
    # bind without defaults so that defaults are never mapped
    try:
        bound = binder.signature.bind_partial(*args, **kwargs).arguments
    except TypeError as exc:
        from .._exceptions import ParameterBindError

        raise ParameterBindError(f"Cannot map task {task.name!r} with these arguments: {exc}.") from None
    var_kw = binder.var_keyword
    if var_kw and var_kw in bound:
        bound = {**{k: v for k, v in bound.items() if k != var_kw}, **bound[var_kw]}
    cap = _settings.MAP_MAX_ITEMS.value()
    iterables: dict[str, list[Any]] = {}
    static: dict[str, Any] = {}
    annotations: dict[str, type[BaseAnnotation[Any]]] = {}
    for name, value in bound.items():
        if isinstance(value, unmapped):
            static[name] = value.value
            continue
        wrapper = None
        if isinstance(value, BaseAnnotation) and not isinstance(value, quote):
            wrapper = type(value)
            value = value.value
        elif isinstance(value, quote):
            wrapper, value = quote, value.value
        if wrapper is allow_failure and _failed(value):  # broadcast: every run gets the failure
            static[name] = allow_failure(value)
            continue
        value = _materialise(value)
        if _is_iterable(value):
            iterables[name] = _items(task, name, value, cap)
            if wrapper is not None:
                annotations[name] = wrapper
        else:
            static[name] = wrapper(value) if wrapper is not None else value
    if not iterables:
        raise MappingMissingIterable(
            f"No iterable arguments were received for {task.name}.map(): give at least one list, tuple or "
            f"other iterable (strings and dicts are broadcast; wrap a value in unmapped() to broadcast it). "
            f"Got: {sorted(bound)}.")
    lengths = {name: len(values) for name, values in iterables.items()}
    if len(set(lengths.values())) > 1:
        raise MappingLengthMismatch(
            f"Received iterable arguments of different lengths for {task.name}.map(): {lengths}. Give iterables of "
            f"the same length, or wrap the ones to broadcast in unmapped().")
    size = next(iter(lengths.values()))
    futures: TaskRunFutureList[Any] = TaskRunFutureList()
    for i in range(size):
        call_kwargs = dict(static)
        for name, values in iterables.items():
            item = values[i]
            wrapper = annotations.get(name)
            call_kwargs[name] = wrapper(item) if wrapper is not None else item
        args_i, kwargs_i = _split_var_keyword(binder, call_kwargs)
        parameters = binder.bind(args_i, kwargs_i)
        futures.append(submit_one(task, parameters, wait_for))
    if return_state:
        if in_async_code:  # the calling rule: awaitable in async code
            return _await_states(futures)  # type: ignore[return-value]
        futures.wait()
        return [f.state for f in futures]  # type: ignore[return-value]
    return futures


async def _await_states(futures: TaskRunFutureList) -> list[State[Any]]:
    for future in futures:
        await future.wait_async()
    return [future.state for future in futures]


def _split_var_keyword(binder: Any, call_kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args: tuple[Any, ...] = ()
    if binder.var_positional and binder.var_positional in call_kwargs:
        args = tuple(call_kwargs.pop(binder.var_positional))
        positional = [n for n in binder.positional if n in call_kwargs]
        args = tuple(call_kwargs.pop(n) for n in positional) + args
    return args, call_kwargs
