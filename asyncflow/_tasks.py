"""`@task` and `Task`: a plain function made into a tracked, retryable unit of work."""

from __future__ import annotations

import datetime as dt
import inspect
import re
import string
import warnings
from collections.abc import Callable, Coroutine, Iterable
from sys import _getframe
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, ParamSpec, TypeVar, overload

from . import _methods, _settings
from ._callables import (
    ONE_YEAR,
    Binder,
    HookList,
    _short,
    bounded_items,
    check_run_name,
    check_seconds,
    check_tags,
    check_text,
    validate_hooks,
)
from ._context import current_run
from ._digest import code_digest, md5
from ._engine import generators, task_run
from ._engine.bridge import AWAITING, BLOCKING
from ._engine.calling import (
    ASYNC_FLAGS,
    SEE_THROUGH,
    caller_is_async,
    is_async_frame,
    unawaited_name,
)
from ._engine.loop import drive_here
from ._engine.retry import build_retry_policy
from ._futures import TaskRunFuture, TaskRunFutureList
from ._store.records import check_redacted

if TYPE_CHECKING:
    from ._states import State

P = ParamSpec("P")
R = TypeVar("R", covariant=True)  # a Task[P, CoroutineType[..., T]] is a Task[P, Coroutine[..., T]]
T = TypeVar("T")

class _NotSet:
    """An option left out (`cache_policy`: the default policy), told apart from an explicit None."""

    def __repr__(self) -> str:
        return "NotSet"


_NOTSET: Any = _NotSet()


def _task_key(fn: Callable[..., Any], name: str) -> str:
    qualname = getattr(fn, "__qualname__", type(fn).__name__)
    code = getattr(fn, "__code__", None)
    digest = md5(f"{name}|{qualname}".encode())
    if code is not None:  # bytecode, constants and names, nested code included: bodies differ, keys differ
        code_digest(code, digest)
    return f"{qualname.split('.')[-1]}-{digest.hexdigest()[:8]}"


def _kind(fn: Callable[..., Any]) -> str:
    # a callable object's kind is the kind of its class's __call__
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.isgeneratorfunction(target):
        return "generator"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


