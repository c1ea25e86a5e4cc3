"""The read API a UI stands on (asyncflow/_store/reads.py): filters, cursor pages, the change feed,
logs since a sequence number, a flow run's timeline and counts by state. Every behaviour is checked
on a real SQLite file, on the memory store and on a real PostgreSQL database: they agree on semantics and
order."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
import uuid

import pytest

from asyncflow import flow, get_run_logger, tags, task
from asyncflow._runs import FlowRun
from asyncflow._states import State, StateType
from asyncflow._store import MemoryStore, ObjectNotFound
from asyncflow._store.reads import Change, Page, RunFilter, StateCount, Timeline
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def any_store(request, tmp_path):
    """A real SQLite file, the memory store and a real PostgreSQL database: the same tests pass on all."""
    if request.param == "postgres":
        from asyncflow._store.postgres import PostgresStore

        chosen = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        chosen = SQLiteStore(tmp_path / "asyncflow.db") if request.param == "sqlite" else MemoryStore()
    with isolated_store(chosen):
        yield chosen
    chosen.close()


@pytest.fixture
def sqlite_store(tmp_path):
    chosen = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(chosen):
        yield chosen
    chosen.close()


def add_flow_run(store, created, *, flow_name="etl", tags_=(), parent=None, states=("Pending",)):
    """A flow run recorded straight into the store (no engine), created at `created`."""
    run_id = uuid.uuid4()
    first = State(StateType.PENDING, "Pending", ts=created)
    run = FlowRun(id=run_id, name=f"run-{run_id.hex[:6]}", flow_name=flow_name, flow_version=None, parameters={},
                  tags=tuple(tags_), state=first, parent_flow_run_id=parent)
    store.record_flow_run(run)
    for name in states:
        state = first if name == "Pending" else State(StateType[name.upper()], name, ts=created + 1)
        run.state = state
        store.record_state(run_id, state)
    return run


def ids(runs):
    return [run.id for run in runs]


def read_all(read, **kwargs):
    """Every page of a paged read, and the pages' sizes."""
    items, sizes, cursor = [], [], None
    while True:
        page = read(cursor=cursor, **kwargs)
        assert isinstance(page, Page)
        items.extend(page.items)
        sizes.append(len(page))
        cursor = page.next_cursor
        if cursor is None:
            return items, sizes


