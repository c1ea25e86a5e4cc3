"""Binding call arguments to a function's parameters, fast for plain signatures."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from ._exceptions import ParameterBindError, ReservedArgumentError

_RESERVED = ("wait_for", "return_state")
_POK = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KW = inspect.Parameter.KEYWORD_ONLY
_VAR_POS = inspect.Parameter.VAR_POSITIONAL
_VAR_KW = inspect.Parameter.VAR_KEYWORD
_EMPTY = inspect.Parameter.empty


class Binder:
    """Turns `(args, kwargs)` into a parameters dict (defaults applied) and back."""

    def __init__(self, fn: Callable[..., Any], label: str) -> None:
        self.label = label
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        for p in params:
            if p.name in _RESERVED:
                raise ReservedArgumentError(
                    f"'{p.name}' is a reserved argument name and cannot be used: {label} has a parameter "
                    f"named '{p.name}'. Rename it (asyncflow uses `{p.name}=` on every call).")
        self.names = tuple(p.name for p in params)
        self.simple = all(p.kind in (_POK, _KW) for p in params)
        self.positional = tuple(p.name for p in params if p.kind == _POK)
        self.defaults = {p.name: p.default for p in params if p.default is not _EMPTY}
        self.var_positional = next((p.name for p in params if p.kind == _VAR_POS), None)
        self.var_keyword = next((p.name for p in params if p.kind == _VAR_KW), None)
        self.needs_positional_call = any(
            p.kind in (inspect.Parameter.POSITIONAL_ONLY, _VAR_POS) for p in params)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.simple and len(args) <= len(self.positional):
            params = dict(zip(self.positional, args, strict=False))  # fewer args than names is fine
            for key, value in kwargs.items():
                if key in params or key not in self.names:
                    return self._slow_bind(args, kwargs)
                params[key] = value
            # keywords out of order, or defaults filled in after them: put the parameters in the
            # signature's order, as Prefect gives them to cache_key_fn (`f(c=3, a=1, b=2)`: a, b, c)
            if len(params) < len(self.names):
                for name, default in self.defaults.items():
                    if name not in params:
                        params[name] = default
                if len(params) < len(self.names):
                    return self._slow_bind(args, kwargs)
                if kwargs:
                    params = {name: params[name] for name in self.names}
            elif len(kwargs) > 1:
                params = {name: params[name] for name in self.names}
            return params
        return self._slow_bind(args, kwargs)

    def _slow_bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterBindError(f"Cannot call {self.label} with these arguments: {exc}.") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def to_call(self, params: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The `(args, kwargs)` that call the function with these parameters."""
        if self.simple:
            return (), params
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self.signature.parameters.values():
            if p.name not in params:
                continue
            value = params[p.name]
            if p.kind == _VAR_POS:
                args.extend(value)
            elif p.kind == _VAR_KW:
                kwargs.update(value)
            elif p.kind == inspect.Parameter.POSITIONAL_ONLY or (p.kind == _POK and self.needs_positional_call):
                args.append(value)
            else:
                kwargs[p.name] = value
        return tuple(args), kwargs


def callable_name(fn: Any) -> str:
    if hasattr(fn, "__name__"):
        return fn.__name__
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None:
        return callable_name(inner)
    return type(fn).__name__


def validate_hooks(hooks: Any, option: str, decorator: str) -> list[Callable[..., Any]]:
    if hooks is None:
        return []
    if callable(hooks) or not hasattr(hooks, "__iter__") or isinstance(hooks, (str, bytes)):
        raise TypeError(
            f"Expected iterable for '{option}'; got {type(hooks).__name__} instead. Please provide a list "
            f"of hooks to '{option}':\n\n@{decorator}({option}=[hook1, hook2])\ndef my_{decorator}():\n\tpass")
    hooks = bounded_items(f"@{decorator}", option, hooks, 1000, "hooks")  # not an infinite iterator
    for hook in hooks:
        if not callable(hook):
            raise TypeError(
                f"Expected callables in '{option}'; got {type(hook).__name__} instead. Please provide a list "
                f"of hooks to '{option}':\n\n@{decorator}({option}=[hook1, hook2])\ndef my_{decorator}():\n\tpass")
    return hooks


