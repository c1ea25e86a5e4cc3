"""Tasks and flows as methods, in either decorator order (as in Prefect):

    @task                 @classmethod          @task                @staticmethod
    @classmethod          @task                 @staticmethod        @task
    def f(cls): ...       def f(cls): ...       def f(): ...         def f(): ...

`@task` over `@classmethod`/`@staticmethod` unwraps the function and remembers the kind. Accessing a
task (or flow) through an instance, or a classmethod task through its class, gives a `Bound` copy: an
instance of the same class (`isinstance(obj.method, Task)`), sharing every option with the task, that
passes the instance (or class) as the first argument of each call, submit and map.
"""

from __future__ import annotations

from typing import Any

from ._engine.calling import see_through

INSTANCE, CLASS, STATIC = None, "class", "static"


def unwrap(fn: Any) -> tuple[Any, str | None]:
    """The function under `classmethod`/`staticmethod` and which of the two it was."""
    if isinstance(fn, classmethod):
        return fn.__func__, CLASS
    if isinstance(fn, staticmethod):
        return fn.__func__, STATIC
    return fn, INSTANCE


def rewrap(fn: Any, kind: str | None) -> Any:
    """The inverse of `unwrap` (for `with_options`, which builds the object again from `fn`)."""
    if kind == CLASS:
        return classmethod(fn)
    if kind == STATIC:
        return staticmethod(fn)
    return fn


def get(obj: Any, bound_class: type, instance: Any, owner: Any) -> Any:
    """The descriptor protocol for Task and Flow (`bound_class` is BoundTask or BoundFlow)."""
    kind = obj.method_kind
    if kind == STATIC:
        return obj
    if kind == CLASS:
        target = owner if owner is not None else type(instance)
    elif instance is None:
        return obj
    else:
        target = instance
    return bind(bound_class, obj, target)


def bind(bound_class: type, obj: Any, target: Any) -> Any:
    bound: Any = object.__new__(bound_class)
    attributes = bound.__dict__
    attributes["_unbound"] = obj
    attributes["_self"] = target
    attributes["__doc__"] = obj.__doc__
    attributes["__name__"] = obj.__name__
    attributes["__wrapped__"] = obj.__wrapped__
    return bound


class Bound:
    """Mixed in before Task or Flow: reads every attribute from the unbound object, and prepends the
    instance (or class) to the arguments of each call."""

    _unbound: Any
    _self: Any

    def __getattr__(self, name: str) -> Any:  # only for names not found on the object itself
        if name.startswith("__") or name in ("_unbound", "_self"):
            raise AttributeError(name)
        return getattr(self._unbound, name)

    @see_through  # the calling rule looks at who called the bound method
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._unbound(self._self, *args, **kwargs)

    @see_through  # the calling rule looks at who called the bound method
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self._unbound.submit(self._self, *args, **kwargs)

    @see_through  # the calling rule looks at who called the bound method
    def map(self, *args: Any, **kwargs: Any) -> Any:
        from ._annotations import unmapped

        return self._unbound.map(unmapped(self._self), *args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self._unbound.delay(self._self, *args, **kwargs)

    def apply_async(self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
                    wait_for: Any = None) -> Any:
        return self._unbound.apply_async((self._self, *(args or ())), kwargs, wait_for)

    def with_options(self, **options: Any) -> Any:
        return bind(type(self), self._unbound.with_options(**options), self._self)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self

    def __repr__(self) -> str:
        return f"<bound {self._unbound!r} of {self._self!r}>"
