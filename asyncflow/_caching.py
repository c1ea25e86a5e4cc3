"""Cache keys: policies that turn a run into a key, and stable hashes of Python values.

A key is computed from parts (the inputs, the task's code, the run id, ...). When a part cannot be
hashed, the key is NOT computed from the remaining parts: caching is off for that run, and a warning
names the part (Prefect #15861 served wrong results from such degraded keys).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import inspect
import json
import pathlib
import types
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import attrs

from ._digest import code_digest as _code_digest
from ._digest import md5
from ._values import Value


class UnhashableKeyPart(Exception):
    """A part of a cache key could not be hashed; caching is disabled for the run."""

    def __init__(self, what: str, value: Any, reason: str = "") -> None:
        self.what = what
        self.type_name = type(value).__name__
        super().__init__(f"{what} of type {self.type_name} cannot be hashed{': ' + reason if reason else ''}")


def _canonical(value: Any, what: str, depth: int = 0) -> Any:
    """A JSON-able form of `value` that keeps types apart: `{1: 'a'}` and `{'1': 'a'}`, a tuple and a
    list, a date and its ISO string never encode alike. Unknown objects are pickled (never repr'd:
    two objects with the same repr are not the same input)."""
    if depth > 100:
        raise UnhashableKeyPart(what, value, "nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, str):
        return value
    if kind is int:
        return ["int", str(value)]  # ints as text: no float rounding, never equal to a float or str
    if kind is float:
        return ["float", repr(value)]
    if kind in (list, tuple):
        return [kind.__name__, [_canonical(v, what, depth + 1) for v in value]]
    if kind in (set, frozenset):
        items = [_canonical(v, what, depth + 1) for v in value]
        return [kind.__name__, sorted(items, key=lambda i: json.dumps(i, sort_keys=True))]
    if kind is dict:
        pairs = [[_canonical(k, what, depth + 1), _canonical(v, what, depth + 1)] for k, v in value.items()]
        return ["dict", sorted(pairs, key=lambda p: json.dumps(p[0], sort_keys=True))]
    if isinstance(value, (bytes, bytearray)):
        return [kind.__name__, value.hex()]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return [kind.__name__, value.isoformat()]
    if isinstance(value, (uuid.UUID, pathlib.PurePath, dt.timedelta)):
        return [kind.__name__, str(value)]
    if isinstance(value, enum.Enum):
        return ["enum", f"{kind.__module__}.{kind.__qualname__}", _canonical(value.value, what, depth + 1)]
    qualname = f"{kind.__module__}.{kind.__qualname__}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return ["dataclass", qualname, _canonical(fields, what, depth + 1)]
    if attrs.has(kind):
        fields = {a.name: getattr(value, a.name) for a in attrs.fields(kind)}
        return ["attrs", qualname, _canonical(fields, what, depth + 1)]
    if isinstance(value, Value):  # asyncflow's records (attrs classes before): the same keys
        fields = dict(zip(kind._fields, kind._astuple(value), strict=True))
        return ["attrs", qualname, _canonical(fields, what, depth + 1)]
    if hasattr(value, "model_dump") and hasattr(kind, "model_fields"):
        return ["pydantic", qualname, _canonical(value.model_dump(), what, depth + 1)]
    import cloudpickle  # only for values nothing above covers: not on asyncflow's import path

    try:
        return ["pickle", qualname, md5(cloudpickle.dumps(value)).hexdigest()]
    except Exception as exc:  # locks, sockets, open files, generators...
        raise UnhashableKeyPart(what, value, f"{type(exc).__name__}: {exc}") from None


def stable_hash(value: Any, what: str) -> str:
    """md5 of a canonical, type-keeping encoding of `value`; raises UnhashableKeyPart naming `what`."""
    payload = json.dumps(_canonical(value, what), sort_keys=True, separators=(",", ":")).encode()
    return md5(payload).hexdigest()


def combine(*parts: str) -> str:
    return md5("|".join(parts).encode()).hexdigest()


# -- the task's code: its own code, the values its closure captured, and the globals it reads -------
_code_fingerprints: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def code_fingerprint(fn: Any) -> str:
    """A hash of a function's code, its source text when available, and nested code objects."""
    try:
        return _code_fingerprints[fn]
    except (KeyError, TypeError):
        pass
    digest = md5()
    code = getattr(fn, "__code__", None)
    if code is not None:
        _code_digest(code, digest)
    with contextlib.suppress(OSError, TypeError):
        digest.update(inspect.getsource(fn).encode())
    fingerprint = digest.hexdigest()
    with contextlib.suppress(TypeError):
        _code_fingerprints[fn] = fingerprint
    return fingerprint


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


