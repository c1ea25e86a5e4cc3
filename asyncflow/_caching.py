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
import hashlib
import inspect
import json
import pathlib
import types
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import attrs


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
    if hasattr(value, "model_dump") and hasattr(kind, "model_fields"):
        return ["pydantic", qualname, _canonical(value.model_dump(), what, depth + 1)]
    import cloudpickle  # only for values nothing above covers: not on asyncflow's import path

    try:
        return ["pickle", qualname, hashlib.md5(cloudpickle.dumps(value)).hexdigest()]
    except Exception as exc:  # locks, sockets, open files, generators...
        raise UnhashableKeyPart(what, value, f"{type(exc).__name__}: {exc}") from None


def stable_hash(value: Any, what: str) -> str:
    """md5 of a canonical, type-keeping encoding of `value`; raises UnhashableKeyPart naming `what`."""
    payload = json.dumps(_canonical(value, what), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.md5(payload).hexdigest()


def combine(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest()


# -- the task's code: its own code, the values its closure captured, and the globals it reads -------
_code_fingerprints: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _code_digest(code: types.CodeType, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, digest)
        else:
            digest.update(repr(const).encode())


def code_fingerprint(fn: Any) -> str:
    """A hash of a function's code, its source text when available, and nested code objects."""
    try:
        return _code_fingerprints[fn]
    except (KeyError, TypeError):
        pass
    digest = hashlib.md5()
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
@attrs.frozen
class KeyContext:
    """What a policy may look at: the task, its run, the run's inputs and its flow run."""

    task: Any
    task_run: Any
    parameters: dict[str, Any]
    flow_parameters: dict[str, Any] | None
    run_context: Any


@attrs.frozen
class CachePolicy:
    """How to compute a run's cache key. Combine with `+`; drop an input with `INPUTS - "name"`."""

    isolation_level: str | None = attrs.field(default=None, kw_only=True)

    def compute_key(self, ctx: KeyContext) -> str | None:
        raise NotImplementedError

    def configure(self, *, isolation_level: str | None = None) -> CachePolicy:
        """A copy with another isolation level (`"READ_COMMITTED"` or `"SERIALIZABLE"`)."""
        if isolation_level is not None and str(isolation_level) not in ("READ_COMMITTED", "SERIALIZABLE",
                                                                          "IsolationLevel.READ_COMMITTED",
                                                                          "IsolationLevel.SERIALIZABLE"):
            raise ValueError(f"isolation_level must be READ_COMMITTED or SERIALIZABLE; got {isolation_level!r}.")
        return attrs.evolve(self, isolation_level=getattr(isolation_level, "value", isolation_level))

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CompoundCachePolicy.of(self, other)

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            raise TypeError(f"Subtract a parameter name (a str) from a cache policy; got {name!r}.")
        return self


@attrs.frozen
class Inputs(CachePolicy):
    """The run's inputs (parameters after futures are resolved), minus excluded names."""

    exclude: tuple[str, ...] = ()

    def compute_key(self, ctx: KeyContext) -> str | None:
        items = sorted((k, v) for k, v in ctx.parameters.items() if k not in self.exclude)
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

    def compute_key(self, ctx: KeyContext) -> str | None:
        return source_key(ctx.task.fn)

    def __repr__(self) -> str:
        return "TASK_SOURCE"


@attrs.frozen
class RunId(CachePolicy):
    """The flow run's id (outside a flow, the task run's own id: standalone calls never share)."""

    def compute_key(self, ctx: KeyContext) -> str | None:
        run = ctx.task_run
        return str(run.flow_run_id or run.id)

    def __repr__(self) -> str:
        return "RUN_ID"


@attrs.frozen
class FlowParameters(CachePolicy):
    """The parameters of the enclosing flow run."""

    def compute_key(self, ctx: KeyContext) -> str | None:
        if not ctx.flow_parameters:
            return None
        return stable_hash(ctx.flow_parameters, "the flow run's parameters")

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


@attrs.frozen
class NoCache(CachePolicy):
    """Never cache."""

    def compute_key(self, ctx: KeyContext) -> str | None:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return other

    def __radd__(self, other: CachePolicy) -> CachePolicy:
        return other

    def __repr__(self) -> str:
        return "NO_CACHE"


@attrs.frozen
class CacheKeyFnPolicy(CachePolicy):
    """A user function `(context, parameters) -> str | None`."""

    fn: Callable[..., Any] = attrs.field(kw_only=True)

    def compute_key(self, ctx: KeyContext) -> str | None:
        key = self.fn(ctx.run_context, ctx.parameters)
        return None if key is None else str(key)


@attrs.frozen
class CompoundCachePolicy(CachePolicy):
    policies: tuple[CachePolicy, ...] = ()

    @classmethod
    def of(cls, *policies: CachePolicy) -> CachePolicy:
        flat: list[CachePolicy] = []
        for policy in policies:
            flat.extend(policy.policies if isinstance(policy, CompoundCachePolicy) else [policy])
        flat = [p for p in flat if not isinstance(p, NoCache)]
        inputs = [p for p in flat if isinstance(p, Inputs)]
        if len(inputs) > 1:  # one Inputs part, excluding what any of them excluded
            merged = Inputs(exclude=tuple(dict.fromkeys(n for p in inputs for n in p.exclude)))
            first = flat.index(inputs[0])
            flat = [p for p in flat if not isinstance(p, Inputs)]
            flat.insert(first, merged)
        levels = {p.isolation_level for p in flat if p.isolation_level is not None}
        if len(levels) > 1:
            raise ValueError(f"Cannot add cache policies with different isolation levels: {sorted(levels)}.")
        if not flat:
            return NoCache()
        if len(flat) == 1:
            return flat[0]
        return cls(policies=tuple(flat), isolation_level=next(iter(levels), None))

    def compute_key(self, ctx: KeyContext) -> str | None:
        keys = [policy.compute_key(ctx) for policy in self.policies]  # an unhashable part raises: no key
        present = [k for k in keys if k is not None]
        return combine(*present) if present else None

    def __sub__(self, name: str) -> CachePolicy:
        super().__sub__(name)
        if not any(isinstance(p, Inputs) for p in self.policies):
            return self
        return attrs.evolve(self, policies=tuple(p - name if isinstance(p, Inputs) else p for p in self.policies))

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies)


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
RUN_ID = RunId()
FLOW_PARAMETERS = FlowParameters()
NO_CACHE = NoCache()
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID
