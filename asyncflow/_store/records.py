"""What a store writes: immutable snapshots of runs, states and log lines, made at record time.

The hot path builds a tuple of values that nobody changes later (ids, names, tags, a state's fields,
the parameters as they were), so the writer thread never reads a live run object while the engine
changes it. Each tuple starts with its kind. Parameters are kept as given when every value is a plain
immutable scalar (the common case: no work on the hot path), else summarised at once (`summary`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import State, StateDetails

FLOW, TASK, STATE, LOG, MARK, NEW, LINE = range(7)  # record kinds, the first item of each record

# (FLOW, id, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id, created)
# (TASK, id, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, tags, created)
# (STATE, run_id, type, name, message, ts, details)
# (LOG, flow_run_id, task_run_id, level, message, ts)
# (LINE, flow_run_id, task_run_id, level, message, ts, run_id, code, flow_id): an engine line about the state of
#   run_id recorded just before, with that state's ts, in flow run flow_id (a UUID or None) (lines.py): a
#   database store derives it from the state row
# (MARK, [done]): a flush waits until the writer has passed it
# (NEW, run record, state record): a new run and its first state, queued as one record so that no batch
#   boundary (and no other thread's record) falls between them: a run is never stored without its first
#   state. The writer unpacks it as it takes a batch.


def state(run_id: Any, state: State[Any]) -> tuple[Any, ...]:
    return (STATE, run_id, state.type, state.name, state.message, state.ts, state.state_details)

_SCALARS = frozenset({int, bool, float, type(None)})  # exact types: immutable, no user code to run
_PLAIN = (int, float, bool, type(None))
_MAX_STR = 200
_MAX_ITEMS = 20


def parameters_snapshot(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as they are now: a copy when every value is an immutable scalar or a short
    string, else a JSON-safe summary that runs no user code (see `summary`)."""
    if not parameters:
        return {}
    try:
        for value in parameters.values():
            kind = type(value)
            if kind not in _SCALARS and (kind is not str or len(value) > _MAX_STR):
                return {str(name): summary(value) for name, value in parameters.items()}
        return dict(parameters)
    except Exception:  # changed while we read it
        return {"<parameters>": f"<{type(parameters).__name__}>"}


def summary(value: Any, depth: int = 0) -> Any:
    """A JSON-safe summary of a value that runs no user code: plain values (long strings cut), small
    lists/tuples/dicts of them, else `<TypeName>`. Exact types only: a subclass could run code."""
    kind = type(value)
    if kind in _PLAIN:
        return value if kind is not float or math.isfinite(value) else repr(value)
    if kind is str:
        return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
    if depth < 2 and kind in (list, tuple) and len(value) <= _MAX_ITEMS:
        return [summary(v, depth + 1) for v in list(value)]
    if depth < 2 and kind is dict and len(value) <= _MAX_ITEMS:
        items = list(value.items())
        if all(type(k) is str for k, _ in items):
            return {k: summary(v, depth + 1) for k, v in items}
    if kind in (list, tuple, dict, set, frozenset):
        return f"<{kind.__name__} of {len(value)} items>"
    return f"<{kind.__name__}>"


REDACTED = "<redacted>"


def check_redacted(names: Any, binder: Any, owner: str) -> frozenset[str]:
    """`redact_parameters=` of a task or flow, checked at definition against its signature."""
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = [names]
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"redact_parameters of {owner} must be a list of parameter names; got {names!r}.") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"redact_parameters of {owner} must be a list of parameter names; got {name!r} in it.")
        if name not in binder.names:
            raise ValueError(f"redact_parameters of {owner} names {name!r}, which is not one of its parameters "
                             f"({', '.join(binder.names) or 'it has none'}).")
    return frozenset(names)