# -- pages ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("newest_first", [True, False])
def test_paging_through_1000_runs_by_7_returns_each_once_in_order_while_runs_are_added(any_store, newest_first):
    store = any_store
    base = time.time() - 10_000
    originals = [add_flow_run(store, base + i // 3) for i in range(1000)]  # ties on created: ref decides
    store.flush()
    expected = [run.id for run in (reversed(originals) if newest_first else originals)]
    stop, added = threading.Event(), []

    def keep_adding():
        n = 0
        while not stop.is_set():
            # newer runs, and runs created "in the middle" of what is being paged (another clock)
            added.append(add_flow_run(store, base + (2000 if n % 2 else n % 997)))
            n += 1
            if n % 10 == 0:
                store.flush()
            time.sleep(0.0005)

    adder = threading.Thread(target=keep_adding)
    adder.start()
    try:
        seen, sizes = read_all(store.read_flow_runs_page, limit=7, newest_first=newest_first)
    finally:
        stop.set()
        adder.join()
    assert added, "runs were added while paging"
    seen_ids = ids(seen)
    assert len(seen_ids) == len(set(seen_ids)), "a run came twice"
    original = set(expected)
    assert [i for i in seen_ids if i in original] == expected
    assert all(size == 7 for size in sizes[:-1]) and 1 <= sizes[-1] <= 7
    keys = [(run.state.ts if False else None) for run in seen]  # noqa: F841 - order is checked through ids


def test_a_page_is_in_created_then_ref_order_and_the_last_has_no_cursor(any_store):
    store = any_store
    base = time.time()
    runs = [add_flow_run(store, base + i % 2) for i in range(5)]  # created: 0 1 0 1 0
    store.flush()
    page = store.read_flow_runs_page(limit=10)
    assert ids(page) == ids([runs[3], runs[1], runs[4], runs[2], runs[0]]) and page.next_cursor is None
    oldest = store.read_flow_runs_page(limit=2, newest_first=False)
    assert ids(oldest) == ids([runs[0], runs[2]]) and oldest.next_cursor
    rest = store.read_flow_runs_page(limit=2, newest_first=False, cursor=oldest.next_cursor)
    assert ids(rest) == ids([runs[4], runs[1]])
    assert ids(store.read_flow_runs_page(limit=None)) == ids(page)


def test_a_damaged_cursor_or_one_of_another_query_is_a_clear_error(any_store):
    store = any_store
    base = time.time()
    for i in range(5):
        add_flow_run(store, base + i, flow_name="a" if i % 2 else "b")
    store.flush()
    cursor = store.read_flow_runs_page(limit=1).next_cursor
    assert cursor
    for damaged in (cursor[:-3], cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:], "garbage", "",
                    cursor + "x"):
        with pytest.raises(ValueError, match=r"cursor .* is damaged"):
            store.read_flow_runs_page(limit=1, cursor=damaged)
    for other in (dict(filter=RunFilter(flow_names="a")), dict(newest_first=False)):
        with pytest.raises(ValueError, match="cursor belongs to another query"):
            store.read_flow_runs_page(limit=1, cursor=cursor, **other)
    with pytest.raises(ValueError, match="cursor belongs to another query"):
        store.read_task_runs_page(limit=1, cursor=cursor)
    with pytest.raises(TypeError, match="cursor must be a string"):
        store.read_flow_runs_page(cursor=42)
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        store.read_flow_runs_page(limit=0)
    # the same filter written another way is the same query
    again = RunFilter(flow_names=["b", "a"], states=["completed", "Pending"])
    first = store.read_flow_runs_page(filter=RunFilter(flow_names=("a", "b"), states=("PENDING", "Completed")), limit=1)
    assert store.read_flow_runs_page(filter=again, limit=1, cursor=first.next_cursor).items


# -- filters --------------------------------------------------------------------------------------
@task(tags=["io"])
def fetch(x):
    return x


@task
def boom():
    raise ValueError("boom")


@flow
def child_flow(n):
    return fetch(n)


@flow
def parent_flow(n):
    fetch(n)
    child_flow(n)
    return n


@flow
def failing_flow():
    boom()


def test_filters_combine(any_store):
    store = any_store
    with tags("prod", "eu"):
        prod = parent_flow(1, return_state=True).state_details.flow_run_id
    with tags("prod"):
        prod_us = parent_flow(2, return_state=True).state_details.flow_run_id
    failed = failing_flow(return_state=True).state_details.flow_run_id
    later = time.time()
    time.sleep(0.01)
    latest = parent_flow(3, return_state=True).state_details.flow_run_id
    store.flush()

    def flow_ids(**fields):
        return set(ids(store.read_flow_runs_page(filter=RunFilter(**fields), limit=None)))

    def task_ids(**fields):
        return set(ids(store.read_task_runs_page(filter=RunFilter(**fields), limit=None)))

    children = {run.id for run in store.read_flow_runs(flow_name="child-flow")}
    assert len(children) == 3
    assert flow_ids(flow_names="parent-flow") == {prod, prod_us, latest}
    assert flow_ids(flow_names=["parent-flow", "failing-flow"], states="failed") == {failed}
    assert flow_ids(states=["COMPLETED"], tags="prod") == {prod, prod_us} | {
        c for c in children if store.read_flow_run(c).parent_flow_run_id in (prod, prod_us)}
    assert flow_ids(tags=["prod", "eu"], flow_names="parent-flow") == {prod}  # all tags must match
    assert flow_ids(tags=["prod", "nope"]) == set()
    assert flow_ids(since=later) == {latest} | {c for c in children
                                                if store.read_flow_run(c).parent_flow_run_id == latest}
    assert flow_ids(until=later, flow_names="parent-flow") == {prod, prod_us}
    assert flow_ids(since=dt.datetime.fromtimestamp(later, dt.timezone.utc), flow_names="parent-flow") == {latest}
    assert flow_ids(parent_flow_run_id=prod) == {c for c in children
                                                 if store.read_flow_run(c).parent_flow_run_id == prod}
    assert flow_ids(parent_flow_run_id=str(prod), states="Failed") == set()
    assert flow_ids(search="FAILING") == {failed}  # the flow's name, any case
    name = store.read_flow_run(prod_us).name
    assert flow_ids(search=name.upper()[1:-1]) == {prod_us}  # the run's name
    with pytest.raises(ValueError, match="task_names filters task runs"):
        flow_ids(task_names="fetch")

    fetches = {run.id for run in store.read_task_runs() if run.task_name == "fetch"}
    assert task_ids(task_names="fetch") == fetches
    assert task_ids(task_names=["fetch", "boom"], states="Failed") == {
        run.id for run in store.read_task_runs(flow_run_id=failed)}
    assert task_ids(parent_flow_run_id=prod) == {run.id for run in store.read_task_runs(flow_run_id=prod)}
    assert len(task_ids(parent_flow_run_id=prod)) == 1  # the subflow's task run is the subflow's
    assert task_ids(flow_names="child-flow", tags="io") == {
        run.id for c in children for run in store.read_task_runs(flow_run_id=c)}
    assert task_ids(search="boo", since=later) == set()
    assert task_ids(search="boo") == {run.id for run in store.read_task_runs(flow_run_id=failed)}


def test_a_run_whose_states_are_not_stored_yet_reads_as_pending(any_store):
    store = any_store
    run = add_flow_run(store, time.time(), states=())
    store.flush()
    assert ids(store.read_flow_runs_page(filter=RunFilter(states="pending"))) == [run.id]
    [count] = store.count_flow_runs_by_state()
    assert (count.state_type, count.state_name, count.count) == (StateType.PENDING, "Pending", 1)


def test_counts_by_state_over_time_buckets(any_store):
    store = any_store
    base = 1_700_000_000.0  # a multiple of 100
    for offset, final, flow_name in [(0, "Completed", "a"), (10, "Completed", "a"), (20, "Failed", "a"),
                                     (150, "Completed", "b"), (199.5, "Crashed", "a"), (200, "Completed", "a")]:
        add_flow_run(store, base + offset, flow_name=flow_name, states=("Pending", "Running", final))
    store.flush()
    counts = store.count_flow_runs_by_state(bucket_seconds=100)
    assert [(c.start - base, c.state_type, c.state_name, c.count) for c in counts] == [
        (0, StateType.COMPLETED, "Completed", 2), (0, StateType.FAILED, "Failed", 1),
        (100, StateType.COMPLETED, "Completed", 1), (100, StateType.CRASHED, "Crashed", 1),
        (200, StateType.COMPLETED, "Completed", 1)]
    narrowed = store.count_flow_runs_by_state(RunFilter(flow_names="a", since=base + 100), bucket_seconds=3600)
    assert sum(c.count for c in narrowed) == 2 and all(isinstance(c, StateCount) for c in narrowed)
    with pytest.raises(ValueError, match="bucket_seconds must be a number of seconds > 0"):
        store.count_flow_runs_by_state(bucket_seconds=0)


# -- the change feed ------------------------------------------------------------------------------
def test_the_change_feed_returns_every_state_once_in_order_across_calls(any_store):
    store = any_store
    feed, since = [], 0

    def drain():
        nonlocal since
        while True:
            changes, last = store.read_changes(since, limit=5)
            assert last == (changes[-1].seq if changes else since)
            feed.extend(changes)
            since = last
            if not changes:
                return

    drain()
    assert feed == []
    first = parent_flow(1, return_state=True).state_details.flow_run_id
    store.flush()
    drain()
    failed = failing_flow(return_state=True).state_details.flow_run_id
    store.flush()
    drain()
    drain()  # nothing new: nothing again
    assert all(isinstance(c, Change) for c in feed)
    seqs = [c.seq for c in feed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    runs = [*store.read_flow_runs(), *store.read_task_runs()]
    assert len(feed) == sum(len(store.read_states(run.id)) for run in runs)
    for run in runs:
        mine = [c for c in feed if c.run_id == run.id]
        assert [(c.state_type, c.state_name, c.state_message, c.ts) for c in mine] == [
            (s.type, s.name, s.message, s.ts) for s in store.read_states(run.id)]
        is_flow = isinstance(run, FlowRun)
        assert {(c.kind, c.flow_run_id, c.run_name) for c in mine} == {
            ("flow_run" if is_flow else "task_run", run.id if is_flow else run.flow_run_id, run.name)}
    assert feed[-1].run_id == failed and feed[-1].state_name == "Failed"
    assert feed[0].run_id == first and feed[0].state_name == "Pending"
    assert feed[0].to_state().name == "Pending"
    with pytest.raises(ValueError, match="since must be a sequence number"):
        store.read_changes(-1)


def test_logs_since_a_sequence_number_with_a_level_filter(any_store):
    store = any_store
    @task
    def chatty(i):
        logger = get_run_logger()
        logger.debug("debug %s", i)
        logger.info("info %s", i)
        logger.warning("warning %s", i)
        logger.error("error %s", i)

    @flow
    def talk():
        chatty(0)
        chatty(1)

    flow_run_id = talk(return_state=True).state_details.flow_run_id
    store.flush()
    every = store.read_logs(flow_run_id=str(flow_run_id))
    lines, since = [], 0
    while True:
        batch, since = store.read_logs_since(since, flow_run_id=flow_run_id, limit=3)
        if not batch:
            break
        lines.extend(batch)
    assert [(log.level, log.message) for log in lines] == [(log.level, log.message) for log in every]
    seqs = [log.seq for log in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and since == seqs[-1]
    warnings, _ = store.read_logs_since(0, flow_run_id=flow_run_id, level="warning")
    assert [log.message for log in warnings] == ["warning 0", "error 0", "warning 1", "error 1"]
    errors, _ = store.read_logs_since(0, level=40)
    assert [log.message for log in errors] == ["error 0", "error 1"]
    task_run = store.read_task_runs(flow_run_id=flow_run_id)[1]
    mine, _ = store.read_logs_since(0, task_run_id=task_run.id, level="WARN")
    assert [log.message for log in mine] == ["warning 1", "error 1"]
    assert store.read_logs_since(seqs[-1], flow_run_id=flow_run_id) == ([], seqs[-1])
    with pytest.raises(ValueError, match="level 'LOUD' is not a log level"):
        store.read_logs_since(0, level="LOUD")


# -- the timeline ---------------------------------------------------------------------------------
attempts: dict[str, int] = {}


@task(retries=2, retry_delay_seconds=0)
def flaky(key):
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise RuntimeError(f"attempt {attempts[key]}")
    return attempts[key]


@task(cache_key_fn=lambda context, parameters: f"cached-{parameters['x']}")
def cached(x):
    return x * 10


@flow
def grandchild():
    return cached(2)


@flow
def child(key):
    flaky(key + "-child")
    return grandchild()


@flow
def with_everything(key):
    flaky(key)
    cached(1)
    cached(1)  # a cache hit
    child(key)
    return "ok"


def all_states_in_store(store, timeline):
    total = 0
    for sub in timeline.walk():
        total += len(store.read_states(sub.flow_run.id)) + sum(len(store.read_states(t.run.id)) for t in sub.task_runs)
    return total


def test_the_timeline_of_a_flow_with_retries_a_subflow_and_a_cached_task_has_every_state(any_store):
    store = any_store
    key = uuid.uuid4().hex
    root = with_everything(key, return_state=True).state_details.flow_run_id
    store.flush()
    timeline = store.read_timeline(root)
    assert isinstance(timeline, Timeline) and timeline.flow_run.id == root
    assert [s.name for s in timeline.states] == [s.name for s in store.read_states(root)] == [
        "Pending", "Running", "Completed"]
    assert [t.run.name for t in timeline.task_runs] == ["flaky-0", "cached-0", "cached-1"]
    assert [s.name for s in timeline.task_runs[0].states] == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]
    assert timeline.task_runs[0].states[2].state_details.scheduled_time is not None  # when the retry is due
    assert [s.name for s in timeline.task_runs[1].states] == ["Pending", "Running", "Completed"]
    assert [s.name for s in timeline.task_runs[2].states] == ["Pending", "Running", "Cached"]
    assert timeline.task_runs[2].states[-1].state_details.cache_key == "cached-1"
    [sub] = timeline.subflows
    assert sub.flow_run.flow_name == "child" and sub.flow_run.parent_flow_run_id == root
    assert [t.run.name for t in sub.task_runs] == ["flaky-0"]
    assert "AwaitingRetry" in [s.name for s in sub.task_runs[0].states]
    [deeper] = sub.subflows
    assert deeper.flow_run.flow_name == "grandchild" and [s.name for s in deeper.task_runs[0].states] == [
        "Pending", "Running", "Completed"]
    for tl in timeline.walk():
        for t in tl.task_runs:
            assert [(s.name, s.ts) for s in t.states] == [(s.name, s.ts) for s in store.read_states(t.run.id)]
    assert sum(len(tl.states) + sum(len(t.states) for t in tl.task_runs) for tl in timeline.walk()) == \
        all_states_in_store(store, timeline)
    # a subflow's own timeline is the same subtree
    assert [t.run.id for t in store.read_timeline(sub.flow_run.id).task_runs] == [t.run.id for t in sub.task_runs]
    with pytest.raises(ObjectNotFound, match="No flow run with id"):
        store.read_timeline(uuid.uuid4())
    with pytest.raises(ValueError, match="is not a valid id"):
        store.read_timeline("nope")


def test_the_timeline_is_read_in_two_queries_whatever_its_size(sqlite_store, monkeypatch):
    @flow
    def small():
        fetch(0)

    @flow
    def nested(depth):
        for i in range(5):
            fetch(i)
        if depth:
            nested(depth - 1)
            nested(depth - 1)

    one = small(return_state=True).state_details.flow_run_id
    big = nested(3, return_state=True).state_details.flow_run_id
    sqlite_store.flush()
    calls = []
    original = sqlite_store._query

    def counting(sql, params=(), flush=True):
        calls.append((sql, flush))
        return original(sql, params, flush)

    monkeypatch.setattr(sqlite_store, "_query", counting)
    small_timeline = sqlite_store.read_timeline(one)
    small_calls = len(calls)
    big_timeline = sqlite_store.read_timeline(big)
    assert len(list(big_timeline.walk())) == 15 and sum(len(t.task_runs) for t in big_timeline.walk()) == 75
    assert len(small_timeline.task_runs) == 1
    assert small_calls == 2 and len(calls) == 4
    assert not any(flush for _, flush in calls)


def test_the_read_api_never_flushes_the_writer(sqlite_store, monkeypatch):
    root = parent_flow(1, return_state=True).state_details.flow_run_id
    sqlite_store.flush()
    flushes = []
    monkeypatch.setattr(sqlite_store, "flush", lambda timeout=None: flushes.append(1) or True)
    task_run = sqlite_store.read_task_runs_page(limit=1)[0]  # not flushed itself: the page is what is stored
    sqlite_store.read_flow_runs_page(filter=RunFilter(states="completed"))
    sqlite_store.read_changes(0)
    sqlite_store.read_logs_since(0, task_run_id=task_run.id, level="INFO")
    sqlite_store.read_timeline(root)
    sqlite_store.count_flow_runs_by_state()
    assert flushes == []


def test_the_read_queries_use_indexes(sqlite_store, monkeypatch):
    """No full scan of runs or states for a UI's polls (EXPLAIN QUERY PLAN of each statement)."""
    root = parent_flow(1, return_state=True).state_details.flow_run_id
    sqlite_store.flush()
    statements = []
    original = sqlite_store._query

    def recording(sql, params=(), flush=True):
        statements.append((sql, tuple(params)))
        return original(sql, params, flush)

    monkeypatch.setattr(sqlite_store, "_query", recording)
    page = sqlite_store.read_flow_runs_page(limit=1)
    sqlite_store.read_flow_runs_page(limit=1, cursor=page.next_cursor)
    sqlite_store.read_flow_runs_page(filter=RunFilter(flow_names="parent-flow"), limit=1)
    sqlite_store.read_flow_runs_page(filter=RunFilter(parent_flow_run_id=root), limit=1)
    sqlite_store.read_task_runs_page(filter=RunFilter(parent_flow_run_id=root), limit=1)
    sqlite_store.read_changes(0, limit=10)
    sqlite_store.read_logs_since(0, flow_run_id=root)
    sqlite_store.read_timeline(root)
    conn = sqlite3.connect(sqlite_store.path)
    try:
        for sql, params in statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            for table in ("flow_runs", "task_runs", "states", "logs"):
                assert not any(step in (f"SCAN {table}", "SCAN f", "SCAN s") for step in plan), (sql, plan)
            assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)
    finally:
        conn.close()


def test_the_memory_store_forgets_its_oldest_runs_first_after_deletes_and_a_run_recorded_again():
    store = MemoryStore(max_runs=10)
    base = time.time()
    runs = [add_flow_run(store, base + i) for i in range(12)]
    store.delete_flow_runs([runs[3].id, runs[5].id])  # gone before they are the oldest
    store.record_flow_run(runs[2])  # recorded again (a new name): keeps its place
    runs += [add_flow_run(store, base + 12 + i) for i in range(4)]
    kept = ids(runs[6:])
    assert ids(store.read_flow_runs()) == kept[::-1]
    for forgotten in runs[:6]:
        with pytest.raises(ObjectNotFound):
            store.read_flow_run(forgotten.id)


def test_the_memory_store_keeps_its_arrival_order_bounded_when_runs_are_deleted_under_its_limit():
    store = MemoryStore(max_runs=100)
    base = time.time()
    for i in range(5000):
        run = add_flow_run(store, base + i)
        store.delete_flow_runs([run.id])
    store.read_flow_runs()
    assert len(store._arrivals[0]) + len(store._arrivals[1]) <= 2 * 100 + 1024


def test_the_memory_store_pages_only_the_runs_it_still_keeps():
    store = MemoryStore(max_runs=10)
    base = time.time()
    runs = [add_flow_run(store, base + i) for i in range(25)]
    seen, _ = read_all(store.read_flow_runs_page, limit=3)
    assert ids(seen) == ids(reversed(runs[-10:]))
    oldest, _ = read_all(store.read_flow_runs_page, limit=4, newest_first=False)
    assert ids(oldest) == ids(runs[-10:])
    with pytest.raises(ObjectNotFound):
        store.read_timeline(runs[0].id)
    assert store.read_timeline(runs[-1].id).flow_run.id == runs[-1].id
    assert sum(c.count for c in store.count_flow_runs_by_state()) == 10
