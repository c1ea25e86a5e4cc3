"""Managing concurrency limits through the client, as Prefect 3 users do (`get_client()` and
`get_client(sync_client=True)`): tag limits and global limits, with Prefect's method names, schemas,
return shapes and errors, on a real SQLite store file and on a real PostgreSQL server; and a limit
created this way is the one `concurrency()` and tag-limited task runs wait for."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import anyio
import pytest

from asyncflow import flow, task
from asyncflow.client import get_client
from asyncflow.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from asyncflow.client.schemas.objects import ConcurrencyLimit
from asyncflow.client.schemas.responses import GlobalConcurrencyLimitResponse
from asyncflow.concurrency import asyncio as aconc
from asyncflow.concurrency import sync as sconc
from asyncflow.exceptions import ObjectAlreadyExists, ObjectNotFound

pytest_plugins = ["limits_fixtures"]  # sqlite_store, limits_store, fake_clock


# -- tag limits ---------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_creates_reads_lists_resets_and_deletes_tag_limits(limits_store):
    async with get_client() as client:
        limit_id = await client.create_concurrency_limit(tag="io", concurrency_limit=2)
        await client.create_concurrency_limit("gpu", 1)
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=5))
        assert isinstance(limit_id, uuid.UUID)

        read = await client.read_concurrency_limit_by_tag("io")
        assert isinstance(read, ConcurrencyLimit)
        assert (read.id, read.tag, read.concurrency_limit, read.active_slots) == (limit_id, "io", 2, [])
        assert isinstance(read.created, dt.datetime) and read.created.tzinfo is not None
        assert read.updated >= read.created

        listed = await client.read_concurrency_limits(limit=10, offset=0)  # tag limits only, by tag
        assert [(cl.tag, cl.concurrency_limit) for cl in listed] == [("gpu", 1), ("io", 2)]
        assert [cl.tag for cl in await client.read_concurrency_limits(limit=1, offset=1)] == ["io"]

        with sconc.concurrency("tag:io", occupy=2):
            await client.reset_concurrency_limit_by_tag("io")
            assert (await client.read_global_concurrency_limit_by_name("tag:io")).active_slots == 0
        assert await client.delete_concurrency_limit_by_tag("io") is None
        with pytest.raises(ObjectNotFound, match="No tag concurrency limit for tag 'io'"):
            await client.read_concurrency_limit_by_tag("io")
        assert [cl.tag for cl in await client.read_concurrency_limits(10, 0)] == ["gpu"]


def test_sync_client_manages_tag_limits(limits_store):
    with get_client(sync_client=True) as client:
        limit_id = client.create_concurrency_limit("io", 3)
        assert client.read_concurrency_limit_by_tag("io").id == limit_id
        assert [cl.concurrency_limit for cl in client.read_concurrency_limits(10, 0)] == [3]
        client.reset_concurrency_limit_by_tag("io")
        client.delete_concurrency_limit_by_tag("io")
        assert client.read_concurrency_limits(10, 0) == []


def test_creating_a_tag_limit_again_changes_it_and_keeps_its_id(limits_store):
    """Prefect's server upserts a tag limit: a second create sets the new limit on the same limit."""
    with get_client(sync_client=True) as client:
        first = client.create_concurrency_limit("io", 1)
        with sconc.concurrency("tag:io"):  # a holder keeps its slot across the change
            assert client.create_concurrency_limit("io", 4) == first
            assert client.read_global_concurrency_limit_by_name("tag:io").active_slots == 1
        assert client.read_concurrency_limit_by_tag("io").concurrency_limit == 4


def test_a_tag_limit_created_through_the_client_limits_task_runs_and_lists_their_ids(limits_store):
    lock, active, peak, seen = threading.Lock(), [0], [0], []

    @task(tags=["io"])
    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        with get_client(sync_client=True) as client:
            seen.append(client.read_concurrency_limit_by_tag("io").active_slots)
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return i

    @flow
    def pipeline() -> list[int]:
        return work.map(range(6)).result()

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit("io", 2)
        assert pipeline() == list(range(6))
        assert client.read_concurrency_limit_by_tag("io").active_slots == []
    assert 1 <= peak[0] <= 2
    task_run_ids = {run.id for run in limits_store.read_task_runs()}
    assert all(1 <= len(ids) <= 2 and set(ids) <= task_run_ids for ids in seen)


