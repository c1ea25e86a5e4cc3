"""Futures and states passed as task parameters are resolved before the task starts, also when
nested in collections, named tuples, dataclasses, attrs classes and pydantic models; `quote` and
`opaque` change that; untouched arguments are passed by identity.

SPEC §2; seed 001 ("Parameter resolution"); reference section 4.2 and items D.20, D.50, D.51,
D.68, D.71.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel
import attrs
import pydantic
import pytest
from helpers import run_in_thread

from asyncflow import allow_failure, flow, task
from asyncflow.futures import TaskRunFuture
from asyncflow.states import Completed, State
from asyncflow.utilities.annotations import opaque, quote


@task
def value_of(x: Any) -> Any:
    return x


@task
async def value_of_async(x: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return x


@task
def explode() -> None:
    raise ValueError("upstream failed")


class Recorder:
    """A task that records exactly the object it received (no copy through any result store)."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        recorder = self

        @task
        def record(x: Any) -> str:
            recorder.received.append(x)
            return "recorded"

        self.task = record

    @property
    def last(self) -> Any:
        assert self.received, "the task did not run"
        return self.received[-1]


class Point(NamedTuple):
    x: Any
    y: Any


@dataclasses.dataclass
class Box:
    content: Any
    label: str = "box"


@attrs.define
class AttrsBox:
    content: Any
    label: str = "box"


@attrs.define
class AttrsPrivate:
    _secret: Any
    public: Any = None


@attrs.frozen
class AttrsFrozen:
    content: Any


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    content: Any
    other: Any = None
    untouched: int = 7


# -- builtin collections ---------------------------------------------------------------------------
def test_future_passed_directly_is_replaced_by_its_result():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task.submit(value_of.submit(1)).wait()
        rec.task(value_of.submit(2))

    run_in_thread(f)
    assert rec.received == [1, 2]


def test_state_passed_as_parameter_is_replaced_by_its_result():
    rec = Recorder()

    @flow
    def f() -> None:
        state = value_of("from state", return_state=True)
        assert isinstance(state, State)
        rec.task(state)

    run_in_thread(f)
    assert rec.last == "from state"


def test_futures_in_a_list_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task([value_of.submit(1), value_of.submit(2), 3])

    run_in_thread(f)
    assert rec.last == [1, 2, 3]
    assert type(rec.last) is list


def test_futures_in_a_tuple_are_resolved_and_it_stays_a_tuple():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task((value_of.submit("a"), "b"))

    run_in_thread(f)
    assert rec.last == ("a", "b")
    assert type(rec.last) is tuple


def test_futures_in_a_set_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task({value_of.submit(1), value_of.submit(2), 3})

    run_in_thread(f)
    assert rec.last == {1, 2, 3}
    assert type(rec.last) is set


def test_futures_in_dict_values_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task({"a": value_of.submit(1), "b": 2})

    run_in_thread(f)
    assert rec.last == {"a": 1, "b": 2}


def test_futures_in_dict_keys_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task({value_of.submit("key"): "value"})

    run_in_thread(f)
    assert rec.last == {"key": "value"}


def test_states_in_a_collection_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task([value_of(1, return_state=True), {"k": value_of(2, return_state=True)}])

    run_in_thread(f)
    assert rec.last == [1, {"k": 2}]


def test_futures_in_deeply_nested_collections_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task({"outer": [value_of.submit(1), (value_of.submit(2), {"deep": [value_of.submit(3)]})]})

    run_in_thread(f)
    assert rec.last == {"outer": [1, (2, {"deep": [3]})]}


