"""Tasks and flows as methods (Prefect's decorator orders): `@task`/`@flow` above or below
`@classmethod`/`@staticmethod`, sync and async; `instance.method` is a Task/Flow bound to the instance."""

from __future__ import annotations

import inspect

import pytest

from asyncflow import Flow, Task, flow, task


class Shop:
    def __init__(self, name):
        self.name = name

    @task
    def label(self, item):
        return f"{self.name}:{item}"

    @task
    async def label_async(self, item):
        return f"{self.name}:{item}"

    @task
    @classmethod
    def kind(cls, suffix=""):
        return cls.__name__ + suffix

    @task
    @classmethod
    async def kind_async(cls):
        return cls.__name__

    @classmethod
    @task
    def kind_other_order(cls):
        return cls.__name__

    @task
    @staticmethod
    def double(x):
        return 2 * x

    @task
    @staticmethod
    async def double_async(x):
        return 2 * x

    @staticmethod
    @task
    def triple(x):
        return 3 * x

    @flow
    def run(self, item):
        return self.label(item)

    @flow
    @classmethod
    def build(cls, name):
        return cls(name).label("x")

    @flow
    @staticmethod
    async def total(x):
        return await Shop.double_async(x)


class Outlet(Shop):
    pass


def test_a_task_accessed_on_an_instance_is_a_task_bound_to_that_instance():
    a, b = Shop("a"), Shop("b")
    assert isinstance(a.label, Task)
    assert a.label("x") == "a:x"
    assert b.label("x") == "b:x"  # the binding belongs to the access, not to the task
    assert a.label("y") == "a:y"
    assert Shop.label(b, "z") == "b:z"  # through the class, the instance is the first argument
    assert Shop.label.name == "label" and a.label.name == "label"


def test_a_bound_task_keeps_the_instance_by_identity_and_submits_and_maps_with_it():
    shop = Shop("s")

    @flow
    def f():
        return shop.label.submit("x").result(), shop.label.map(["p", "q"]).result()

    assert f() == ("s:x", ["s:p", "s:q"])


def test_a_bound_task_with_options_stays_bound():
    shop = Shop("s")
    renamed = shop.label.with_options(name="renamed")
    assert isinstance(renamed, Task) and renamed.name == "renamed"
    assert renamed("x") == "s:x"


def test_task_above_classmethod_is_a_task_receiving_the_class():
    assert isinstance(Shop.kind, Task) and isinstance(Shop("a").kind, Task)
    assert Shop.kind() == "Shop"
    assert Shop("a").kind("!") == "Shop!"
    assert Outlet.kind() == "Outlet"  # the class it is accessed through
    assert Shop.kind.name == "kind"


def test_classmethod_above_task_receives_the_class():
    assert Shop.kind_other_order() == "Shop"
    assert Outlet.kind_other_order() == "Outlet"


def test_task_above_staticmethod_is_a_task_that_receives_no_instance():
    assert isinstance(Shop.double, Task) and isinstance(Shop("a").double, Task)
    assert Shop.double(2) == 4
    assert Shop("a").double(3) == 6
    assert Shop.triple(2) == 6 and Shop("a").triple(2) == 6
    assert list(inspect.signature(Shop.double.fn).parameters) == ["x"]


def test_task_above_an_async_staticmethod_or_classmethod_is_an_async_task():
    assert Shop.double_async.isasync and Shop.kind_async.isasync
    assert not Shop.double.isasync


def test_flow_methods_are_flows_bound_like_tasks():
    shop = Shop("s")
    assert isinstance(shop.run, Flow) and isinstance(Shop.build, Flow) and isinstance(Shop.total, Flow)
    assert shop.run("x") == "s:x"
    assert Shop.build("b") == "b:x"
    assert Outlet.build("o") == "o:x"


def test_a_method_task_s_runs_are_recorded_under_its_name(store):
    Shop("s").label("x")
    Shop.kind()
    Shop.double(1)
    assert sorted(r.task_name for r in store.read_task_runs()) == ["double", "kind", "label"]


def test_a_classmethod_or_staticmethod_object_that_is_not_callable_underneath_is_refused():
    with pytest.raises(TypeError, match="@task must decorate"):
        task(classmethod(42))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_method_tasks_and_flows(anyio_backend):
    shop = Shop("s")
    assert isinstance(shop.label_async, Task)
    assert await shop.label_async("x") == "s:x"
    assert await Shop.kind_async() == "Shop"
    assert await Outlet("o").kind_async() == "Outlet"
    assert await Shop.double_async(4) == 8
    assert await Shop("a").double_async(5) == 10
    assert await Shop.total(3) == 6