@pytest.mark.anyio
async def test_a_tag_limit_created_with_the_async_client_limits_async_task_runs(limits_store):
    active, peak, want, enough = [0], [0], [1], [anyio.Event()]

    @task(tags=["gpu"])
    async def train(i: int) -> int:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        if peak[0] >= want[0]:
            enough[0].set()
        with anyio.move_on_after(10):  # hold the slot until as many runs as the limit allows are in
            await enough[0].wait()
        active[0] -= 1
        return i

    @flow
    async def pipeline() -> list[int]:
        return [await f for f in train.map(range(5))]  # all five start at once on the loop

    async with get_client() as client:
        await client.create_concurrency_limit("gpu", 1)
        assert await pipeline() == list(range(5))
        assert peak[0] == 1
        await client.create_concurrency_limit("gpu", 3)  # raised at once for this process's task runs
        peak[0], want[0], enough[0] = 0, 3, anyio.Event()
        assert await pipeline() == list(range(5))
        assert peak[0] == 3


def test_reset_with_slot_override_keeps_only_those_task_runs_slots(limits_store):
    keep, drop = uuid.uuid4(), uuid.uuid4()
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit("io", 3)
        with sconc.concurrency("tag:io", holder={"type": "task_run", "id": str(keep)}), \
                sconc.concurrency("tag:io", holder={"type": "task_run", "id": str(drop)}), \
                sconc.concurrency("tag:io"):
            assert sorted(client.read_concurrency_limit_by_tag("io").active_slots) == sorted([keep, drop])
            assert client.read_global_concurrency_limit_by_name("tag:io").active_slots == 3
            client.reset_concurrency_limit_by_tag("io", slot_override=[str(keep), uuid.uuid4()])
            assert client.read_concurrency_limit_by_tag("io").active_slots == [keep]
            assert client.read_global_concurrency_limit_by_name("tag:io").active_slots == 1
        with pytest.raises(ValueError, match=r"slot_override must be a list of task run ids.*'nope'"):
            client.reset_concurrency_limit_by_tag("io", slot_override=["nope"])


# -- global limits ------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_creates_reads_updates_and_deletes_global_limits(limits_store):
    async with get_client() as client:
        limit_id = await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="db", limit=3, slot_decay_per_second=0.5, active=False))
        read = await client.read_global_concurrency_limit_by_name("db")
        assert isinstance(read, GlobalConcurrencyLimitResponse)
        assert (read.id, read.name, read.limit, read.active, read.active_slots, read.slot_decay_per_second) == (
            limit_id, "db", 3, False, 0, 0.5)

        updated = await client.update_global_concurrency_limit("db", GlobalConcurrencyLimitUpdate(limit=5, active=True))
        assert (updated.limit, updated.active, updated.slot_decay_per_second) == (5, True, 0.5)
        assert (await client.read_global_concurrency_limit_by_name("db")).limit == 5

        await client.delete_global_concurrency_limit_by_name("db")
        with pytest.raises(ObjectNotFound, match="No concurrency limit 'db'"):
            await client.read_global_concurrency_limit_by_name("db")


def test_sync_client_manages_global_limits(limits_store):
    with get_client(sync_client=True) as client:
        limit_id = client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=2))
        read = client.read_global_concurrency_limit_by_name("db")
        assert (read.id, read.limit, read.active, read.slot_decay_per_second) == (limit_id, 2, True, 0.0)
        client.update_global_concurrency_limit("db", GlobalConcurrencyLimitUpdate(slot_decay_per_second=1.5))
        assert client.read_global_concurrency_limit_by_name("db").slot_decay_per_second == 1.5
        client.delete_global_concurrency_limit_by_name("db")
        assert client.read_global_concurrency_limits() == []


def test_creating_a_global_limit_twice_raises_object_already_exists(limits_store):
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=2))
        with pytest.raises(ObjectAlreadyExists, match="'db' exists already"):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=9))
        assert client.read_global_concurrency_limit_by_name("db").limit == 2