def test_futures_in_keyword_and_variadic_arguments_are_resolved():
    @task
    def gather(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    @flow
    def f() -> Any:
        return gather(value_of.submit(1), [value_of.submit(2)], key=value_of.submit(3))

    assert run_in_thread(f) == ((1, [2]), {"key": 3})


def test_a_cyclic_collection_with_a_future_is_resolved_without_recursing_forever():
    rec = Recorder()

    @flow
    def f() -> None:
        cyclic: list[Any] = [value_of.submit(1)]
        cyclic.append(cyclic)
        rec.task(cyclic)

    run_in_thread(f)
    assert rec.last[0] == 1


# -- named tuples, dataclasses, attrs, pydantic ----------------------------------------------------------
def test_futures_in_a_named_tuple_are_resolved_and_it_is_rebuilt_as_the_same_type():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(Point(x=value_of.submit(1), y=2))

    run_in_thread(f)
    assert type(rec.last) is Point
    assert rec.last == Point(1, 2)
    assert rec.last.x == 1


def test_futures_in_a_dataclass_are_resolved_and_it_is_rebuilt_as_the_same_type():
    rec = Recorder()
    original: list[Box] = []

    @flow
    def f() -> None:
        box = Box(content=value_of.submit([1, 2]), label="mine")
        original.append(box)
        rec.task(box)

    run_in_thread(f)
    assert type(rec.last) is Box
    assert rec.last == Box(content=[1, 2], label="mine")
    assert rec.last is not original[0]
    assert isinstance(original[0].content, TaskRunFuture)  # the caller's object is not mutated


def test_dataclass_is_rebuilt_with_dataclasses_replace_which_runs_post_init_again():
    """Seed 001: resolving `adjusted_rate` rebuilds the Pipeline with dataclasses.replace()."""
    init_count = 0

    @dataclasses.dataclass
    class Pipeline:
        base_rate: float
        adjusted_rate: Any = None

        def __post_init__(self) -> None:
            nonlocal init_count
            init_count += 1
            if self.adjusted_rate is None:
                self.adjusted_rate = self.base_rate * 1.5

    @task
    def get_rate() -> float:
        return 100.0

    seen: dict[str, Any] = {}

    @task
    def run_pipeline(pipeline: Pipeline) -> None:
        seen["init_count_inside_task"] = init_count
        seen["adjusted_rate"] = pipeline.adjusted_rate
        seen["base_rate"] = pipeline.base_rate

    @flow
    def my_flow() -> None:
        rate_future = get_rate.submit()
        pipeline = Pipeline(base_rate=42.0, adjusted_rate=rate_future)
        seen["init_count_before_task"] = init_count
        run_pipeline(pipeline)

    run_in_thread(my_flow)
    assert seen["init_count_before_task"] == 1
    assert seen["init_count_inside_task"] == 2
    assert seen["adjusted_rate"] == 100.0
    assert seen["base_rate"] == 42.0


def test_futures_in_an_attrs_class_are_resolved_and_it_is_rebuilt_as_the_same_type():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(AttrsBox(content=value_of.submit({"a": 1})))

    run_in_thread(f)
    assert type(rec.last) is AttrsBox
    assert rec.last == AttrsBox(content={"a": 1})


def test_futures_in_an_attrs_class_with_a_private_attribute_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(AttrsPrivate(secret=value_of.submit("hidden"), public=value_of.submit("shown")))

    run_in_thread(f)
    assert type(rec.last) is AttrsPrivate
    assert rec.last._secret == "hidden"
    assert rec.last.public == "shown"


def test_futures_in_a_frozen_attrs_class_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(AttrsFrozen(content=value_of.submit(5)))

    run_in_thread(f)
    assert rec.last == AttrsFrozen(content=5)


def test_futures_in_a_pydantic_model_are_resolved_and_it_is_rebuilt_as_the_same_type():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(Model(content=value_of.submit([1, 2]), other=value_of.submit("x")))

    run_in_thread(f)
    assert type(rec.last) is Model
    assert rec.last.content == [1, 2]
    assert rec.last.other == "x"
    assert rec.last.untouched == 7


def test_pydantic_model_is_rebuilt_with_model_construct_keeping_fields_set():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(Model(content=value_of.submit(1)))

    run_in_thread(f)
    assert rec.last.content == 1
    assert rec.last.model_fields_set == {"content"}  # defaults stay unset


def test_pydantic_model_rebuild_skips_validators():
    calls: list[Any] = []

    class Validated(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        content: Any

        @pydantic.field_validator("content")
        @classmethod
        def count(cls, value: Any) -> Any:
            calls.append(value)
            return value

    rec = Recorder()

    @flow
    def f() -> None:
        model = Validated(content=value_of.submit("v"))
        rec.task(model)

    run_in_thread(f)
    assert rec.last.content == "v"
    assert len(calls) == 1  # only the user's own construction validated; model_construct does not


def test_pydantic_model_rebuild_keeps_private_attributes():
    class WithPrivate(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        content: Any
        _cache: int = pydantic.PrivateAttr(default=0)

    rec = Recorder()

    @flow
    def f() -> None:
        model = WithPrivate(content=value_of.submit("v"))
        model._cache = 42
        rec.task(model)

    run_in_thread(f)
    assert rec.last.content == "v"
    assert rec.last._cache == 42


def test_futures_in_containers_nested_in_a_dataclass_are_resolved():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task(Box(content=[Point(value_of.submit(1), {"k": value_of.submit(2)})]))

    run_in_thread(f)
    assert rec.last == Box(content=[Point(1, {"k": 2})])
    assert type(rec.last.content[0]) is Point


# -- quote and opaque ---------------------------------------------------------------------------------
def test_quote_passes_the_object_untouched_without_resolving_futures_inside():
    rec = Recorder()
    originals: list[Any] = []

    @flow
    def f() -> None:
        upstream = value_of.submit(1)
        upstream.wait()
        payload = [upstream, {"k": upstream}]
        originals.append(payload)
        rec.task(quote(payload))

    run_in_thread(f)
    assert rec.last is originals[0]
    assert isinstance(rec.last[0], TaskRunFuture)
    assert isinstance(rec.last[1]["k"], TaskRunFuture)


def test_quote_leaves_a_dataclass_unrebuilt_so_post_init_runs_once():
    """Seed 001: `run_pipeline(quote(pipeline))` hands over the original object."""
    init_count = 0

    @dataclasses.dataclass
    class Pipeline:
        base_rate: float
        adjusted_rate: float = 0.0

        def __post_init__(self) -> None:
            nonlocal init_count
            init_count += 1
            self.adjusted_rate = self.base_rate * 1.5

    rec = Recorder()
    originals: list[Any] = []

    @flow
    def my_flow() -> None:
        pipeline = Pipeline(base_rate=100.0)
        originals.append(pipeline)
        rec.task(quote(pipeline))

    run_in_thread(my_flow)
    assert rec.last is originals[0]
    assert rec.last.adjusted_rate == 150.0
    assert init_count == 1


def test_quoted_state_is_passed_as_a_state():
    rec = Recorder()

    @flow
    def f() -> None:
        state = value_of(3, return_state=True)
        rec.task(quote(state))

    run_in_thread(f)
    assert isinstance(rec.last, State)
    assert rec.last.result() == 3


def test_opaque_resolves_a_top_level_future_without_rebuilding_its_result():
    """Seed 001: `run_pipeline.submit(opaque(future))` gets the very object build_pipeline returned."""
    init_count = 0
    built: list[Any] = []

    @dataclasses.dataclass
    class Pipeline:
        base_rate: float
        adjusted_rate: float = 0.0

        def __post_init__(self) -> None:
            nonlocal init_count
            init_count += 1
            self.adjusted_rate = self.base_rate * 1.5

    @task
    def build_pipeline(base_rate: float) -> Pipeline:
        pipeline = Pipeline(base_rate=base_rate)
        built.append(pipeline)
        return pipeline

    rec = Recorder()

    @flow
    def my_flow() -> None:
        future = build_pipeline.submit(100.0)
        rec.task.submit(opaque(future)).wait()

    run_in_thread(my_flow)
    assert rec.last is built[0]
    assert rec.last.adjusted_rate == 150.0
    assert init_count == 1


def test_opaque_does_not_traverse_the_resolved_value():
    inner_state = Completed(data="inner")

    @task
    def make_dict() -> dict[str, Any]:
        return {"state": inner_state}

    rec = Recorder()

    @flow
    def f() -> None:
        rec.task.submit(opaque(make_dict.submit())).wait()

    run_in_thread(f)
    assert isinstance(rec.last, dict)
    assert rec.last["state"] is inner_state  # left untouched


def test_without_opaque_a_state_inside_a_resolved_future_is_resolved_too():
    @task
    def make_dict() -> dict[str, Any]:
        return {"state": Completed(data="inner")}

    rec = Recorder()

    @flow
    def f() -> None:
        rec.task.submit(make_dict.submit()).wait()

    run_in_thread(f)
    assert rec.last == {"state": "inner"}


def test_opaque_of_a_plain_value_passes_it_untouched():
    rec = Recorder()
    originals: list[Any] = []

    @flow
    def f() -> None:
        upstream = value_of.submit(1)
        upstream.wait()
        payload = {"future": upstream}
        originals.append(payload)
        rec.task(opaque(payload))

    run_in_thread(f)
    assert rec.last is originals[0]
    assert isinstance(rec.last["future"], TaskRunFuture)


# -- allow_failure inside collections --------------------------------------------------------------------
def test_allow_failure_nested_in_a_collection_gives_the_exception():
    rec = Recorder()

    @flow
    def f() -> None:
        rec.task.submit({"result": allow_failure(explode.submit()), "other": 1}).wait()

    run_in_thread(f)
    assert isinstance(rec.last["result"], ValueError)
    assert rec.last["other"] == 1


def test_failed_future_nested_in_a_dataclass_leaves_the_task_not_run():
    rec = Recorder()

    @flow
    def f() -> dict[str, Any]:
        future = rec.task.submit(Box(content=explode.submit()))
        future.wait()
        return {"name": future.state.name}

    assert run_in_thread(f) == {"name": "NotReady"}
    assert rec.received == []


# -- identity: nothing is copied unless something changed ---------------------------------------------------
def test_arguments_without_futures_are_passed_by_identity():
    rec = Recorder()
    payloads: list[Any] = [[1, 2, {"a": [3]}], {"k": (1, 2)}, Box([1]), Point([1], 2), AttrsBox([1]),
                           Model(content=[1]), {1, 2}]

    @flow
    def f() -> None:
        for payload in payloads:
            rec.task(payload)

    run_in_thread(f)
    assert len(rec.received) == len(payloads)
    for got, sent in zip(rec.received, payloads, strict=True):
        assert got is sent


def test_task_mutations_of_an_argument_are_visible_to_the_caller():
    @task
    def append_one(items: list[int]) -> None:
        items.append(1)

    @flow
    def f() -> list[int]:
        items: list[int] = []
        append_one(items)
        append_one.submit(items).wait()
        return items

    assert run_in_thread(f) == [1, 1]


def test_unchanged_parts_of_a_rebuilt_collection_keep_their_identity():
    rec = Recorder()
    untouched = [1, 2, 3]
    untouched_box = Box(content="same")

    @flow
    def f() -> None:
        rec.task([value_of.submit(0), untouched, {"box": untouched_box}])

    run_in_thread(f)
    assert rec.last[0] == 0
    assert rec.last[1] is untouched
    assert rec.last[2]["box"] is untouched_box


def test_a_dataclass_without_futures_is_not_rebuilt():
    init_count = 0

    @dataclasses.dataclass
    class Counted:
        value: Any

        def __post_init__(self) -> None:
            nonlocal init_count
            init_count += 1

    rec = Recorder()
    instance = Counted([1, 2])

    @flow
    def f() -> None:
        rec.task(instance)

    run_in_thread(f)
    assert rec.last is instance
    assert init_count == 1


def test_generators_are_passed_through_without_being_consumed():
    rec = Recorder()
    generator = (i for i in range(3))

    @flow
    def f() -> None:
        rec.task(generator)

    run_in_thread(f)
    assert rec.last is generator
    assert list(generator) == [0, 1, 2]


# -- async flows ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_nested_futures_are_resolved_in_async_flows():
    rec = Recorder()

    @flow
    async def f() -> None:
        first = value_of_async.submit(1)
        second = value_of.submit(2)
        await rec.task({"list": [first], "tuple": (second,), "box": Box(first), "point": Point(first, second),
                        "model": Model(content=second)})

    with anyio.fail_after(10):
        await f()
    got = rec.last
    assert got["list"] == [1]
    assert got["tuple"] == (2,)
    assert got["box"] == Box(1)
    assert got["point"] == Point(1, 2) and type(got["point"]) is Point
    assert type(got["model"]) is Model and got["model"].content == 2


@pytest.mark.anyio
async def test_quote_and_opaque_in_async_flows():
    rec = Recorder()

    @flow
    async def f() -> None:
        upstream = value_of_async.submit(quote({"state": Completed(data="inner")}))
        await upstream
        await rec.task(quote([upstream]))
        await rec.task(opaque(upstream))

    with anyio.fail_after(10):
        await f()
    quoted, opaqued = rec.received
    assert isinstance(quoted[0], TaskRunFuture)
    assert isinstance(opaqued["state"], State)