_PLAIN = (int, float, complex, str, bytes, bool, type(None), dt.date, dt.time, dt.timedelta, uuid.UUID, enum.Enum)


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_is_plain(item) for item in value)
    return False


def _value_part(name: str, value: Any, what: str) -> str:
    """Immutable plain values count by value, code by its fingerprint, modules and classes by name;
    anything mutable or opaque (a list the task appends to, a client, a lock) by its type only, so
    the key neither churns with the object's state nor fails on objects that cannot be hashed."""
    if _is_plain(value):
        return f"{name}={stable_hash(value, what)}"
    if isinstance(value, types.ModuleType):
        return f"{name}=module:{value.__name__}"
    if isinstance(value, type):
        return f"{name}=class:{value.__module__}.{value.__qualname__}"
    if inspect.isfunction(value) or inspect.ismethod(value):
        return f"{name}=function:{code_fingerprint(value)}"
    if callable(value) and hasattr(value, "fn") and inspect.isfunction(value.fn):  # a Task or Flow
        return f"{name}=task:{code_fingerprint(value.fn)}"
    if inspect.isbuiltin(value):
        return f"{name}=builtin:{getattr(value, '__qualname__', name)}"
    return f"{name}=object:{type(value).__module__}.{type(value).__qualname__}"


def source_key(fn: Any) -> str:
    """TASK_SOURCE: the code, plus what its closure captured and the globals it reads (see
    `_value_part`), so two functions with the same text but different closures or globals never
    share a key."""
    parts = [code_fingerprint(fn)]
    code = getattr(fn, "__code__", None)
    if code is not None:
        closure = getattr(fn, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, closure, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            parts.append(_value_part(name, value, f"closure variable {name!r} of {fn.__qualname__}"))
        fn_globals = getattr(fn, "__globals__", {})
        for name in sorted(_global_names(code)):
            if name in fn_globals:
                parts.append(_value_part(name, fn_globals[name], f"global {name!r} used by {fn.__qualname__}"))
    return combine(*parts)


# -- policies ------------------------------------------------------------------------------------------
_ISOLATION_LEVELS = ("READ_COMMITTED", "SERIALIZABLE")


def _check_isolation_level(level: Any) -> Any:
    if level is not None and getattr(level, "value", level) not in _ISOLATION_LEVELS:
        raise ValueError(f"isolation_level must be 'READ_COMMITTED' or 'SERIALIZABLE' (or IsolationLevel.X from "
                         f"asyncflow.transactions); got {level!r}.")
    return level


def _check_exclude(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"Inputs(exclude=...) takes a list of parameter names; got {value!r}.")
    return tuple(value)


@attrs.frozen
class CachePolicy:
    """How to compute a run's cache key. Combine with `+`; drop an input with `INPUTS - "name"`.

    Subclass it and define `compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None`:
    `task_ctx` is the task run's context (`.task`, `.task_run`, `.parameters`; None when called by hand),
    `inputs` the run's resolved parameters, `flow_parameters` those of the enclosing flow run (or None).

    `key_storage` (a directory) is where records under this policy's keys live; `lock_manager` an object
    with `acquire_lock(key, holder, acquire_timeout=None, hold_timeout=None)` and
    `release_lock(key, holder)` used instead of asyncflow's own key lock; `isolation_level="SERIALIZABLE"`
    lets one run per key compute while the others wait and then hit."""

    key_storage: Any = attrs.field(default=None, kw_only=True)
    isolation_level: Any = attrs.field(default=None, kw_only=True, converter=_check_isolation_level)
    lock_manager: Any = attrs.field(default=None, kw_only=True)

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: Callable[..., Any]) -> CacheKeyFnPolicy:
        return CacheKeyFnPolicy(cache_key_fn=cache_key_fn)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        raise NotImplementedError(f"{type(self).__name__} must define compute_key(task_ctx, inputs, flow_parameters, "
                                  f"**kwargs).")

    def configure(self, key_storage: Any = None, lock_manager: Any = None, isolation_level: Any = None) -> Any:
        """A new policy with these settings changed (None keeps the current one)."""
        changes: dict[str, Any] = {}
        if key_storage is not None:
            from ._results import storage_root

            storage_root(key_storage)  # a bad location fails here, naming the option
            changes["key_storage"] = key_storage
        if lock_manager is not None:
            _check_lock_manager(lock_manager)
            changes["lock_manager"] = lock_manager
        if isolation_level is not None:
            changes["isolation_level"] = isolation_level
        return attrs.evolve(self, **changes)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if isinstance(other, NoCache):
            return self
        return CompoundCachePolicy(policies=(self, other), **_merged_settings(self, other))

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            raise TypeError(f"Subtract a parameter name (a str) from a cache policy; got {name!r}.")
        return self