@pytest.mark.anyio
async def test_every_call_on_a_missing_limit_raises_object_not_found(sqlite_store):
    update = GlobalConcurrencyLimitUpdate(limit=1)
    async with get_client() as client:
        for call in (client.read_concurrency_limit_by_tag("x"), client.reset_concurrency_limit_by_tag("x"),
                     client.delete_concurrency_limit_by_tag("x"), client.read_global_concurrency_limit_by_name("x"),
                     client.update_global_concurrency_limit("x", update),
                     client.delete_global_concurrency_limit_by_name("x")):
            with pytest.raises(ObjectNotFound):
                await call
    with get_client(sync_client=True) as sync:
        for fn, args in ((sync.read_concurrency_limit_by_tag, ("x",)), (sync.reset_concurrency_limit_by_tag, ("x",)),
                         (sync.delete_concurrency_limit_by_tag, ("x",)),
                         (sync.read_global_concurrency_limit_by_name, ("x",)),
                         (sync.update_global_concurrency_limit, ("x", update)),
                         (sync.delete_global_concurrency_limit_by_name, ("x",))):
            with pytest.raises(ObjectNotFound):
                fn(*args)
    assert issubclass(ObjectNotFound, KeyError)  # (what asyncflow's reads raised before: code catching it still does)


@pytest.mark.anyio
async def test_upsert_creates_then_changes_only_what_differs(limits_store):
    async with get_client() as client:
        assert await client.upsert_global_concurrency_limit_by_name("db", 2) is None
        first = await client.read_global_concurrency_limit_by_name("db")
        await client.upsert_global_concurrency_limit_by_name("db", 2)  # the same: nothing written
        assert (await client.read_global_concurrency_limit_by_name("db")).updated == first.updated
        await client.upsert_global_concurrency_limit_by_name("db", 4, slot_decay_per_second=2.0)
        changed = await client.read_global_concurrency_limit_by_name("db")
        assert (changed.id, changed.limit, changed.slot_decay_per_second) == (first.id, 4, 2.0)


def test_read_global_concurrency_limits_pages_every_limit_by_name(limits_store):
    with get_client(sync_client=True) as client:
        for name in ("c", "a", "b"):
            client.upsert_global_concurrency_limit_by_name(name, 1)
        client.create_concurrency_limit("io", 1)  # a tag limit is the limit "tag:io", as in Prefect
        assert [gcl.name for gcl in client.read_global_concurrency_limits()] == ["a", "b", "c", "tag:io"]
        assert [gcl.name for gcl in client.read_global_concurrency_limits(limit=2, offset=1)] == ["b", "c"]
        assert client.read_global_concurrency_limits(limit=0) == []


def test_update_renames_and_frees_slots_and_an_id_works_as_a_name(limits_store):
    with get_client(sync_client=True) as client:
        limit_id = client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=2))
        assert client.read_global_concurrency_limit_by_name(str(limit_id)).name == "db"  # Prefect: id or name
        with sconc.concurrency("db"):
            assert client.read_global_concurrency_limit_by_name("db").active_slots == 1
            renamed = client.update_global_concurrency_limit("db", GlobalConcurrencyLimitUpdate(name="database"))
            assert renamed.name == "database" and renamed.active_slots == 1  # the holder's slot moved with it
            client.update_global_concurrency_limit("database", GlobalConcurrencyLimitUpdate(active_slots=0))
            assert client.read_global_concurrency_limit_by_name("database").active_slots == 0
        with pytest.raises(ObjectNotFound):
            client.read_global_concurrency_limit_by_name("db")
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="other", limit=1))
        with pytest.raises(ObjectAlreadyExists, match="'other' exists already"):
            client.update_global_concurrency_limit("database", GlobalConcurrencyLimitUpdate(name="other"))
        client.delete_global_concurrency_limit_by_name(str(renamed.id))
        assert [gcl.name for gcl in client.read_global_concurrency_limits()] == ["other"]


def test_rate_limit_slots_count_until_they_have_decayed(sqlite_store, fake_clock):
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="api", limit=2,
                                                                            slot_decay_per_second=1.0))
        sconc.rate_limit("api", occupy=2)
        fake_clock.now += 1.5  # half a slot still taken: it counts (a claim of 2 would wait)
        assert client.read_global_concurrency_limit_by_name("api").active_slots == 1
        fake_clock.now += 1.0
        assert client.read_global_concurrency_limit_by_name("api").active_slots == 0


