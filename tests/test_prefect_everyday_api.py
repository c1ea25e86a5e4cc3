"""Behaviours migrating Prefect code relies on (issue 16's "~20 more")."""

from __future__ import annotations

import inspect

import pydantic
import pytest

from asyncflow import Flow, Task, allow_failure, flow, task
from asyncflow.exceptions import InvalidNameError
from asyncflow.states import Completed


@task
def fails():
    raise ValueError("upstream broke")


@task
def ok(x=1):
    return x


@task
def pair(y, z):
    return y, z


def test_result_without_raising_of_a_flow_that_returned_states_is_those_states():
    @flow
    def returns_states():
        return fails(return_state=True), ok(return_state=True)

    state = returns_states(return_state=True)
    assert state.is_failed()
    data = state.result(raise_on_failure=False)
    assert isinstance(data, tuple) and data[0].is_failed() and data[1].is_completed()
    with pytest.raises(ValueError, match="upstream broke"):
        state.result()


def test_a_flow_returning_a_tuple_of_completed_states_gives_the_caller_the_tuple():
    @flow
    def returns_states():
        return Completed(data=1), ok(2, return_state=True)

    result = returns_states()
    assert isinstance(result, tuple) and [s.result() for s in result] == [1, 2]


def test_a_future_passed_to_a_subflow_is_resolved_to_its_result():
    @flow
    def child(x):
        return x + 1

    @flow
    def parent():
        return child(ok.submit(5))

    assert parent() == 6


@pytest.mark.anyio
async def test_a_future_passed_to_an_async_subflow_is_resolved(anyio_backend):
    @task
    async def aok(x):
        return x

    @flow
    async def child(x):
        return x * 2

    @flow
    async def parent():
        return await child(aok.submit(4))

    assert await parent() == 8


def test_a_failed_future_passed_to_a_subflow_leaves_it_not_ready():
    @flow
    def child(x):
        return x

    @flow
    def parent():
        return child(fails.submit(), return_state=True)

    state = parent(return_state=True)
    assert state.is_failed()
    [inner] = [s for s in [state.result(raise_on_failure=False)] if s is not None]
    assert inner.name == "NotReady"


def test_map_with_allow_failure_of_a_failed_future_broadcasts_the_failure():
    @flow
    def f():
        return pair.map([1, 2, 3], allow_failure(fails.submit())).result()

    results = f()
    assert [y for y, _ in results] == [1, 2, 3]
    assert all(isinstance(z, ValueError) and z.args == ("upstream broke",) for _, z in results)


def test_map_with_allow_failure_over_mapped_futures_maps_them():
    @task
    def fails_on_two(x):
        if x == 2:
            raise ValueError("two")
        return x

    @task
    def identity(v):
        return v

    @flow
    def f():
        return identity.map(allow_failure(fails_on_two.map([1, 2, 3]))).result()

    one, two, three = f()
    assert (one, three) == (1, 3) and isinstance(two, ValueError)


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


def test_pydantic_model_flow_parameters_are_coerced_from_dicts():
    @flow
    def where(point: Point, points: list[Point]):
        return point, points

    point, points = where({"x": "3"}, [{"x": 1, "y": 2}])
    assert point == Point(x=3) and points == [Point(x=1, y=2)]


def test_task_tags_are_a_set_that_with_options_copies():
    @task(tags=["a", "b"])
    def tagged():
        pass

    copy = tagged.with_options(name="other")
    tagged.tags.add("c")
    assert isinstance(tagged.tags, set) and tagged.tags == {"a", "b", "c"}
    assert copy.tags == {"a", "b"}


def test_signatures_list_the_options_and_reflect_the_function():
    task_options = set(inspect.signature(task).parameters) - {"__fn"}
    assert {"name", "retries", "cache_policy", "tags", "timeout_seconds"} <= task_options
    assert task_options - {"version"} == set(inspect.signature(Task.with_options).parameters) - {"self"}
    flow_options = set(inspect.signature(flow).parameters) - {"__fn"}
    assert flow_options == set(inspect.signature(Flow.with_options).parameters) - {"self"}
    assert str(inspect.signature(ok)) == "(x=1)"


def test_an_invalid_flow_name_gets_prefect_s_message():
    with pytest.raises(InvalidNameError, match=r"contains an invalid character.*Must not contain any of"):
        flow(name="a/b")(lambda: None)