class Task(Generic[P, R]):
    """A function wrapped as a task. Call it, `.submit()` it, or `.map()` it over iterables."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        version: str | None = None,
        cache_policy: Any = _NOTSET,
        cache_key_fn: Callable[..., Any] | None = None,
        cache_expiration: dt.timedelta | None = None,
        task_run_name: str | Callable[..., str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: Any = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., Any] | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
        result_storage_key: str | None = None,
        cache_result_in_memory: bool = True,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        refresh_cache: bool | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        on_commit: list[Callable[..., Any]] | None = None,
        on_rollback: list[Callable[..., Any]] | None = None,
        redact_parameters: Iterable[str] | None = None,
    ) -> None:
        fn, self.method_kind = _methods.unwrap(fn)
        if not callable(fn):
            raise TypeError(
                f"@task must decorate a function or another callable; got {fn!r} of type {type(fn).__name__}.")
        self.fn = fn
        self.name = name if name is not None else getattr(fn, "__name__", type(fn).__name__)
        if not isinstance(self.name, str):
            raise TypeError(f"Task name must be a string; got {self.name!r}.")
        self.description = description if description is not None else inspect.getdoc(fn)
        owner = f"task {self.name!r}"
        check_text(owner, "description", description)
        check_text(owner, "version", version)
        self.tags = set(check_tags(owner, tags))  # a set of its own, as in Prefect (with_options copies it)
        self.version = version
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = cache_expiration
        if task_run_name is not None and not isinstance(task_run_name, str) and not callable(task_run_name):
            raise TypeError(f"Expected string or callable for 'task_run_name'; "
                            f"got {type(task_run_name).__name__} instead.")
        check_run_name(owner, "task_run_name", task_run_name)
        self.task_run_name = task_run_name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_condition_fn = retry_condition_fn
        self.retry_policy = build_retry_policy(
            f"task {self.name!r}", retries, retry_delay_seconds, retry_jitter_factor, retry_condition_fn,
            _settings.TASK_DEFAULT_RETRIES.value(), _settings.TASK_DEFAULT_RETRY_DELAY_SECONDS.value())
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.result_storage_key = result_storage_key
        self.cache_result_in_memory = cache_result_in_memory
        self.caching = resolve_caching(self.name, fn, cache_policy, cache_key_fn, cache_expiration, persist_result,
                                       result_storage, result_serializer, result_storage_key, refresh_cache)
        # as Prefect resolves them at decoration; with_options starts again from what the user gave
        self._user_cache_policy, self._user_persist_result = cache_policy, persist_result
        if self.caching._policy is not _DEFAULT_POLICY:  # (the default policy is looked up when read: __getattr__)
            self.cache_policy = self.caching.policy
        self.persist_result = self.caching.persist
        # 0 means no timeout, as in Prefect (so `with_options(timeout_seconds=0)` removes one)
        self.timeout_seconds = (check_seconds(owner, "timeout_seconds", timeout_seconds, ONE_YEAR) or None
                                if timeout_seconds is not None else None)
        self.log_prints = log_prints
        self.refresh_cache = refresh_cache
        self.on_completion = HookList(validate_hooks(on_completion, "on_completion", "task"))
        self.on_failure = HookList(validate_hooks(on_failure, "on_failure", "task"))
        self.on_running = HookList(validate_hooks(on_running, "on_running", "task"))
        self.on_commit = HookList(validate_hooks(on_commit, "on_commit", "task"))
        self.on_rollback = HookList(validate_hooks(on_rollback, "on_rollback", "task"))
        self.binder = Binder(fn, f"task {self.name!r}")
        if redact_parameters is not None and not isinstance(redact_parameters, str) \
                and hasattr(redact_parameters, "__iter__"):
            redact_parameters = bounded_items(owner, "redact_parameters", redact_parameters, 1000, "names")
        self.redact_parameters = check_redacted(redact_parameters, self.binder, owner)
        check_run_name_template(task_run_name, self.binder, "task_run_name", owner)
        check_storage_key(result_storage_key, self.binder, owner)
        self.kind = _kind(fn)
        if self.kind in ("generator", "asyncgen"):
            _reject_caching_of_generators(self.name, cache_policy=None if cache_policy is _NOTSET else cache_policy,
                                          cache_key_fn=cache_key_fn,
                                          cache_expiration=cache_expiration, persist_result=persist_result,
                                          result_storage_key=result_storage_key, refresh_cache=refresh_cache)
        self.isasync = self.kind == "async"
        self.task_key = _task_key(fn, self.name)
        try:
            self.source_code: str | None = inspect.getsource(fn)
        except (OSError, TypeError):
            self.source_code = None
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = self.name
        self._unawaited_name = unawaited_name("task", self.name)
        self.__wrapped__ = fn

    def __getattr__(self, name: str) -> Any:
        """`cache_policy` of a task that sets no caching option: the default policy, looked up (and the
        cache policies imported) when first read."""
        if name == "cache_policy":
            policy = self.__dict__["cache_policy"] = self.caching.policy
            return policy
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- calling ---------------------------------------------------------------------------------
    # The overloads say what a call returns (docs/type-checking.md). The first ones keep the function's
    # own parameters (ParamSpec); a call with return_state= or wait_for= cannot (a ParamSpec takes no
    # added keyword), so its arguments are unchecked there, as in Prefect. A sync task called in async
    # code is awaitable: only the mypy plugin (asyncflow.mypy) can tell async code from sync code.
    @overload
    def __call__(self: Task[P, NoReturn],  # type: ignore[overload-overlap]  # a function that only raises
                 *args: P.args, **kwargs: P.kwargs) -> None: ...

    @overload
    def __call__(self: Task[P, Coroutine[Any, Any, T]], *args: P.args,  # type: ignore[overload-overlap]
                 **kwargs: P.kwargs) -> Coroutine[Any, Any, T]: ...

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def __call__(self: Task[..., Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True],
                 wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Coroutine[Any, Any, State[T]]: ...

    @overload
    def __call__(self: Task[..., T], *args: Any, return_state: Literal[True],
                 wait_for: Iterable[Any] | None = None, **kwargs: Any) -> State[T]: ...

    @overload
    def __call__(self, *args: Any, return_state: Literal[False], wait_for: Iterable[Any] | None = None,
                 **kwargs: Any) -> R: ...

    @overload
    def __call__(self, *args: Any, wait_for: Iterable[Any] | None, return_state: Literal[False] = False,
                 **kwargs: Any) -> R: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return_state = kwargs.pop("return_state", False) if kwargs else False
        wait_for = kwargs.pop("wait_for", None) if kwargs else None
        parameters = self.binder.bind(args, kwargs)
        if self.kind in ("generator", "asyncgen"):
            if return_state:
                raise ValueError("The return_type for a generator task must be 'result'; "
                                 "return_state=True is not supported for generator tasks.")
            return generators.call_generator_task(  # type: ignore[return-value]
                self, parameters, wait_for, caller_is_async())
        call = task_run.TaskCall(self, parameters, wait_for, submitted=False)
        frame = _getframe(1)  # the calling rule, inlined: this is every call's path
        code = frame.f_code
        if self.isasync or code.co_flags & ASYNC_FLAGS or (code.co_name in SEE_THROUGH and is_async_frame(frame)):
            pending = _await_task(call, return_state)  # type: ignore[arg-type]
            pending.__qualname__ = self._unawaited_name  # type: ignore[attr-defined]
            return pending  # type: ignore[return-value]
        state = drive_here(task_run.run_task(call, BLOCKING))
        return state if return_state else state._result()

    @overload
    def submit(self: Task[P, NoReturn],  # type: ignore[overload-overlap]  # a function that only raises
               *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[None]: ...

    @overload
    def submit(self: Task[P, Coroutine[Any, Any, T]],  # type: ignore[overload-overlap]
               *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[T]: ...

    @overload
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[R]: ...

    @overload
    def submit(self: Task[..., Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True],
               wait_for: Iterable[Any] | None = None, **kwargs: Any) -> State[T]: ...

    @overload
    def submit(self: Task[..., T], *args: Any, return_state: Literal[True],
               wait_for: Iterable[Any] | None = None, **kwargs: Any) -> State[T]: ...

    @overload
    def submit(self: Task[..., Coroutine[Any, Any, T]], *args: Any, return_state: Literal[False],
               wait_for: Iterable[Any] | None = None, **kwargs: Any) -> TaskRunFuture[T]: ...

    @overload
    def submit(self: Task[..., T], *args: Any, return_state: Literal[False],
               wait_for: Iterable[Any] | None = None, **kwargs: Any) -> TaskRunFuture[T]: ...

    @overload
    def submit(self: Task[..., Coroutine[Any, Any, T]], *args: Any, wait_for: Iterable[Any] | None,
               return_state: Literal[False] = False, **kwargs: Any) -> TaskRunFuture[T]: ...

    @overload
    def submit(self: Task[..., T], *args: Any, wait_for: Iterable[Any] | None,
               return_state: Literal[False] = False, **kwargs: Any) -> TaskRunFuture[T]: ...

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Start a run concurrently and return its future at once."""
        return_state = kwargs.pop("return_state", False) if kwargs else False
        wait_for = kwargs.pop("wait_for", None) if kwargs else None
        parameters = self.binder.bind(args, kwargs)
        future = task_run.submit(self, parameters, wait_for)
        if return_state:
            if caller_is_async():
                return _await_state(future)  # type: ignore[return-value]
            future.wait()
            return future.state
        return future

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Hand a run to a task worker and return its future at once (see asyncflow.task_worker). In
        async code the enqueue happens in a background thread, in order: the loop never waits for it."""
        from ._workers.future import delay

        return delay(self, args, kwargs)

    def apply_async(self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
                    wait_for: Any = None) -> Any:
        """`.delay()` with explicit arguments and upstream futures to wait for."""
        from ._workers.future import delay

        return delay(self, tuple(args or ()), dict(kwargs or {}), wait_for)

    # `.map()` takes iterables where the function takes items: a ParamSpec cannot say that, so its
    # arguments are unchecked; its result is typed.
    @overload
    def map(self: Task[..., Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True],
            **kwargs: Any) -> list[State[T]]: ...

    @overload
    def map(self: Task[..., T], *args: Any, return_state: Literal[True], **kwargs: Any) -> list[State[T]]: ...

    @overload
    def map(self: Task[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> TaskRunFutureList[T]: ...

    @overload
    def map(self: Task[..., T], *args: Any, **kwargs: Any) -> TaskRunFutureList[T]: ...

    def map(self, *args: Any, **kwargs: Any) -> Any:
        """Submit one run per item of the iterable arguments; other arguments are broadcast."""
        from ._engine.mapping import map_task

        return map_task(self, args, kwargs, caller_is_async())

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options changed."""
        current = {name: getattr(self, name) for name in _TASK_OPTIONS}
        current["cache_policy"], current["persist_result"] = self._user_cache_policy, self._user_persist_result
        current["tags"] = set(self.tags)
        for hooks in ("on_completion", "on_failure", "on_running", "on_commit", "on_rollback"):
            current[hooks] = list(current[hooks])
        unknown = set(options) - set(_TASK_OPTIONS)
        if unknown:
            raise TypeError(f"with_options() got unknown option(s) {sorted(unknown)}; valid: {sorted(_TASK_OPTIONS)}.")
        current.update(options)
        return Task(_methods.rewrap(self.fn, self.method_kind), **current)

    # -- methods ----------------------------------------------------------------------------------
    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None and self.method_kind is None:
            return self
        return _methods.get(self, BoundTask, instance, owner)

    def render_run_name(self, parameters: dict[str, Any]) -> str:
        return render_run_name(self.task_run_name, parameters, "task_run_name")

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"


