"""Wrappers that change how a parameter is resolved or mapped."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class BaseAnnotation(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def rewrap(self, value: Any) -> BaseAnnotation[Any]:
        return type(self)(value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), id(self.value)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class quote(BaseAnnotation[T]):
    """Pass the value untouched: futures and states inside it are neither resolved nor traversed."""

    def unquote(self) -> T:
        return self.value


class opaque(BaseAnnotation[T]):
    """Resolve a top-level future or state, but do not traverse the resolved value."""


class allow_failure(BaseAnnotation[T]):
    """Let the downstream run even if this upstream failed; it receives the exception."""


class unmapped(BaseAnnotation[T]):
    """For `.map()`: pass the whole value to every mapped run instead of iterating it."""

    def __getitem__(self, _: Any) -> T:
        return self.value