def redact(parameters: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The parameters a run shows and records: the named ones replaced by `<redacted>`."""
    return {name: REDACTED if name in names else value for name, value in parameters.items()}


def flow_run(run: FlowRun) -> tuple[Any, ...]:
    return (FLOW, run.id, run.name, run.flow_name, run.flow_version, parameters_snapshot(run.parameters),
            run.tags, run.parent_flow_run_id, run.parent_task_run_id, run.state.ts)


def task_run(run: TaskRun) -> tuple[Any, ...]:
    return (TASK, run.id, run.name, run.task_name, run.task_key, run.task_version, run.flow_run_id,
            run.parent_task_run_id, parameters_snapshot(run.parameters), run.tags, run.state.ts)


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Any:
    """`json.dumps(value, ensure_ascii=False)` without its per-call set-up: the C encoder, made once
    (3x faster on a small dict), where the interpreter has one. Snapshots hold no cycles."""
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(ensure_ascii=False).encode
    iterencode = make(None, _unencodable, encoder.encode_basestring, None, ": ", ", ", False, False, True)
    return lambda value: "".join(iterencode(value, 0))


_encode = _make_encoder()


class Privacy:
    """What a store writes of parameters (the settings `ASYNCFLOW_STORE_PARAMETERS` and
    `ASYNCFLOW_STORE_REDACT`): all of them, none, and which names are always redacted (a name that
    contains one of `words`, in any case). Decided once per name, in the writer's thread."""

    def __init__(self, keep: bool = True, words: tuple[str, ...] = ()) -> None:
        self.keep = keep
        self.words = tuple(word.lower() for word in words if word)
        self._secret: dict[str, bool] = {}

    @classmethod
    def from_settings(cls) -> Privacy:
        from .. import _settings

        return cls(_settings.STORE_PARAMETERS.value() == "all", _settings.STORE_REDACT.value())

    def is_secret(self, name: str) -> bool:
        secret = self._secret.get(name)
        if secret is None:
            lowered = name.lower()
            secret = self._secret[name] = any(word in lowered for word in self.words)
            if len(self._secret) > 10_000:
                self._secret.clear()
        return secret

    def json(self, parameters: dict[str, Any]) -> str:
        """A snapshot's parameters as stored (non-finite floats as their repr)."""
        if not parameters or not self.keep:
            return "{}"
        if self.words:
            known = self._secret
            for name in parameters:
                secret = known.get(name)
                if secret is None:
                    secret = self.is_secret(name)
                if secret:
                    parameters = {key: REDACTED if self.is_secret(key) else value for key, value in parameters.items()}
                    break
        try:
            return _encode(parameters)
        except ValueError:  # nan/inf
            return _encode({name: summary(value) for name, value in parameters.items()})


KEEP_ALL = Privacy()
parameters_json = KEEP_ALL.json


def details_json(details: StateDetails) -> str | None:
    if (details.cache_key is None and details.scheduled_time is None and details.cache_expiration is None
            and details.child_flow_run_id is None):
        return None
    out: dict[str, Any] = {}
    if details.cache_key is not None:
        out["cache_key"] = details.cache_key
    if details.cache_expiration is not None:
        out["cache_expiration"] = details.cache_expiration.isoformat()
    if details.scheduled_time is not None:
        out["scheduled_time"] = details.scheduled_time.isoformat()
    if details.child_flow_run_id is not None:
        out["child_flow_run_id"] = str(details.child_flow_run_id)
    return json.dumps(out)


def id_text(number: int) -> str:
    """A run id's text from its int (`str(uuid.UUID(int=number))`), through its bytes (`bytes.hex` of each
    group: ~5 % fewer instructions than formatting the 128-bit int and slicing its text)."""
    b = number.to_bytes(16, "big")
    return f"{b[:4].hex()}-{b[4:6].hex()}-{b[6:8].hex()}-{b[8:10].hex()}-{b[10:].hex()}"


def to_run(record: tuple[Any, ...]) -> FlowRun | TaskRun:
    """A run object made from its snapshot (Pending until its states are replayed)."""
    from .._states import StateType

    if record[0] == FLOW:
        (_, id_, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id,
         created) = record
        return FlowRun(id=id_, name=name, flow_name=flow_name, flow_version=flow_version, parameters=parameters,
                       tags=tags, state=State(StateType.PENDING, "Pending", ts=created),
                       parent_flow_run_id=parent_flow_run_id, parent_task_run_id=parent_task_run_id)
    (_, id_, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, tags,
     created) = record
    return TaskRun(id=id_, name=name, task_name=task_name, task_key=task_key, flow_run_id=flow_run_id,
                   parent_task_run_id=parent_task_run_id, tags=tags, parameters=parameters,
                   state=State(StateType.PENDING, "Pending", ts=created), task_version=task_version)


def to_state(record: tuple[Any, ...]) -> State[Any]:
    _, _run_id, type_, name, message, ts, details = record
    return State(type_, name, message, None, details, ts)
