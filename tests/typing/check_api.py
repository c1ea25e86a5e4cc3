"""What type checkers infer for asyncflow's documented calls, checked by mypy (with the asyncflow.mypy
plugin) and pyright: `tests/test_typing.py` runs both on this file and wants zero errors.

- `assert_type(expr, T)`: both checkers must infer exactly T.
- A misuse ends with `# type: ignore[code]` (mypy, with warn_unused_ignores) and/or
  `# pyright: ignore[rule]` (pyright, with reportUnnecessaryTypeIgnoreComment): a misuse that stops
  being an error makes its ignore unused, which fails the check. pyright is told not to read mypy's
  `# type: ignore` comments, so each tool answers for itself.
- A line with only one tool's ignore is a known difference between them (docs/type-checking.md).

It also runs (`python tests/typing/check_api.py`): the calls typed here do what their types say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any

from typing_extensions import assert_type

from asyncflow import State, flow, task, unmapped
from asyncflow.futures import TaskRunFuture, TaskRunFutureList


@task
def add(a: int, b: int) -> int:
    return a + b


@task(retries=1)
async def aadd(a: int, b: int) -> int:
    return a + b


@task
def words(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"w{i}"


@task
def fail() -> int:
    raise ValueError("nope")


# -- sync code ---------------------------------------------------------------------------------------
@flow
def sync_flow(x: int) -> int:
    assert_type(add(1, 2), int)
    assert_type(add(a=1, b=2), int)
    assert_type(add(1, 2, return_state=True), State[int])
    assert_type(fail(return_state=True), State[int])
    assert_type(aadd(1, 2), Coroutine[Any, Any, int]).close()  # an async task in sync code: a coroutine

    future = add.submit(1, 2)
    assert_type(future, TaskRunFuture[int])
    assert_type(future.result(), int)
    assert_type(future.state, State[int])
    # futures are accepted where their result is expected: only with the mypy plugin (a ParamSpec cannot
    # widen parameter types; pyright has no plugins): docs/type-checking.md
    assert_type(add(future, 1), int)  # pyright: ignore[reportArgumentType]
    assert_type(add.submit(future, 1), TaskRunFuture[int])  # pyright: ignore[reportArgumentType]
    assert_type(add(1, 2, wait_for=[future]), int)
    assert_type(add.submit(1, 2, return_state=True), State[int])

    afuture = aadd.submit(1, 2)  # an async task's future holds its result, not a coroutine
    assert_type(afuture, TaskRunFuture[int])
    assert_type(afuture.result(), int)

    futures = add.map([1, 2, 3], unmapped(10))
    assert_type(futures, TaskRunFutureList[int])
    assert_type(futures[0], TaskRunFuture[int])
    assert_type(futures.result(), list[int])
    assert_type(aadd.map([1, 2], [3, 4]), TaskRunFutureList[int])
    assert_type(add.map([1, 2], [3, 4], return_state=True), list[State[int]])

    assert_type(list(words(2)), list[str])
    assert_type(add.with_options(retries=2)(1, 2), int)
    assert_type(add.with_options(name="plus").submit(1, 2), TaskRunFuture[int])
    return add(x, future.result()) + sum(futures.result()) + afuture.result()


# -- async code: every call is awaited ----------------------------------------------------------------
@flow
async def async_flow(x: int) -> int:
    assert_type(await aadd(1, 2), int)
    assert_type(await aadd(1, 2, return_state=True), State[int])
    # A sync task called in async code is awaited. Only the mypy plugin can type this (pyright has no
    # plugins and types the call as the result): docs/type-checking.md.
    assert_type(await add(1, 2), int)  # pyright: ignore[reportGeneralTypeIssues, reportAssertTypeFailure]
    assert_type(await add(1, 2, return_state=True), State[int])  # pyright: ignore[reportGeneralTypeIssues, reportAssertTypeFailure]
    assert_type(await sync_flow(1), int)  # pyright: ignore[reportGeneralTypeIssues, reportAssertTypeFailure]

    future = aadd.submit(1, 2)
    assert_type(future, TaskRunFuture[int])
    assert_type(await future, int)
    assert_type(await add.submit(1, 2), int)
    assert_type(await aadd(future, 1), int)  # pyright: ignore[reportArgumentType, reportCallIssue, reportAssertTypeFailure]

    futures = aadd.map([1, 2], [3, 4])
    assert_type(futures, TaskRunFutureList[int])
    assert_type([await f for f in futures], list[int])
    assert_type(await asyncio.gather(*futures), list[int])
    assert_type(await aadd.map([1, 2], [3, 4], return_state=True), list[State[int]])  # pyright: ignore[reportGeneralTypeIssues, reportAssertTypeFailure]
    assert_type(await aadd.submit(1, 2, return_state=True), State[int])  # pyright: ignore[reportGeneralTypeIssues, reportAssertTypeFailure]

    stream = words(2)  # a sync generator task in async code is an async generator
    assert_type(stream, AsyncGenerator[str, None])  # pyright: ignore[reportAssertTypeFailure]
    return await aadd(x, 1)


async def main() -> None:
    assert_type(await async_flow(1), int)


# -- misuses: each must be an error ------------------------------------------------------------------
def misuses_in_sync_code() -> None:
    add("1", 2)  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    add(1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    add(1, 2, 3)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    add(1, c=2)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    text: str = add(1, 2)  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    add.submit("1", 2)  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    add.submit(1, 2).result().upper()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    aadd.submit(1, 2).result().upper()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    add.with_options(retries=2)("1", 2)  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    sync_flow("1")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    label: str = sync_flow(1)  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    names: list[str] = add.map([1, 2], [3, 4]).result()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    del text, label, names


async def misuses_in_async_code() -> None:
    total: int = aadd(1, 2)  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    # a forgotten await on a sync task: only the plugin knows that the call is a coroutine here
    forgot: int = add(1, 2)  # type: ignore[assignment]
    del total, forgot


if __name__ == "__main__":
    print(sync_flow(1), asyncio.run(main()))
