"""Small value classes without attrs: `import attrs` and building an attrs class (which compiles its
generated methods) cost ~67 M + ~2-3 M instructions each at start-up, more than half of what
`import asyncflow` costs beyond anyio. The records on the import path (states, runs, settings, store
records, options) are hand-written `__slots__` classes on these bases instead; attrs stays for the
modules imported on first use (client, server, caching, workers, limits).

A subclass declares its fields with `__slots__` (in constructor order) and writes its own `__init__`;
the bases give what attrs gave: the repr `Name(a=1, b='x')`, keyword pattern matching and
`__match_args__`, `replace(**changes)` (attrs.evolve), and optionally value equality and hashing
(`ValueEq`), frozen-ness (`Frozen`: setting or deleting an attribute raises `FrozenInstanceError`, an
`AttributeError`) and pickling and copying by the constructor's positional arguments (`Record`).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, ClassVar

_object_setattr = object.__setattr__


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen value was set or deleted (attrs' `FrozenInstanceError` for these)."""

    def __init__(self) -> None:
        super().__init__("can't set attribute")


def setters(cls: type) -> tuple[Any, ...]:
    """The `__set__` of each of the class's own slots, in order: the fastest way for a frozen class's
    `__init__` to set its fields (~3x faster than `object.__setattr__(self, name, value)`)."""
    return tuple(cls.__dict__[name].__set__ for name in cls.__dict__["__slots__"])


def _getter(fields: tuple[str, ...]) -> Any:
    if len(fields) == 1:
        get_one = attrgetter(fields[0])
        return lambda value: (get_one(value),)
    if not fields:
        return lambda value: ()
    return attrgetter(*fields)  # (one C call: a tuple of the fields' values)


class Value:
    """Base: fields are the `__slots__` of the class and its bases, in order (bases first)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _eq_fields: ClassVar[tuple[str, ...]] = ()
    _eq_exclude: ClassVar[tuple[str, ...]] = ()
    _astuple: ClassVar[Any] = staticmethod(lambda value: ())
    _eq_tuple: ClassVar[Any] = attrgetter("__class__")  # (an attrgetter is not bound as a method)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__slots__", ())
        fields = (*cls._fields, *(name for name in ((own,) if isinstance(own, str) else own)
                                  if not name.startswith("__")))
        cls._fields = fields
        cls.__match_args__ = fields  # type: ignore[attr-defined,misc]
        cls._eq_fields = tuple(name for name in fields if name not in cls._eq_exclude)
        cls._astuple = staticmethod(_getter(fields))
        eq_fields = cls._eq_fields
        cls._eq_tuple = attrgetter(*eq_fields, *eq_fields) if len(eq_fields) == 1 else (
            attrgetter(*eq_fields) if eq_fields else attrgetter("__class__"))

    def __repr__(self) -> str:
        values = self._astuple(self)
        inner = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, values, strict=True))
        return f"{type(self).__qualname__}({inner})"

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (attrs' `evolve`): the constructor is called with every field."""
        kwargs = dict(zip(self._fields, self._astuple(self), strict=True))
        kwargs.update(changes)
        return type(self)(**kwargs)


class ValueEq(Value):
    """Equal when of the same class with equal fields (minus `_eq_exclude`); hashable by those fields."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._eq_tuple(self) == self._eq_tuple(other))

    def __ne__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._eq_tuple(self) != self._eq_tuple(other))

    def __hash__(self) -> int:
        return hash((self.__class__, *self._eq_tuple(self)))


class Frozen(Value):
    """Attributes cannot be set or deleted after `__init__` (which sets them with `object.__setattr__`)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError()

    def _set_fields(self, *values: Any) -> None:
        """`__init__`'s assignment: every field, in order, its value (the hot records use `setters`)."""
        for name, value in zip(self._fields, values, strict=True):
            _object_setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError()


class Record(Value):
    """Pickled and copied as `(class, positional arguments)`: the constructor takes every field in order."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (self.__class__, self._astuple(self))
