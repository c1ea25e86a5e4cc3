"""Generator tasks and methods as tasks (seed 000)."""

import threading

import anyio
import anyio.lowlevel
import pytest
from helpers import Body

from asyncflow import flow, task
from asyncflow.testing import state_names


def test_generator_task_yields_values_that_feed_other_tasks(store):
    @task
    def generator():
        yield from range(3)

    @task
    def consumer(x):
        return x * 10

    assert [consumer(v) for v in generator()] == [0, 10, 20]
    runs = {r.task_name: r for r in store.read_task_runs()}
    assert state_names(store, runs["generator"].id) == ["Pending", "Running", "Completed"]


def test_generator_task_is_running_while_it_yields(store):
    @task
    def gen():
        yield 1
        yield 2

    iterator = gen()
    assert next(iterator) == 1
    run = store.read_task_runs()[0]
    assert run.state.name == "Running"
    assert list(iterator) == [2]
    assert run.state.name == "Completed"


def test_generator_task_failure_is_raised_and_recorded(store):
    @task
    def gen():
        yield 1
        raise ValueError("mid-stream")

    with pytest.raises(ValueError, match="mid-stream"):
        list(gen())
    assert store.read_task_runs()[0].state.is_failed()


def test_generator_retries_replay_from_the_start():
    attempts = []

    @task(retries=2)
    def gen():
        attempts.append(1)
        yield 1
        yield 2
        raise ValueError("again")

    seen = []
    with pytest.raises(ValueError):
        for value in gen():
            seen.append(value)
    assert seen == [1, 2, 1, 2, 1, 2] and len(attempts) == 3


def test_generator_return_value_lands_in_stop_iteration():
    @task
    def gen():
        yield 1
        return "done"

    iterator = gen()
    next(iterator)
    with pytest.raises(StopIteration) as info:
        next(iterator)
    assert info.value.value == "done"


def test_return_state_is_refused_for_generator_tasks():
    @task
    def gen():
        yield 1

    with pytest.raises(ValueError, match="generator task must be 'result'"):
        gen(return_state=True)


def test_returned_generator_is_consumed_into_a_list():
    consumed = []

    def inner():
        yield from [1, 2, 3]
        consumed.append(True)

    @task
    def f():
        return inner()

    assert f() == [1, 2, 3] and consumed == [True]


def test_yielded_generator_is_not_consumed():
    consumed = []

    def inner():
        yield from [1, 2, 3]
        consumed.append(True)

    @task
    def f():
        yield inner()

    generator = next(f())
    assert consumed == []
    assert list(generator) == [1, 2, 3] and consumed == [True]


@pytest.mark.anyio
async def test_async_generator_task(store):
    @task
    async def agen():
        for i in range(3):
            await anyio.lowlevel.checkpoint()
            yield i

    assert [v async for v in agen()] == [0, 1, 2]
    assert store.read_task_runs()[0].state.name == "Completed"


@pytest.mark.anyio
async def test_sync_generator_task_in_async_code_runs_its_steps_off_the_loop():
    import threading

    loop_thread = threading.get_ident()

    @task
    def gen():
        for _ in range(2):
            yield threading.get_ident()

    threads = [t async for t in gen()]
    assert len(threads) == 2 and loop_thread not in threads


class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    @task
    def greet(self, name):
        return f"{self.greeting}, {name}"

    @task(task_run_name="{self.greeting}-{name}")
    def named(self, name):
        from asyncflow.runtime import task_run

        return task_run.name

    @classmethod
    @task
    def make(cls, greeting):
        return cls(greeting)

    @staticmethod
    @task
    def shout(text):
        return text.upper()

    @task
    async def greet_async(self, name):
        return f"{self.greeting}, {name}!"


def test_instance_class_and_static_methods_are_tasks():
    greeter = Greeter("Hello")
    assert greeter.greet("Marvin") == "Hello, Marvin"
    assert Greeter.make("Hi").greeting == "Hi"
    assert Greeter.shout("hey") == "HEY"
    assert Greeter.greet(greeter, "Arthur") == "Hello, Arthur"


def test_instance_is_passed_by_identity_and_usable_in_run_names():
    greeter = Greeter("Hey")
    assert greeter.named("you") == "Hey-you"

    @task
    def identity(obj):
        return obj

    assert identity(greeter) is greeter


def test_methods_can_be_submitted_in_flows():
    greeter = Greeter("Yo")

    @flow
    def f():
        return greeter.greet.submit("a").result()

    assert f() == "Yo, a"