class HookList(list):  # type: ignore[type-arg]
    """A run's hooks. Also a decorator: `@my_task.on_failure` appends the decorated function."""

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"A hook must be callable; got {fn!r}.")
        self.append(fn)
        return fn


def check_count(owner: str, option: str, value: Any) -> int:
    """An option that must be an integer >= 0 (`retries`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: `{option}` must be an integer >= 0; got {value!r}.")
    return value


ONE_DAY = 86_400
ONE_YEAR = 365 * ONE_DAY
_LIMIT_NAMES: dict[float, str] = {ONE_DAY: "one day", ONE_YEAR: "one year"}


def check_seconds(owner: str, option: str, value: Any, maximum: float = ONE_DAY) -> float:
    """An option that must be a number of seconds from 0 to `maximum` (`timeout_seconds`,
    `retry_delay_seconds`): a larger one overflows the clocks and waits that the engine uses."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if not ok or not 0 <= value <= maximum:  # ints are compared exactly: 10**400 must not reach float()
        limit = f" ({_LIMIT_NAMES[maximum]})" if maximum in _LIMIT_NAMES else ""
        raise ValueError(f"{owner}: `{option}` must be a finite number from 0 to {maximum:.0f}{limit}; got "
                         f"{_short(value)}.")
    return float(value)


def bounded_items(owner: str, option: str, value: Any, limit: int, what: str) -> list[Any]:
    """The items of an iterable option, taking at most `limit + 1` of them: an infinite iterator
    (`itertools.repeat("a")`) is refused instead of filling memory."""
    import itertools

    try:
        items = list(itertools.islice(value, limit + 1))
    except Exception as exc:  # the value's own __iter__ or generator failed
        raise TypeError(f"{owner}: `{option}` must be a list of {what}; taking them from "
                        f"{type(value).__name__} raised {type(exc).__name__}: {exc}") from exc
    if len(items) > limit:
        raise ValueError(f"{owner}: `{option}`: more than {limit} {what}; give a list of at most {limit}.")
    return items


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut when long (a huge int or list)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:60] + f"... ({type(value).__name__})"


MAX_TAGS = 1000


def check_tags(owner: str, tags: Any) -> frozenset[str]:
    """`tags=`: a list (or set, tuple, generator) of strings. Anything else fails here, at definition,
    never in the engine (mixed types made every call fail when the tags were sorted)."""
    if tags is None:
        return frozenset()
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of strings, not a single string: use tags=[{tags!r}].")
    fix = "for example tags=['etl', 'nightly']"
    if isinstance(tags, (bytes, bytearray, dict)) or not hasattr(tags, "__iter__"):
        raise TypeError(f"{owner}: `tags` must be a list of strings ({fix}); got {type(tags).__name__} "
                        f"{_short(tags)}.")
    items = bounded_items(owner, "tags", tags, MAX_TAGS, "tags")
    for tag in items:
        if not isinstance(tag, str):
            raise TypeError(f"{owner}: `tags` must be a list of strings ({fix}); {_short(tag)} of type "
                            f"{type(tag).__name__} is not a string.")
    return frozenset(items)


def check_run_name(owner: str, option: str, value: Any) -> None:
    """`task_run_name=` / `flow_run_name=` given as a string: not empty, no NUL (a callable is checked
    when it is called)."""
    if callable(value) and not isinstance(value, str):
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):  # some builtins have none: they are checked when called
            return
        attempts: tuple[dict[str, Any], ...] = ({}, {"parameters": {}})
        for attempt in attempts:
            try:
                signature.bind(**attempt)
                return
            except TypeError:
                continue
        raise TypeError(f"{owner}: the `{option}` callable {_short(value)} must take no arguments, or one "
                        f"argument named `parameters` (the run's parameters); its signature is {signature}.")
    if not isinstance(value, str):
        return
    if not value.strip():
        raise ValueError(f"{owner}: `{option}` must not be empty; give a name or a template such as "
                         f"'{{x}}-run', or leave it out for a generated name.")
    if "\x00" in value:
        raise ValueError(f"{owner}: `{option}` must not contain a NUL character; got {_short(value)}.")


def check_text(owner: str, option: str, value: Any) -> None:
    """`version=` / `description=`: a string or None (the store keeps the version as text)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{owner}: `{option}` must be a string or None; got {type(value).__name__} "
                        f"{_short(value)} (write {option}={str(_short(value))!r} if you mean the text).")