def _check_lock_manager(manager: Any) -> None:
    missing = [m for m in ("acquire_lock", "release_lock") if not callable(getattr(manager, m, None))]
    if missing:
        raise TypeError(f"lock_manager must have acquire_lock(key, holder, ...) and release_lock(key, holder) "
                        f"(a LockManager); {manager!r} has no {' or '.join(missing)}.")


def _merged_settings(a: CachePolicy, b: CachePolicy) -> dict[str, Any]:
    """The settings of `a + b`: each from whichever side sets it; both setting it differently is an error."""
    merged = {}
    for name, what in (("key_storage", "storage locations"), ("isolation_level", "isolation levels"),
                       ("lock_manager", "lock implementations")):
        mine, theirs = getattr(a, name), getattr(b, name)
        if mine is not None and theirs is not None and getattr(mine, "value", mine) != getattr(theirs, "value", theirs):
            raise ValueError(f"Cannot add CachePolicies with different {what}: {mine!r} and {theirs!r}.")
        merged[name] = mine if mine is not None else theirs
    return merged


@attrs.frozen
class Inputs(CachePolicy):
    """The run's inputs (parameters after futures are resolved), minus excluded names."""

    exclude: tuple[str, ...] = attrs.field(default=(), converter=_check_exclude)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        if not inputs:
            return None
        items = sorted((k, v) for k, v in inputs.items() if k not in self.exclude)
        if not items:
            return None
        return combine(*(f"{k}={stable_hash(v, f'parameter {k!r}')}" for k, v in items))

    def __sub__(self, name: str) -> CachePolicy:
        super().__sub__(name)
        return attrs.evolve(self, exclude=(*self.exclude, name))

    def __repr__(self) -> str:
        return "INPUTS" if not self.exclude else "INPUTS - " + " - ".join(repr(n) for n in self.exclude)


@attrs.frozen
class TaskSource(CachePolicy):
    """The task's code, the values its closure captured and the globals it reads."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        if task_ctx is None:
            return None
        task = task_ctx.task
        return source_key(getattr(task, "fn", task))  # (a plain function stands for itself)

    def __repr__(self) -> str:
        return "TASK_SOURCE"


@attrs.frozen
class RunId(CachePolicy):
    """The flow run's id (outside a flow, the task run's own id: standalone calls never share)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        if task_ctx is None:
            return None
        run = task_ctx.task_run
        return str(run.flow_run_id or run.id)

    def __repr__(self) -> str:
        return "RUN_ID"


