"""`task.map(...)`: one submitted run per item of the iterable arguments; everything else broadcast.

SPEC §2 and §11 (`.map` over iterables of different lengths or no iterable); reference section 12
(shared mapping logic) and items D.52, D.56-D.64, L.153.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import add, add_async, run_in_thread

from asyncflow import allow_failure, flow, task, unmapped
from asyncflow.exceptions import MappingLengthMismatch, MappingMissingIterable
from asyncflow.futures import TaskRunFuture
from asyncflow.states import State, StateType
from asyncflow.utilities.annotations import quote
from asyncflow.utilities.annotations import unmapped as unmapped_from_annotations


@task
def double(x: int) -> int:
    return 2 * x


@task
def echo(x: Any) -> Any:
    return x


@task
def pair(left: Any, right: Any) -> tuple[Any, Any]:
    return left, right


@task
def make_list(n: int) -> list[int]:
    return list(range(n))


@task
def fail_odd(i: int) -> int:
    if i % 2:
        raise ValueError(f"odd {i}")
    return i


# -- what gets mapped -------------------------------------------------------------------------------
def test_map_over_lists_submits_one_run_per_item_and_zips_the_iterables():
    @flow
    def f() -> list[Any]:
        futures = add.map([1, 2, 3], [10, 20, 30])
        assert len(futures) == 3
        assert all(isinstance(fut, TaskRunFuture) for fut in futures)
        assert len({fut.task_run_id for fut in futures}) == 3
        return futures.result()

    assert run_in_thread(f) == [11, 22, 33]


def test_map_over_a_tuple():
    @flow
    def f() -> list[Any]:
        return double.map((1, 2, 3)).result()

    assert run_in_thread(f) == [2, 4, 6]


def test_map_over_a_generator():
    def numbers() -> Iterator[int]:
        yield from (5, 6, 7)

    @flow
    def f() -> list[Any]:
        return double.map(numbers()).result()

    assert run_in_thread(f) == [10, 12, 14]


def test_map_over_a_range():
    @flow
    def f() -> list[Any]:
        return double.map(range(4)).result()

    assert run_in_thread(f) == [0, 2, 4, 6]


def test_map_over_a_future_that_resolves_to_a_list():
    @flow
    def f() -> list[Any]:
        numbers = make_list.submit(4)
        return double.map(numbers).result()

    assert run_in_thread(f) == [0, 2, 4, 6]


def test_map_over_a_state_that_resolves_to_a_list():
    @flow
    def f() -> list[Any]:
        numbers = make_list(3, return_state=True)
        assert isinstance(numbers, State)
        return double.map(numbers).result()

    assert run_in_thread(f) == [0, 2, 4]


def test_map_over_a_list_of_futures_resolves_each_item():
    @flow
    def f() -> list[Any]:
        upstream = [add.submit(i, 1) for i in range(3)]
        return double.map(upstream).result()

    assert run_in_thread(f) == [2, 4, 6]


def test_map_can_chain_on_mapped_futures():
    @flow
    def f() -> list[Any]:
        return double.map(add.map([1, 2], [3, 4])).result()

    assert run_in_thread(f) == [8, 12]


def test_map_over_an_empty_list_submits_nothing():
    @flow
    def f() -> list[Any]:
        futures = double.map([])
        return [len(futures), futures.result()]

    assert run_in_thread(f) == [0, []]


# -- what gets broadcast ----------------------------------------------------------------------------
def test_unmapped_list_is_passed_whole_to_every_run():
    @flow
    def f() -> list[Any]:
        return pair.map([1, 2], unmapped([7, 8, 9])).result()

    assert run_in_thread(f) == [(1, [7, 8, 9]), (2, [7, 8, 9])]


def test_unmapped_is_also_importable_from_utilities_annotations():
    assert unmapped_from_annotations is unmapped


def test_unmapped_future_is_resolved_and_broadcast():
    @flow
    def f() -> list[Any]:
        whole = make_list.submit(3)
        return pair.map(["a", "b"], unmapped(whole)).result()

    assert run_in_thread(f) == [("a", [0, 1, 2]), ("b", [0, 1, 2])]


def test_strings_are_broadcast_not_iterated():
    @flow
    def f() -> list[Any]:
        return pair.map([1, 2, 3], "abc").result()

    assert run_in_thread(f) == [(1, "abc"), (2, "abc"), (3, "abc")]


def test_scalars_are_broadcast():
    @flow
    def f() -> list[Any]:
        return add.map([1, 2, 3], 100).result()

    assert run_in_thread(f) == [101, 102, 103]


def test_keyword_scalars_are_broadcast():
    @flow
    def f() -> list[Any]:
        return add.map(a=[1, 2], b=5).result()

    assert run_in_thread(f) == [6, 7]


def test_defaults_are_not_mapped():
    @task
    def with_default(x: int, y: int = 10) -> int:
        return x + y

    @flow
    def f() -> list[Any]:
        return with_default.map([1, 2, 3]).result()

    assert run_in_thread(f) == [11, 12, 13]


def test_iterable_defaults_are_not_mapped():
    @task
    def with_iterable_default(x: int, ys: tuple[int, ...] = (1, 2, 3)) -> tuple[int, tuple[int, ...]]:
        return x, ys

    @flow
    def f() -> list[Any]:
        return with_iterable_default.map([1, 2]).result()

    assert run_in_thread(f) == [(1, (1, 2, 3)), (2, (1, 2, 3))]


def test_variadic_keyword_values_are_mapped_or_broadcast():
    @task
    def kw(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    @flow
    def f() -> list[Any]:
        return kw.map(a=[1, 2], b=5).result()

    assert run_in_thread(f) == [{"a": 1, "b": 5}, {"a": 2, "b": 5}]


# -- annotations ----------------------------------------------------------------------------------
def test_quoted_iterable_is_still_mapped():
    @flow
    def f() -> list[Any]:
        futures = add.map(quote([1, 2, 3]), 1)
        assert len(futures) == 3
        return futures.result()

    assert run_in_thread(f) == [2, 3, 4]


def test_quoted_scalar_is_broadcast():
    @flow
    def f() -> list[Any]:
        return add.map(quote(1), [1, 2, 3]).result()

    assert run_in_thread(f) == [2, 3, 4]


def test_quoted_iterable_items_are_passed_untouched():
    received: list[Any] = []

    @task
    def inspect_item(item: Any) -> None:
        received.append(item)

    @flow
    def f() -> None:
        upstream = [add.submit(1, 1), add.submit(2, 2)]
        for fut in upstream:
            fut.wait()
        inspect_item.map(quote(upstream)).wait()

    run_in_thread(f)
    assert len(received) == 2
    assert all(isinstance(item, TaskRunFuture) for item in received)


def test_allow_failure_over_mapped_futures_gives_exceptions_for_failed_items():
    @flow
    def f() -> list[Any]:
        upstream = fail_odd.map([0, 1, 2])
        return echo.map(allow_failure(upstream)).result()

    results = run_in_thread(f)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 1"


def test_failed_mapped_upstream_leaves_only_its_downstream_not_ready():
    @flow
    def f() -> list[Any]:
        downstream = echo.map(fail_odd.map([0, 1, 2]))
        downstream.wait()
        return [fut.state.name for fut in downstream]

    assert run_in_thread(f) == ["Completed", "NotReady", "Completed"]


# -- errors -----------------------------------------------------------------------------------------
def test_map_with_iterables_of_different_lengths_raises_mapping_length_mismatch():
    @flow
    def f() -> str:
        with pytest.raises(MappingLengthMismatch) as info:
            pair.map([1, 2], [1, 2, 3])
        return str(info.value)

    message = run_in_thread(f)
    assert "length" in message.lower()
    assert "left" in message and "right" in message  # names the culprits
    assert "unmapped" in message  # and the fix


def test_mapping_length_mismatch_is_a_value_error():
    assert issubclass(MappingLengthMismatch, ValueError)


def test_map_without_any_iterable_raises_mapping_missing_iterable():
    @flow
    def f() -> str:
        with pytest.raises(MappingMissingIterable) as info:
            pair.map(1, "text")
        return str(info.value)

    message = run_in_thread(f)
    assert "iterable" in message.lower()
    assert "pair" in message  # names the task


def test_map_with_only_unmapped_arguments_raises_mapping_missing_iterable():
    @flow
    def f() -> str:
        with pytest.raises(MappingMissingIterable):
            pair.map(unmapped([1, 2]), unmapped([3, 4]))
        return "ok"

    assert run_in_thread(f) == "ok"


def test_mapping_errors_submit_no_runs(store):
    @flow
    def f() -> None:
        with pytest.raises(MappingLengthMismatch):
            pair.map([1, 2], [1, 2, 3])
        with pytest.raises(MappingMissingIterable):
            pair.map(1, 2)

    flow_state = run_in_thread(lambda: f(return_state=True))
    assert flow_state.is_completed()
    flow_run_id = flow_state.state_details.flow_run_id
    assert store.read_task_runs(flow_run_id=flow_run_id) == []


def test_map_outside_a_flow_raises_runtime_error():
    with pytest.raises(RuntimeError):
        double.map([1, 2, 3])


# -- results, wait, return_state --------------------------------------------------------------------
def test_mapped_futures_result_returns_the_results_in_order():
    @flow
    def f() -> list[Any]:
        return echo.map(["x", "y", "z"]).result()

    assert run_in_thread(f) == ["x", "y", "z"]


def test_mapped_futures_result_raises_the_first_failure():
    @flow
    def f() -> str:
        with pytest.raises(ValueError, match="odd 1"):
            fail_odd.map([0, 1, 2]).result()
        return "ok"

    assert run_in_thread(f) == "ok"


def test_mapped_futures_wait_then_every_run_is_completed():
    @flow
    def f() -> list[Any]:
        futures = double.map([1, 2, 3])
        assert futures.wait() is None
        return [fut.state.type for fut in futures]

    assert run_in_thread(f) == [StateType.COMPLETED] * 3


def test_map_with_return_state_returns_final_states():
    @flow
    def f() -> dict[str, Any]:
        states = fail_odd.map([0, 1, 2], return_state=True)
        return {"states": states}

    states = run_in_thread(f)["states"]
    assert len(states) == 3
    assert all(isinstance(s, State) for s in states)
    assert [s.type for s in states] == [StateType.COMPLETED, StateType.FAILED, StateType.COMPLETED]
    assert states[0].result() == 0 and states[2].result() == 2


# -- async flows ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_map_in_async_flow_returns_awaitable_futures():
    @flow
    async def f() -> list[Any]:
        sync_futures = add.map([1, 2], [3, 4])
        async_futures = add_async.map([5, 6], 10)
        return [await fut for fut in sync_futures] + [await fut for fut in async_futures]

    with anyio.fail_after(10):
        assert await f() == [4, 6, 15, 16]


@pytest.mark.anyio
async def test_map_in_async_flow_over_a_finished_future_that_resolves_to_a_list():
    @flow
    async def f() -> list[Any]:
        numbers = make_list.submit(3)
        await numbers  # finished, so mapping over it needs no blocking wait on the loop
        return [await fut for fut in double.map(numbers)]

    with anyio.fail_after(10):
        assert await f() == [0, 2, 4]


@pytest.mark.anyio
async def test_map_errors_are_raised_in_async_flow():
    @flow
    async def f() -> str:
        with pytest.raises(MappingLengthMismatch):
            add_async.map([1], [1, 2])
        with pytest.raises(MappingMissingIterable):
            add_async.map(1, 2)
        return "ok"

    with anyio.fail_after(10):
        assert await f() == "ok"


@pytest.mark.anyio
async def test_map_with_return_state_is_awaitable_in_async_code():
    @task
    def double(x):
        return 2 * x

    @flow
    async def f():
        states = await double.map([1, 2], return_state=True)
        return [await s.result() for s in states]

    assert await f() == [2, 4]