@pytest.mark.anyio
async def test_async_instance_method_task():
    assert await Greeter("Hi").greet_async("there") == "Hi, there!"


def test_flows_can_be_methods():
    class Pipeline:
        factor = 3

        @flow
        def run(self, x):
            return x * self.factor

    assert Pipeline().run(2) == 6


# -- generator tasks go through the engine's one attempt loop (issue 10, G1, G2, B11) --------------
def test_generator_retries_wait_their_delay_and_ask_the_retry_condition(store):
    from asyncflow.testing import fake_clock, state_names

    attempts = []
    asked = []

    def only_once(task, task_run, state):
        asked.append(state.name)
        return len(asked) < 2

    @task(retries=3, retry_delay_seconds=[1.5, 3.0], retry_condition_fn=only_once)
    def gen():
        attempts.append(1)
        yield 1
        raise ValueError("boom")

    with fake_clock() as clock, pytest.raises(ValueError, match="boom"):
        list(gen())
    assert len(attempts) == 2 and asked == ["Failed", "Failed"]
    assert clock.slept == [1.5]
    [run] = store.read_task_runs()
    assert state_names(store, run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Failed"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["virtual_asyncio", "virtual_trio"], indirect=True)
async def test_an_async_generator_task_times_out_in_its_own_steps_not_in_its_consumers(store):
    @task(timeout_seconds=2)
    async def agen():
        for i in range(3):
            await anyio.sleep(0.5 if i < 2 else 5)
            yield i

    seen = []
    start = anyio.current_time()
    with pytest.raises(TimeoutError):
        async for value in agen():
            seen.append(value)
            await anyio.sleep(10)  # the consumer's own time does not count against the generator
    assert seen == [0, 1]
    elapsed = anyio.current_time() - start
    assert elapsed == pytest.approx(0.5 + 10 + 0.5 + 10 + 1.0), elapsed
    [run] = store.read_task_runs()
    assert run.state.name == "TimedOut"


def test_a_sync_generator_task_past_its_timeout_is_stopped_and_timed_out(store):
    body = Body()  # blocks until the test lets it go on; the line after it must never run

    @task(timeout_seconds=0.1)
    def slow_gen():
        yield 1
        body.block()  # the step is stopped at its deadline
        yield 2

    seen = []
    with pytest.raises(TimeoutError):
        for value in slow_gen():
            seen.append(value)
    assert seen == [1]
    body.assert_stopped()
    assert store.read_task_runs()[0].state.name == "TimedOut"


@pytest.mark.anyio
async def test_generator_task_hooks_in_async_code_are_awaited_and_never_run_on_the_loop(store):
    loop_thread = threading.get_ident()
    seen = []

    async def async_hook(tk, run, state):
        seen.append(("async hook", state.name))

    def sync_hook(tk, run, state):
        seen.append(("sync hook off the loop", threading.get_ident() != loop_thread))

    @task(on_completion=[async_hook, sync_hook])
    async def numbers():
        yield 1
        yield 2

    @task(on_completion=[async_hook, sync_hook])
    def sync_numbers():
        yield 3

    @flow
    async def f():
        return [x async for x in numbers()] + [x async for x in sync_numbers()]

    assert await f() == [1, 2, 3]
    assert seen == [("async hook", "Completed"), ("sync hook off the loop", True)] * 2


def test_closing_a_generator_task_early_completes_its_run_and_closes_the_generator(store):
    closed = []

    @task
    def gen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    for value in gen():
        assert value == 1
        break
    assert closed == [True]
    assert store.read_task_runs()[0].state.name == "Completed"


def test_a_value_thrown_into_a_generator_task_reaches_the_generator(store):
    @task
    def gen():
        try:
            yield 1
        except KeyError:
            yield "handled"

    iterator = gen()
    assert next(iterator) == 1
    assert iterator.throw(KeyError("x")) == "handled"
    with pytest.raises(StopIteration):
        next(iterator)


def test_the_consumers_context_never_sees_the_generator_runs_context(store):
    from asyncflow._context import current_run

    @task
    def gen():
        yield current_run.get().task_run.name

    for name in gen():
        assert name.startswith("gen-")
        assert current_run.get() is None


@pytest.mark.parametrize("option", [
    {"cache_key_fn": lambda ctx, params: "k"}, {"persist_result": True}, {"refresh_cache": True},
    {"result_storage_key": "x"}])
def test_options_that_cannot_apply_to_a_generator_task_are_rejected_when_it_is_defined(option):
    def gen():
        yield 1

    with pytest.raises(ValueError, match=f"{next(iter(option))}.*generator task 'gen'"):
        task(**option)(gen)