@attrs.frozen
class FlowParameters(CachePolicy):
    """The parameters of the enclosing flow run."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        if not flow_parameters:
            return None
        return stable_hash(flow_parameters, "the flow run's parameters")

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


@attrs.frozen
class NoCache(CachePolicy):
    """Never cache."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return other

    def __radd__(self, other: CachePolicy) -> CachePolicy:
        return other

    def __repr__(self) -> str:
        return "NO_CACHE"


@attrs.frozen
class CacheKeyFnPolicy(CachePolicy):
    """A user function `cache_key_fn(context, parameters) -> str | None`."""

    cache_key_fn: Callable[..., Any] | None = attrs.field(default=None, kw_only=True)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        if self.cache_key_fn is None:
            return None
        key = self.cache_key_fn(task_ctx, inputs)
        return None if key is None else str(key)


def _flatten(policies: Any) -> tuple[CachePolicy, ...]:
    """Nested compounds flattened, and every Inputs part merged into one (at the first one's place)
    that excludes what any of them excluded."""
    flat: list[CachePolicy] = []
    for policy in policies:
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"CompoundCachePolicy(policies=...) takes cache policies; got {policy!r}.")
        flat.extend(policy.policies if isinstance(policy, CompoundCachePolicy) else [policy])
    inputs = [p for p in flat if isinstance(p, Inputs)]
    if len(inputs) > 1:
        merged = Inputs(exclude=tuple(dict.fromkeys(n for p in inputs for n in p.exclude)))
        first = flat.index(inputs[0])
        flat = [p for p in flat if not isinstance(p, Inputs)]
        flat.insert(first, merged)
    return tuple(flat)


@attrs.frozen
class CompoundCachePolicy(CachePolicy):
    """Several policies: the key combines the keys of its parts that are not None (None if all are)."""

    policies: tuple[CachePolicy, ...] = attrs.field(default=(), converter=_flatten)

    @classmethod
    def of(cls, *policies: CachePolicy) -> CachePolicy:
        result: CachePolicy = NoCache()
        for policy in policies:
            result = result + policy
        return result

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None,
                    **kwargs: Any) -> str | None:
        # an unhashable part raises: no key at all, never a key without that part
        keys = [policy.compute_key(task_ctx, inputs, flow_parameters, **kwargs) for policy in self.policies]
        present = [k for k in keys if k is not None]
        return combine(*present) if present else None

    def __sub__(self, name: str) -> CachePolicy:
        super().__sub__(name)
        if not any(isinstance(p, Inputs) for p in self.policies):
            return self
        return attrs.evolve(self, policies=tuple(p - name if isinstance(p, Inputs) else p for p in self.policies))

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies) if self.policies else "CompoundCachePolicy()"


def as_policy(value: Any, owner: str) -> Any:
    """`cache_policy=` as given: a policy, None, or a policy class (made with no arguments, as Prefect's
    classes can be); anything else is an error naming the option."""
    if value is None or isinstance(value, CachePolicy):
        return value
    if isinstance(value, type) and issubclass(value, CachePolicy):
        try:
            return value()
        except TypeError as exc:
            raise TypeError(f"{owner}: cache_policy={value.__name__} is a class that cannot be made without "
                            f"arguments ({exc}); pass an instance, such as {value.__name__}(...).") from None
    raise TypeError(f"{owner}: cache_policy must be a CachePolicy (INPUTS, TASK_SOURCE, ... from "
                    f"asyncflow.cache_policies); got {value!r}.")


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
RUN_ID = RunId()
FLOW_PARAMETERS = FlowParameters()
NO_CACHE = NoCache()
NONE = NO_CACHE
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID
