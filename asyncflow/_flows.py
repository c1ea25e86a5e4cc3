"""`@flow` and `Flow`: a function whose runs are tracked scopes for task runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from sys import _getframe
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, ParamSpec, TypeVar, overload

from . import _methods, _settings
from ._callables import (
    ONE_YEAR,
    Binder,
    HookList,
    bounded_items,
    check_count,
    check_run_name,
    check_seconds,
    check_text,
    validate_hooks,
)
from ._digest import md5
from ._engine.bridge import AWAITING, BLOCKING
from ._engine.calling import ASYNC_FLAGS, SEE_THROUGH, is_async_frame, unawaited_name
from ._engine.loop import drive_here
from ._exceptions import InvalidNameError
from ._names import flow_name_from_function
from ._store.records import check_redacted
from ._tasks import check_run_name_template, render_run_name
from .task_runners import TaskRunner, coerce_task_runner

if TYPE_CHECKING:
    from ._states import State

P = ParamSpec("P")
R = TypeVar("R", covariant=True)  # a Task[P, CoroutineType[..., T]] is a Task[P, Coroutine[..., T]]
T = TypeVar("T")

_BANNED_NAME_CHARACTERS = ("/", "%", "&", ">", "<")
_file_hashes: dict[str, str | None] = {}


def _file_hash(path: str | None) -> str | None:
    if not path:
        return None
    if path not in _file_hashes:
        try:
            with open(path, "rb") as fh:
                _file_hashes[path] = md5(fh.read()).hexdigest()
        except OSError:
            _file_hashes[path] = None
    return _file_hashes[path]


class Flow(Generic[P, R]):
    """A function wrapped as a flow. Calling it creates a flow run."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[..., str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: float | None = None,
        task_runner: TaskRunner | type[TaskRunner] | None = None,
        description: str | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
        cache_result_in_memory: bool = True,
        log_prints: bool | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_cancellation: list[Callable[..., Any]] | None = None,
        on_crashed: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        redact_parameters: Iterable[str] | None = None,
    ) -> None:
        fn, self.method_kind = _methods.unwrap(fn)
        if not callable(fn):
            raise TypeError(
                f"@flow must decorate a function or another callable; got {fn!r} of type {type(fn).__name__}.")
        self.fn = fn
        if name is None:
            name = flow_name_from_function(getattr(fn, "__name__", type(fn).__name__))
        if not isinstance(name, str):
            raise TypeError(f"Flow name must be a string; got {name!r}.")
        bad = [c for c in _BANNED_NAME_CHARACTERS if c in name]
        if bad:
            raise InvalidNameError(f"Name {name!r} contains an invalid character ({''.join(bad)!r}). Must not "
                                   f"contain any of: {' '.join(_BANNED_NAME_CHARACTERS)} (rename the flow).")
        self.name = name
        self._version = version
        self._source_path: str | None = None  # the file that defines the flow ("" if none), once looked up
        self.description = description if description is not None else inspect.getdoc(fn)
        if flow_run_name is not None and not isinstance(flow_run_name, str) and not callable(flow_run_name):
            raise TypeError(f"Expected string or callable for 'flow_run_name'; "
                            f"got {type(flow_run_name).__name__} instead.")
        owner = f"flow {name!r}"
        check_text(owner, "description", description)
        check_text(owner, "version", version)
        check_run_name(owner, "flow_run_name", flow_run_name)
        self.flow_run_name = flow_run_name
        self.retries = check_count(
            owner, "retries", _settings.FLOW_DEFAULT_RETRIES.value() if retries is None else retries)
        self.retry_delay_seconds = check_seconds(owner, "retry_delay_seconds",
                                                 _settings.FLOW_DEFAULT_RETRY_DELAY_SECONDS.value()
                                                 if retry_delay_seconds is None else retry_delay_seconds)
        self.task_runner = coerce_task_runner(task_runner)
        # 0 means no timeout, as in Prefect (so `with_options(timeout_seconds=0)` removes one)
        self.timeout_seconds = (check_seconds(owner, "timeout_seconds", timeout_seconds, ONE_YEAR) or None
                                if timeout_seconds is not None else None)
        self.should_validate_parameters = validate_parameters
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.cache_result_in_memory = cache_result_in_memory
        self.log_prints = log_prints
        self.on_completion = HookList(validate_hooks(on_completion, "on_completion", "flow"))
        self.on_failure = HookList(validate_hooks(on_failure, "on_failure", "flow"))
        self.on_cancellation = HookList(validate_hooks(on_cancellation, "on_cancellation", "flow"))
        self.on_crashed = HookList(validate_hooks(on_crashed, "on_crashed", "flow"))
        self.on_running = HookList(validate_hooks(on_running, "on_running", "flow"))
        self.binder = Binder(fn, f"flow {name!r}")
        if redact_parameters is not None and not isinstance(redact_parameters, str) \
                and hasattr(redact_parameters, "__iter__"):
            redact_parameters = bounded_items(owner, "redact_parameters", redact_parameters, 1000, "names")
        self.redact_parameters = check_redacted(redact_parameters, self.binder, owner)
        check_run_name_template(flow_run_name, self.binder, "flow_run_name", f"flow {name!r}")
        if persist_result is not None and not isinstance(persist_result, bool):
            raise TypeError(f"flow {name!r}: persist_result must be True, False or None; got {persist_result!r}.")
        if result_storage is not None or result_serializer is not None:  # (result storage: imported when used)
            from . import _results

            if result_storage is not None:
                _results.storage_root(result_storage)  # the defaults for this flow's tasks: checked now
            if result_serializer is not None:
                _results.get_serializer(result_serializer)
        self.isasync = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
        self._validator: Any = None
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = name
        self._unawaited_name = unawaited_name("flow", name)
        self.__wrapped__ = fn

    @property
    def version(self) -> str | None:
        """The given version, else a hash of the file that defines the flow (None if unknown)."""
        if self._version is not None:
            return self._version
        path = self._source_path
        if path is None:  # once per flow: `inspect.getsourcefile` costs more than the rest of a call
            try:
                path = inspect.getsourcefile(self.fn) or ""
            except TypeError:
                path = ""
            self._source_path = path
        return _file_hash(path)

    @staticmethod
    def default_log_prints() -> bool:
        return bool(_settings.LOGGING_LOG_PRINTS.value())

    # -- calling ---------------------------------------------------------------------------------
    # Typed as Task.__call__ is (see the comment there and docs/type-checking.md).
    @overload
    def __call__(self: Flow[P, NoReturn],  # type: ignore[overload-overlap]  # a function that only raises
                 *args: P.args, **kwargs: P.kwargs) -> None: ...

    @overload
    def __call__(self: Flow[P, Coroutine[Any, Any, T]], *args: P.args,  # type: ignore[overload-overlap]
                 **kwargs: P.kwargs) -> Coroutine[Any, Any, T]: ...

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def __call__(self: Flow[..., Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True],
                 wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Coroutine[Any, Any, State[T]]: ...

    @overload
    def __call__(self: Flow[..., T], *args: Any, return_state: Literal[True],
                 wait_for: Iterable[Any] | None = None, **kwargs: Any) -> State[T]: ...

    @overload
    def __call__(self, *args: Any, return_state: Literal[False], wait_for: Iterable[Any] | None = None,
                 **kwargs: Any) -> R: ...

    @overload
    def __call__(self, *args: Any, wait_for: Iterable[Any] | None, return_state: Literal[False] = False,
                 **kwargs: Any) -> R: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return_state = kwargs.pop("return_state", False)
        wait_for = kwargs.pop("wait_for", None)
        parameters = self.binder.bind(args, kwargs)
        from ._engine.flow_run import FlowCall, run_flow

        call = FlowCall(self, parameters, wait_for)
        frame = _getframe(1)  # the calling rule, inlined: this is every call's path
        code = frame.f_code
        if self.isasync or code.co_flags & ASYNC_FLAGS or (code.co_name in SEE_THROUGH and is_async_frame(frame)):
            pending = run_flow(call, AWAITING, not return_state)
            pending.__qualname__ = self._unawaited_name  # type: ignore[attr-defined]
            return pending  # type: ignore[return-value]
        state = drive_here(run_flow(call, BLOCKING))
        return state if return_state else state._result()

    def validate(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Coerce parameters to the annotated types (with pydantic, when it is installed)."""
        if not self.should_validate_parameters or not parameters:
            return parameters
        if self._validator is None:
            self._validator = _build_validator(self.fn)
        return self._validator(parameters) if self._validator else parameters

    def with_options(self, **options: Any) -> Flow[P, R]:
        current = {name: getattr(self, name) for name in _FLOW_OPTIONS
                   if name not in ("version", "validate_parameters")}
        current["version"] = self._version
        current["validate_parameters"] = self.should_validate_parameters
        for hooks in ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running"):
            current[hooks] = list(current[hooks])
        unknown = set(options) - set(_FLOW_OPTIONS)
        if unknown:
            raise TypeError(f"with_options() got unknown option(s) {sorted(unknown)}; valid: {sorted(_FLOW_OPTIONS)}.")
        current.update(options)
        return Flow(_methods.rewrap(self.fn, self.method_kind), **current)

    def render_run_name(self, parameters: dict[str, Any]) -> str:
        return render_run_name(self.flow_run_name, parameters, "flow_run_name")

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None and self.method_kind is None:
            return self
        return _methods.get(self, BoundFlow, instance, owner)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"


class BoundFlow(_methods.Bound, Flow):  # type: ignore[misc]
    """A flow accessed through an instance (or a classmethod flow through its class): a Flow that
    passes the instance (or class) as the first argument."""


_FLOW_OPTIONS = (
    "name", "version", "flow_run_name", "retries", "retry_delay_seconds", "task_runner", "description",
    "timeout_seconds", "validate_parameters", "persist_result", "result_storage", "result_serializer",
    "cache_result_in_memory", "log_prints", "on_completion", "on_failure", "on_cancellation", "on_crashed",
    "on_running", "redact_parameters",
)


def _build_validator(fn: Callable[..., Any]) -> Any:
    try:
        try:  # string annotations (`from __future__ import annotations`) evaluated in the function's module
            signature = inspect.signature(fn, eval_str=True)
        except Exception:
            signature = inspect.signature(fn)
        hints = {k: v for k, v in signature.parameters.items()
                 if v.annotation is not inspect.Parameter.empty
                 and v.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    except (TypeError, ValueError):
        return False
    if not hints:
        return False
    try:
        import pydantic
    except ImportError:
        return False
    adapters = {}
    for name, param in hints.items():
        try:
            adapters[name] = pydantic.TypeAdapter(param.annotation,
                                                  config=pydantic.ConfigDict(arbitrary_types_allowed=True))
        except Exception:
            try:  # a pydantic model (or dataclass) has its own config: pydantic refuses another one
                adapters[name] = pydantic.TypeAdapter(param.annotation)
            except Exception:  # an annotation pydantic cannot handle is passed through unchanged
                continue

    def validate(parameters: dict[str, Any]) -> dict[str, Any]:
        out = dict(parameters)
        for name, adapter in adapters.items():
            if name in out:
                out[name] = adapter.validate_python(out[name])
        return out

    return validate


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    version: str | None = None,
    flow_run_name: str | Callable[..., str] | None = None,
    retries: int | None = None,
    retry_delay_seconds: float | None = None,
    task_runner: TaskRunner | type[TaskRunner] | None = None,
    description: str | None = None,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    cache_result_in_memory: bool = True,
    log_prints: bool | None = None,
    on_completion: list[Callable[..., Any]] | None = None,
    on_failure: list[Callable[..., Any]] | None = None,
    on_cancellation: list[Callable[..., Any]] | None = None,
    on_crashed: list[Callable[..., Any]] | None = None,
    on_running: list[Callable[..., Any]] | None = None,
    redact_parameters: Iterable[str] | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Any = None, **options: Any) -> Any:
    """Make a function a flow: `@flow` or `@flow(retries=3, log_prints=True, ...)`."""
    if __fn is not None:
        return Flow(__fn, **options)

    def decorator(fn: Callable[P, R]) -> Flow[P, R]:
        return Flow(fn, **options)

    return decorator


def _option_signatures() -> None:
    """`inspect.signature(flow)` and `inspect.signature(Flow.with_options)` list the options (as Prefect's
    do), though both take them as `**options`."""
    options = [p for name, p in inspect.signature(Flow.__init__).parameters.items() if name not in ("self", "fn")]
    fn = inspect.Parameter("__fn", inspect.Parameter.POSITIONAL_ONLY, default=None)
    flow.__signature__ = inspect.Signature([fn, *options])  # type: ignore[attr-defined]
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    Flow.with_options.__signature__ = inspect.Signature([this, *options])  # type: ignore[attr-defined]


_option_signatures()
