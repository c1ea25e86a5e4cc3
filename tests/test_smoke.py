import pytest

from asyncflow import flow, task
from asyncflow.testing import state_names


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    return a + b


def test_sync_flow_calls_and_submits_tasks(store):
    @flow
    def f(x: int) -> int:
        return add(x, 1) + add.submit(2, 3).result() + add_async.submit(1, 1).result()

    state = f(1, return_state=True)
    assert state.result() == 9
    assert state_names(store, state.state_details.flow_run_id) == ["Pending", "Running", "Completed"]


@pytest.mark.anyio
async def test_async_flow_awaits_every_call():
    @flow
    async def g(x: int) -> int:
        submitted = add.submit(1, 2)
        return await add(x, 1) + await add_async(1, 2) + await submitted

    assert await g(1) == 8