_TASK_OPTIONS = (
    "name", "description", "tags", "version", "cache_policy", "cache_key_fn", "cache_expiration", "task_run_name",
    "retries", "retry_delay_seconds", "retry_jitter_factor", "retry_condition_fn", "persist_result",
    "result_storage", "result_serializer", "result_storage_key", "cache_result_in_memory", "timeout_seconds",
    "log_prints", "refresh_cache", "on_completion", "on_failure", "on_running", "on_commit", "on_rollback",
    "redact_parameters",
)


class BoundTask(_methods.Bound, Task):  # type: ignore[misc]
    """A task accessed through an instance (or a classmethod task through its class): a Task that
    passes the instance (or class) as the first argument."""


def check_run_name_template(template: Any, binder: Binder, option: str, owner: str) -> None:
    """A template naming something that is not a parameter fails at decoration time."""
    if not isinstance(template, str) or binder.var_keyword is not None:
        return
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"{owner}: '{option}' template {template!r} is not a valid format string: {exc}.") from None
    for field in fields:
        if not field:
            raise ValueError(f"{owner}: '{option}' template {template!r} has an empty field {{}}: name a "
                             f"parameter in it, such as {{{binder.names[0] if binder.names else 'x'}}}.")
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in binder.names:
            raise ValueError(
                f"{owner}: '{option}' template {template!r} names {root!r}, which is not a parameter "
                f"(parameters: {list(binder.names)}). Use one of the parameter names, or a callable.")


