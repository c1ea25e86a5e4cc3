"""A mypy plugin: the types of asyncflow's calls where annotations alone cannot give them.

Enable it in your mypy configuration (`plugins = ["asyncflow.mypy"]` under `[tool.mypy]`). It does two
things (docs/type-checking.md):

1. **The calling rule.** In async code every call of a task or flow is awaited: `await sync_task(x)`
   returns the result, and `sync_task(x)` there is an awaitable, not the result. Annotations cannot
   depend on the caller, so without the plugin a sync task's call is typed as its result, which is
   right in sync code. With it, a call of a sync task or flow inside an `async def` is typed
   `Coroutine[Any, Any, R]` (and a sync generator task's call an `AsyncGenerator`), as are
   `.submit(..., return_state=True)` and `.map(..., return_state=True)` there.
2. **Futures as arguments.** A task's parameter of type `T` also accepts a `TaskRunFuture[T]` (the
   engine passes the future's result): `add(future, 1)` and `add.submit(future, 1)` type-check, and a
   future of the wrong result type is an error. Only top-level arguments: a future inside a list is
   resolved at run time but typed as a future.

The plugin only changes types; it never changes what the code does.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.lookup import lookup_fully_qualified
from mypy.nodes import TypeInfo
from mypy.plugin import MethodContext, MethodSigContext, Plugin
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    NoneType,
    ProperType,
    Type,
    TypeOfAny,
    UnionType,
    get_proper_type,
)

_TASK = "asyncflow._tasks.Task"
_FLOW = "asyncflow._flows.Flow"
_FUTURE = "asyncflow._futures.TaskRunFuture"
_STATE = "asyncflow._states.State"
_CALLS = {f"{_TASK}.__call__", f"{_FLOW}.__call__"}
_RETURN_STATE = {f"{_TASK}.submit", f"{_TASK}.map"}
_FUTURE_ACCEPTING = {f"{_TASK}.__call__", f"{_TASK}.submit"}
_CALL_OPTIONS = {"return_state", "wait_for"}
_ASYNC_RESULTS = {"typing.Coroutine", "typing.Awaitable", "typing.AsyncGenerator", "typing.AsyncIterator",
                  "typing.AsyncIterable", "types.CoroutineType", "collections.abc.Coroutine",
                  "collections.abc.Awaitable", "collections.abc.AsyncGenerator", "collections.abc.AsyncIterator",
                  "collections.abc.AsyncIterable"}
_SYNC_GENERATORS = {"typing.Generator", "typing.Iterator", "typing.Iterable", "collections.abc.Generator",
                    "collections.abc.Iterator", "collections.abc.Iterable"}


def _in_async_code(ctx: MethodContext) -> bool:
    """True inside the body of an `async def` (its innermost enclosing function; a lambda is sync)."""
    scope = getattr(ctx.api, "scope", None)
    function = scope.current_function() if scope is not None else None
    return bool(function is not None and getattr(function, "is_coroutine", False))


def _function_result(ctx: MethodContext) -> ProperType | None:
    """R of the `Task[P, R]` / `Flow[P, R]` being called: the function's own return type."""
    owner = get_proper_type(ctx.type)
    if isinstance(owner, Instance) and owner.args:
        return get_proper_type(owner.args[-1])
    return None


def _awaitable(ctx: MethodContext, result: Type) -> Type:
    api = ctx.api
    anything = AnyType(TypeOfAny.special_form)
    return api.named_generic_type("typing.Coroutine", [anything, anything, result])


def _call_in_async_code(ctx: MethodContext) -> Type:
    """`sync_task(x)` / `sync_flow(x)` in an async def: an awaitable of what the call gives in sync code."""
    if not _in_async_code(ctx):
        return ctx.default_return_type
    function_result = _function_result(ctx)
    if function_result is None or isinstance(function_result, AnyType):
        return ctx.default_return_type
    if isinstance(function_result, Instance):
        if function_result.type.fullname in _ASYNC_RESULTS:
            return ctx.default_return_type  # an async function: its call is awaitable everywhere
        if function_result.type.fullname in _SYNC_GENERATORS and function_result.args:
            # a sync generator task in async code is an async generator (each step in a worker thread)
            returned = get_proper_type(ctx.default_return_type)
            if isinstance(returned, Instance) and returned.type.fullname in _SYNC_GENERATORS:
                sent = returned.args[1] if len(returned.args) > 1 else NoneType()
                return ctx.api.named_generic_type("typing.AsyncGenerator", [returned.args[0], sent])
    return _awaitable(ctx, ctx.default_return_type)


def _return_state_in_async_code(ctx: MethodContext) -> Type:
    """`.submit(..., return_state=True)` (a State) and `.map(..., return_state=True)` (a list of them)
    are awaitables in async code; the futures `.submit()` and `.map()` return otherwise are not."""
    if not _in_async_code(ctx):
        return ctx.default_return_type
    returned = get_proper_type(ctx.default_return_type)
    if isinstance(returned, Instance):
        state = returned
        if returned.type.fullname == "builtins.list" and returned.args:
            inner = get_proper_type(returned.args[0])
            if isinstance(inner, Instance):
                state = inner
        if state.type.fullname == _STATE:
            return _awaitable(ctx, ctx.default_return_type)
    return ctx.default_return_type


def _accept_futures(ctx: MethodSigContext) -> FunctionLike:
    """Each parameter of type T also takes a TaskRunFuture[T] (the engine passes its result)."""
    signature = ctx.default_signature
    if not isinstance(signature, CallableType):
        return signature
    modules = getattr(ctx.api, "modules", None)
    symbol = lookup_fully_qualified(_FUTURE, modules) if modules is not None else None
    future = symbol.node if symbol is not None else None
    if not isinstance(future, TypeInfo):
        return signature
    arg_types: list[Type] = []
    for name, arg_type in zip(signature.arg_names, signature.arg_types, strict=True):
        proper = get_proper_type(arg_type)
        if name in _CALL_OPTIONS or isinstance(proper, AnyType):
            arg_types.append(arg_type)
            continue
        # (`*args: T` and `**kwargs: T` are typed by their items, so the same union applies to them)
        arg_types.append(UnionType.make_union([arg_type, Instance(future, [arg_type])]))
    return signature.copy_modified(arg_types=arg_types)


class AsyncflowPlugin(Plugin):
    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        if fullname in _CALLS:
            return _call_in_async_code
        if fullname in _RETURN_STATE:
            return _return_state_in_async_code
        return None

    def get_method_signature_hook(self, fullname: str) -> Callable[[MethodSigContext], FunctionLike] | None:
        if fullname in _FUTURE_ACCEPTING:
            return _accept_futures
        return None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point (`plugins = ["asyncflow.mypy"]`)."""
    return AsyncflowPlugin