@pytest.mark.anyio
async def test_a_global_limit_created_through_the_client_is_enforced_by_concurrency(limits_store):
    active, peak = [0], [0]

    async def worker() -> None:
        async with aconc.concurrency("db", timeout_seconds=30):
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            await anyio.sleep(0.02)
            active[0] -= 1

    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=2))
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(worker)
        assert peak[0] == 2
        await client.update_global_concurrency_limit("db", GlobalConcurrencyLimitUpdate(active=False))
        async with aconc.concurrency("db", occupy=2), aconc.concurrency("db", occupy=2, timeout_seconds=0):
            pass  # inactive: does not limit


# -- bad input, Prefect's import paths ---------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"name": "db", "limit": 0}, ValueError, "at least 1 slot; got 0"),
    ({"name": "db", "limit": "3"}, TypeError, "whole number of slots"),
    ({"name": 3, "limit": 1}, TypeError, "name must be a string; got int 3"),
    ({"name": "db", "limit": 1, "slot_decay_per_second": -1}, ValueError, "slot_decay_per_second must be"),
    ({"name": "db", "limit": 1, "active_slots": 2}, ValueError, "active_slots can only be 0"),
    ({"name": "db", "limit": 1, "active": "yes"}, TypeError, "active must be True or False"),
])
def test_bad_schema_fields_are_rejected_when_the_schema_is_made(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalConcurrencyLimitCreate(**kwargs)


def test_bad_update_fields_and_arguments_name_the_culprit(sqlite_store):
    with pytest.raises(ValueError, match="at least 1 slot"):
        GlobalConcurrencyLimitUpdate(limit=-1)
    with pytest.raises(ValueError, match="active_slots can only be 0"):
        GlobalConcurrencyLimitUpdate(active_slots=3)
    with pytest.raises(TypeError, match="positional"):  # keyword arguments only, as pydantic models
        GlobalConcurrencyLimitCreate("db", 1)  # type: ignore[misc]
    with get_client(sync_client=True) as client:
        with pytest.raises(TypeError, match=r"a GlobalConcurrencyLimitCreate.*got dict"):
            client.create_global_concurrency_limit({"name": "db", "limit": 1})
        with pytest.raises(TypeError, match=r"a GlobalConcurrencyLimitUpdate.*got GlobalConcurrencyLimitCreate"):
            client.update_global_concurrency_limit("db", GlobalConcurrencyLimitCreate(name="db", limit=1))
        with pytest.raises(ValueError, match="limit must be an int >= 0; got -1"):
            client.read_concurrency_limits(limit=-1, offset=0)
        with pytest.raises(ValueError, match=r"offset must be an int >= 0; got 1.5"):
            client.read_global_concurrency_limits(offset=1.5)
        with pytest.raises(TypeError, match="tag must be a string; got int"):
            client.create_concurrency_limit(3, 1)


@pytest.mark.anyio
async def test_async_client_rejects_bad_input_before_leaving_the_loop(sqlite_store):
    async with get_client() as client:
        with pytest.raises(ValueError, match="at least 1 slot"):
            await client.create_concurrency_limit("io", 0)
        with pytest.raises(TypeError, match="a GlobalConcurrencyLimitUpdate"):
            await client.update_global_concurrency_limit("db", {"limit": 2})


def test_schemas_and_errors_are_at_prefects_import_paths():
    from asyncflow.client import schemas
    from asyncflow.client.schemas import actions, objects, responses
    from asyncflow.exceptions import ObjectAlreadyExists as AtPrefectPath

    assert schemas.GlobalConcurrencyLimitCreate is actions.GlobalConcurrencyLimitCreate
    assert schemas.ConcurrencyLimit is objects.ConcurrencyLimit
    assert schemas.GlobalConcurrencyLimitResponse is responses.GlobalConcurrencyLimitResponse
    assert actions.ConcurrencyLimitCreate(tag="io", concurrency_limit=2).concurrency_limit == 2
    assert AtPrefectPath is ObjectAlreadyExists and issubclass(ObjectAlreadyExists, ValueError)