_KEY_ROOTS = ("parameters", "flow_run", "task_run")


def check_storage_key(key: Any, binder: Binder, owner: str) -> None:
    """`result_storage_key=`, checked at definition: every field it formats must exist for every call
    (`{parameters[NAME]}` with NAME a parameter, `{flow_run.ATTR}`, `{task_run.ATTR}`), and its fixed parts
    must name a file under the storage path. Otherwise every run would warn and not cache."""
    if key is None:
        return
    option = f"{owner}: `result_storage_key` {_short(key)}"
    if not key.strip():
        raise ValueError(f"{option} must not be empty; give a file name such as '{{parameters[x]}}.pkl', or "
                         f"leave it out to key results by the cache policy.")
    if "\x00" in key:
        raise ValueError(f"{option} must not contain a NUL character.")
    _check_key_fields(key, binder, option)
    placeholder = "".join(text + ("x" if field is not None else "")
                          for text, field, _, _ in string.Formatter().parse(key))
    parts = [p for p in placeholder.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{option} must name a file under the storage path; it must not contain '..'.")
    if not parts:
        raise ValueError(f"{option} must name a file under the storage path, such as "
                         f"'reports/{{parameters[x]}}'.")


def _check_key_fields(template: str, binder: Binder, option: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{option} is not a valid format string: {exc}. Write a literal brace as '{{{{' or "
                         f"'}}}}'.") from None
    usable = "{parameters[NAME]}, {flow_run.ATTRIBUTE} and {task_run.ATTRIBUTE}"
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        if field == "":
            raise ValueError(f"{option} has an empty field {{}}: name what goes there ({usable}).")
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        rest = field[len(root):]
        if root not in _KEY_ROOTS:
            raise ValueError(f"{option} names {root!r}, which a key cannot use: it can use {usable}.")
        if root == "parameters":
            if rest.startswith("."):
                raise ValueError(f"{option}: a parameter is written {{parameters[x]}}, not {{parameters.x}}.")
            name = re.match(r"\[([^\]]*)\]", rest)
            if name and binder.var_keyword is None and name.group(1) not in binder.names:
                raise ValueError(f"{option} names parameter {name.group(1)!r}, which is not a parameter "
                                 f"(parameters: {list(binder.names)}).")
        else:
            from .runtime import flow_run, task_run

            attribute = re.split(r"[.\[]", rest[1:], maxsplit=1)[0] if rest.startswith(".") else None
            available = (flow_run if root == "flow_run" else task_run).__all__
            if attribute not in available:
                raise ValueError(f"{option}: {root} has no attribute {attribute!r}; write "
                                 f"{{{root}.ATTRIBUTE}} with one of {available}.")
        if spec:
            _check_key_fields(spec, binder, option)


_DEFAULT_POLICY: Any = object()  # stands for `_caching.DEFAULT` until a run or `task.cache_policy` reads it


class CachingOptions:
    """A task's caching and result options, checked and resolved once, at decoration time. A task that
    sets none of them has the default policy, which is looked up when first read: defining and
    running a task that persists nothing does not import the cache policies."""

    __slots__ = ("_policy", "_key_settings", "explicit", "persist", "run_persist", "expiration", "storage",
                 "serializer", "storage_key", "refresh", "persist_by_default")

    def __init__(self, policy: Any, settings: Any, explicit: bool, persist: bool | None, expiration: Any,
                 storage: Any, serializer: Any, storage_key: str | None, refresh: bool) -> None:
        self.persist_by_default = bool(_settings.RESULTS_PERSIST_BY_DEFAULT.value())  # read once, not per run
        self._policy = policy  # what computes the key (None: no key, unless storage_key names one)
        self._key_settings = settings  # whose key_storage, isolation_level and lock_manager apply
        self.explicit = explicit
        self.persist = persist  # what the task says (`task.persist_result`)
        # what its runs do before asking their flow: the task's word, else ASYNCFLOW_TASKS_DEFAULT_PERSIST_RESULT
        self.run_persist = persist if persist is not None else _settings.TASKS_DEFAULT_PERSIST_RESULT.value()
        self.expiration = expiration
        self.storage = storage
        self.serializer = serializer
        self.storage_key = storage_key
        self.refresh = refresh

    @property
    def policy(self) -> Any:
        policy = self._policy
        if policy is _DEFAULT_POLICY:
            from ._caching import DEFAULT

            policy = self._policy = DEFAULT
        return policy

    @property
    def settings(self) -> Any:
        settings = self._key_settings
        if settings is _DEFAULT_POLICY:
            settings = self._key_settings = self.policy
        return settings


def _reject_caching_of_generators(name: str, **options: Any) -> None:
    """A generator task hands its values out as it yields them: there is no result to cache or persist."""
    from ._caching import NO_CACHE

    for option, value in options.items():
        if value is None or value is False or value is NO_CACHE:
            continue
        raise ValueError(
            f"{option} cannot apply to generator task {name!r}: a generator task streams the values it "
            f"yields and keeps no result to cache or persist. Remove {option}, or make the task return a "
            f"list instead of yielding.")


def resolve_caching(name: str, fn: Any, cache_policy: Any, cache_key_fn: Any, cache_expiration: Any,
                    persist_result: Any, result_storage: Any, result_serializer: Any, result_storage_key: Any,
                    refresh_cache: Any) -> CachingOptions:
    if (cache_policy is _NOTSET and cache_key_fn is None and cache_expiration is None and persist_result is None
            and result_storage is None and result_serializer is None and result_storage_key is None
            and refresh_cache is None and not _settings.TASKS_DEFAULT_NO_CACHE.value()
            and not _settings.TASKS_DISABLE_CACHING.value()):  # no option set: the default policy (as below)
        return CachingOptions(_DEFAULT_POLICY, _DEFAULT_POLICY, False, None, None, None, None, None,
                              bool(_settings.TASKS_REFRESH_CACHE.value()))
    from . import _caching, _results

    owner = f"task {name!r}"
    if cache_policy is _NOTSET and cache_key_fn is None and _settings.TASKS_DEFAULT_NO_CACHE.value():
        cache_policy = _caching.NO_CACHE  # (as if the task set it: the same resolution follows)
    given = cache_policy is not _NOTSET
    cache_policy = _caching.as_policy(cache_policy, owner) if given else None
    if cache_key_fn is not None and not callable(cache_key_fn):
        raise TypeError(f"{owner}: cache_key_fn must be a callable (context, parameters) -> str; got {cache_key_fn!r}.")
    if cache_expiration is not None and not isinstance(cache_expiration, dt.timedelta):
        raise TypeError(f"{owner}: cache_expiration must be a datetime.timedelta; got {cache_expiration!r}.")
    if cache_expiration is not None and cache_expiration < dt.timedelta(0):
        raise ValueError(f"{owner}: `cache_expiration` must not be negative (a cached result would be "
                         f"expired before it is written); got {cache_expiration!r}. Use a positive "
                         "timedelta, or None for results that never expire.")
    if refresh_cache is not None and not isinstance(refresh_cache, bool):
        raise TypeError(f"{owner}: refresh_cache must be True, False or None; got {refresh_cache!r}.")
    if persist_result is not None and not isinstance(persist_result, bool):
        raise TypeError(f"{owner}: persist_result must be True, False or None; got {persist_result!r}.")
    if result_storage_key is not None and not isinstance(result_storage_key, str):
        raise TypeError(f"{owner}: result_storage_key must be a template string; got {result_storage_key!r}.")
    if result_storage is not None:
        _results.storage_root(result_storage)  # raises for anything but a path
    if result_serializer is not None:
        _results.get_serializer(result_serializer)  # raises for an unknown serializer
    if cache_key_fn is not None and given:
        warnings.warn(f"{owner}: both cache_policy and cache_key_fn are set; cache_key_fn will be used.",
                      UserWarning, stacklevel=4)
    # Prefect's resolution, at decoration: `task.cache_policy` and `task.persist_result` say what runs do
    policy = _caching.CacheKeyFnPolicy(cache_key_fn=cache_key_fn) if cache_key_fn is not None else cache_policy
    explicit = (cache_key_fn is not None or (policy is not None and not isinstance(policy, _caching.NoCache))
                or result_storage_key is not None or result_storage is not None or result_serializer is not None)
    if persist_result is None and explicit:
        persist_result = True
    settings = policy
    if persist_result is False:
        if cache_policy is not None and not isinstance(cache_policy, _caching.NoCache):
            warnings.warn(f"{owner}: ignoring cache_policy because persist_result is False.", UserWarning,
                          stacklevel=4)
        policy = None if given and cache_policy is None and cache_key_fn is None else _caching.NO_CACHE
    elif not given and cache_key_fn is None:
        policy = _caching.DEFAULT if result_storage_key is None else None  # (the storage key is the record's key)
    elif result_storage_key is not None and not isinstance(policy, _caching.NoCache):
        policy = None
    if _settings.TASKS_DISABLE_CACHING.value():  # no key at all: nothing is read or written under one
        policy, result_storage_key = _caching.NO_CACHE, None
    refresh = refresh_cache if refresh_cache is not None else bool(_settings.TASKS_REFRESH_CACHE.value())
    return CachingOptions(policy, settings if policy is None else policy, explicit, persist_result, cache_expiration,
                          result_storage, result_serializer, result_storage_key, refresh)


def render_run_name(template: Any, parameters: dict[str, Any], option: str) -> str:
    if callable(template):
        try:
            signature = inspect.signature(template)
        except (TypeError, ValueError):
            signature = None
        if signature is not None and "parameters" in signature.parameters:
            name = template(parameters=parameters)
        else:
            name = template()
        if not isinstance(name, str):
            raise TypeError(f"Callable {template} for '{option}' returned type {type(name).__name__} but a "
                            f"string is required.")
        return name
    try:
        return template.format(**parameters)
    except KeyError as exc:
        raise ValueError(
            f"'{option}' template {template!r} names {exc.args[0]!r}, which is not a parameter of this call "
            f"(parameters: {sorted(parameters)}). Use one of the parameter names, or a callable.") from None
    except (AttributeError, IndexError, TypeError, ValueError) as exc:  # `{x.attr}`, `{x[0]}`, `{x:d}`
        raise ValueError(f"'{option}' template {template!r} cannot be formatted with this call's parameters: "
                         f"{type(exc).__name__}: {exc}. Use a simpler template, or a callable.") from None


async def _await_task(call: Any, return_state: bool) -> Any:
    state = await task_run.run_task(call, AWAITING)
    return state if return_state else state._result()


async def _await_state(future: TaskRunFuture[Any]) -> Any:
    await future.wait_async()
    return future.state


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    version: str | None = None,
    cache_policy: Any = None,
    cache_key_fn: Callable[..., Any] | None = None,
    cache_expiration: dt.timedelta | None = None,
    task_run_name: str | Callable[..., str] | None = None,
    retries: int | None = None,
    retry_delay_seconds: Any = None,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., Any] | None = None,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    result_storage_key: str | None = None,
    cache_result_in_memory: bool = True,
    timeout_seconds: float | None = None,
    log_prints: bool | None = None,
    refresh_cache: bool | None = None,
    on_completion: list[Callable[..., Any]] | None = None,
    on_failure: list[Callable[..., Any]] | None = None,
    on_running: list[Callable[..., Any]] | None = None,
    on_commit: list[Callable[..., Any]] | None = None,
    on_rollback: list[Callable[..., Any]] | None = None,
    redact_parameters: Iterable[str] | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(__fn: Any = None, **options: Any) -> Any:
    """Make a function a task: `@task` or `@task(retries=2, ...)`."""
    if __fn is not None:
        return Task(__fn, **options)

    def decorator(fn: Callable[P, R]) -> Task[P, R]:
        return Task(fn, **options)

    return decorator


__all__ = ["Task", "current_run", "task"]


def _option_signatures() -> None:
    """`inspect.signature(task)` and `inspect.signature(Task.with_options)` list the options (as Prefect's
    do), though both take them as `**options`."""
    options = [p for name, p in inspect.signature(Task.__init__).parameters.items() if name not in ("self", "fn")]
    fn = inspect.Parameter("__fn", inspect.Parameter.POSITIONAL_ONLY, default=None)
    task.__signature__ = inspect.Signature([fn, *options])  # type: ignore[attr-defined]
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    Task.with_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [this, *(p for p in options if p.name != "version")])


_option_signatures()
