"""Caching (SPEC §5): keys, policies, persisted results, expiry on a fake clock, failure modes."""

import datetime as dt
import threading
from pathlib import Path

import pytest

from asyncflow import flow, task
from asyncflow.cache_policies import DEFAULT, FLOW_PARAMETERS, INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE
from asyncflow.tasks import task_input_hash
from asyncflow.testing import fake_clock


def _names(store):
    return [r.state.name for r in store.read_task_runs()]


def test_default_task_is_not_cached(store):
    @task
    def double(x):
        return 2 * x

    @flow
    def f():
        return double(1), double(1)

    assert f() == (2, 2) and _names(store) == ["Completed", "Completed"]


def test_persist_result_caches_within_a_flow_run_by_default(store):
    calls = []

    @task(persist_result=True)
    def double(x):
        calls.append(x)
        return 2 * x

    @flow
    def f():
        return double(1), double(1), double(2)

    assert f() == (2, 2, 4) and calls == [1, 2]
    assert _names(store) == ["Completed", "Cached", "Completed"]
    # DEFAULT includes the flow run id: another flow run computes again
    f()
    assert calls == [1, 2, 1, 2]


def test_task_input_hash_caches_across_flow_runs_with_expiry_on_the_clock(store):
    """Seed 003: hello_task runs once per name until the entry expires."""
    said = []

    @task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=1))
    def hello_task(name_input):
        said.append(name_input)
        return "hello " + name_input

    @flow
    def hello_flow(name_input):
        return hello_task(name_input)

    with fake_clock() as clock:
        assert hello_flow("Marvin") == "hello Marvin"
        assert hello_flow("Marvin") == "hello Marvin"
        assert hello_flow("Trillian") == "hello Trillian"
        assert said == ["Marvin", "Trillian"]
        clock.now += 59
        hello_flow("Marvin")
        assert said == ["Marvin", "Trillian"]
        clock.now += 2  # 61 s after the first run: expired
        hello_flow("Marvin")
        assert said == ["Marvin", "Trillian", "Marvin"]


def test_cache_key_fn_receives_context_and_resolved_parameters(store):
    """Seed 003: the key is the sum of the inputs: [2, 2] and [1, 3] share it, [2, 3] does not."""
    seen = []

    def cache_key_from_sum(context, parameters):
        seen.append((context.task.name, context.task_run.name, dict(parameters)))
        return sum(parameters["nums"])

    runs = []

    @task(cache_key_fn=cache_key_from_sum, cache_expiration=dt.timedelta(minutes=1))
    def cached_task(nums):
        runs.append(nums)
        return sum(nums)

    @flow
    def test_caching(nums):
        return cached_task(nums)

    assert [test_caching([2, 2]), test_caching([1, 3]), test_caching([2, 3])] == [4, 4, 5]
    assert runs == [[2, 2], [2, 3]]
    assert seen[0][0] == "cached_task" and seen[0][2] == {"nums": [2, 2]}


def test_refresh_cache_recomputes_and_overwrites(store):
    calls = []

    @task(cache_key_fn=lambda ctx, p: "constant")
    def value():
        calls.append(1)
        return len(calls)

    assert value() == 1 and value() == 1
    assert value.with_options(refresh_cache=True)() == 2
    assert value() == 2


def test_inputs_policy_and_excluded_inputs(store):
    calls = []

    @task(cache_policy=INPUTS - "verbose")
    def work(x, verbose=False):
        calls.append((x, verbose))
        return x

    work(1), work(1, verbose=True), work(2)
    assert calls == [(1, False), (2, False)]


def test_task_source_covers_closures_and_globals(store):
    """Prefect #23062: same text, different closures, must not share entries."""

    def make(factor):
        @task(cache_policy=TASK_SOURCE)
        def scaled():
            return 10 * factor

        return scaled

    assert make(1)() == 10
    assert make(2)() == 20


def test_run_id_and_flow_parameters_policies(store):
    calls = []

    @task(cache_policy=FLOW_PARAMETERS)
    def step():
        calls.append(1)
        return len(calls)

    @flow
    def f(p):
        return step()

    assert f(1) == 1 and f(1) == 1 and f(2) == 2

    @task(cache_policy=RUN_ID)
    def per_run():
        calls.append(1)
        return len(calls)

    @flow
    def g():
        return per_run(), per_run()

    first = g()
    assert first[0] == first[1]


def test_no_cache_policy_never_caches(store):
    calls = []

    @task(cache_policy=NO_CACHE, persist_result=True)
    def work():
        calls.append(1)

    work(), work()
    assert len(calls) == 2


def test_policy_algebra():
    assert repr(DEFAULT) == "INPUTS + TASK_SOURCE + RUN_ID"
    assert repr(DEFAULT - "lock") == "INPUTS - 'lock' + TASK_SOURCE + RUN_ID"
    assert NO_CACHE + INPUTS == INPUTS
    assert repr((INPUTS - "a") + (INPUTS - "b")) == "INPUTS - 'a' - 'b'"
    assert TASK_SOURCE - "x" is TASK_SOURCE
    with pytest.raises(TypeError, match="Subtract a parameter name"):
        INPUTS - 3  # type: ignore[operator]


def test_an_unhashable_input_disables_caching_for_the_run_and_names_it(store, capsys):
    """Prefect #15861: never silently degrade the key."""
    calls = []

    @task(cache_policy=INPUTS)
    def uses_lock(lock, x):
        calls.append(x)
        return x

    lock = threading.Lock()
    assert uses_lock(lock, 1) == 1 and uses_lock(lock, 1) == 1
    assert calls == [1, 1]
    err = capsys.readouterr().err
    assert "Caching is disabled for this run: parameter 'lock' of type lock cannot be hashed" in err
    assert "cache_policy=INPUTS - 'lock'" in err


def test_results_are_files_under_the_local_storage_path(store, tmp_path, monkeypatch):
    storage = tmp_path / "results"
    monkeypatch.setenv("ASYNCFLOW_LOCAL_STORAGE_PATH", str(storage))

    @task(cache_key_fn=lambda ctx, p: "my-key")
    def work():
        return {"answer": 42}

    state = work(return_state=True)
    assert state.state_details.cache_key == "my-key"
    assert (storage / "my-key").is_file()


def test_result_storage_and_storage_key_templates_and_json(store, tmp_path):
    @task(result_storage=tmp_path / "out", result_storage_key="reports/{parameters[name]}.json",
          result_serializer="json")
    def report(name):
        return {"name": name, "rows": [1, 2]}

    assert report("alpha") == {"name": "alpha", "rows": [1, 2]}
    record = tmp_path / "out" / "reports" / "alpha.json"
    header, payload = record.read_bytes().split(b"\n", 1)
    assert b'"serializer": "json"' in header and b'"rows": [1, 2]' in payload
    assert report("alpha") == {"name": "alpha", "rows": [1, 2]}
    assert _names(store)[-1] == "Cached"


def test_a_corrupt_or_missing_record_is_a_miss_with_a_warning(store, tmp_path, capsys):
    from asyncflow._results import clear_memory

    calls = []

    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "k")
    def work():
        calls.append(1)
        return len(calls)

    assert work() == 1
    clear_memory()
    (tmp_path / "k").write_bytes(b"not a record")
    assert work() == 2
    assert "is corrupt" in capsys.readouterr().err
    clear_memory()
    (tmp_path / "k").unlink()
    assert work() == 3  # a deleted record: computed again, no crash (Prefect #8892)


def test_a_result_that_cannot_be_serialized_fails_the_run_naming_task_and_type(store):
    @task(cache_key_fn=lambda ctx, p: "k2")
    def returns_a_lock():
        return threading.Lock()

    state = returns_a_lock(return_state=True)
    assert state.is_failed()
    assert "Task 'returns_a_lock' returned a value of type lock" in state.message


def test_cache_result_in_memory_false_reads_from_disk(store, tmp_path):
    @task(result_storage=tmp_path, cache_key_fn=lambda ctx, p: "disk", cache_result_in_memory=False)
    def work():
        return [1, 2, 3]

    assert work() == [1, 2, 3]
    assert work() == [1, 2, 3] and _names(store) == ["Completed", "Cached"]


def test_bad_caching_options_fail_at_decoration():
    with pytest.raises(TypeError, match=r"cache_expiration must be a datetime\.timedelta"):
        task(cache_expiration=60)(lambda: 0)
    with pytest.raises(ValueError, match="result_serializer must be 'pickle', 'json'"):
        task(result_serializer="xml")(lambda: 0)
    with pytest.raises(TypeError, match="result_storage must be a path"):
        task(result_storage=42)(lambda: 0)


@pytest.mark.anyio
async def test_async_tasks_cache_too(store, tmp_path):
    calls = []

    @task(result_storage=tmp_path, cache_key_fn=task_input_hash)
    async def fetch(x):
        calls.append(x)
        return x * 2

    assert await fetch(3) == 6 and await fetch(3) == 6
    assert calls == [3]


def test_persist_result_false_turns_caching_off(store):
    calls = []
    with pytest.warns(UserWarning, match="ignoring cache_policy because persist_result is False"):
        @task(cache_policy=INPUTS, persist_result=False)
        def work(x):
            calls.append(x)

    work(1), work(1)
    assert calls == [1, 1]


def test_flow_persist_result_is_the_default_for_its_tasks(store):
    calls = []

    @task
    def work(x):
        calls.append(x)
        return x

    @flow(persist_result=True)
    def f():
        return work(1), work(1)

    f()
    assert calls == [1]
    assert Path  # (imported for the storage tests)


def test_inputs_of_different_types_never_share_a_key():
    import datetime as dt
    import uuid

    from asyncflow._caching import stable_hash

    pairs = [({1: "a"}, {"1": "a"}), ((1, 2), [1, 2]), ({1, 2}, [1, 2]), (dt.date(2020, 1, 1), "2020-01-01"),
             (b"ab", "6162"), (uuid.UUID(int=1), str(uuid.UUID(int=1))), (1, 1.0), (1, True)]
    for a, b in pairs:
        assert stable_hash(a, "x") != stable_hash(b, "x"), (a, b)

    class Config:
        def __init__(self, value):
            self.value = value

        def __repr__(self):
            return "Config"  # equal reprs must not mean equal keys

    assert stable_hash(Config(1), "x") != stable_hash(Config(2), "x")


def test_task_input_hash_with_an_unhashable_input_warns_and_runs(store, capsys):
    calls = []

    @task(cache_key_fn=task_input_hash)
    def uses_lock(lock):
        calls.append(1)

    uses_lock(threading.Lock()), uses_lock(threading.Lock())
    assert len(calls) == 2
    assert "Caching is disabled for this run" in capsys.readouterr().err


@pytest.mark.anyio
async def test_a_cancelled_serializable_run_releases_its_key_lock(store):
    """Real time: the lookup reads through a worker thread, which a virtual clock would race past."""
    import anyio

    @task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"), persist_result=True)
    async def slow(x):
        await anyio.sleep(10)
        return x

    @flow(timeout_seconds=0.2)
    async def f():
        return await slow(1)

    assert (await f(return_state=True)).name == "TimedOut"
    with anyio.fail_after(10):  # would hang forever on a leaked lock
        assert (await f(return_state=True)).name == "TimedOut"


def test_bad_refresh_cache_and_non_finite_seconds_fail_at_decoration():
    with pytest.raises(TypeError, match="refresh_cache must be True, False or None"):
        task(refresh_cache="no")(lambda: 0)
    with pytest.raises(ValueError, match="finite number"):
        task(timeout_seconds=float("nan"))(lambda: 0)
    with pytest.raises(ValueError, match="finite number"):
        task(retries=1, retry_delay_seconds=float("inf"))(lambda: 0)


@pytest.mark.parametrize("returned", ["Cancelled", "Crashed", "Pending"])
def test_a_serializable_run_that_returns_a_non_completed_state_releases_its_key_lock(returned):
    """B15: only a Failed attempt used to release the key lock; a returned Cancelled state leaked it
    and the next run with the key, in any process, blocked for ever. (Real SQLite store: isolated_home.)"""
    from asyncflow import states
    from asyncflow.testing import isolated_home

    @task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"))
    def gives_up(x):
        return getattr(states, returned)(message="nothing to do")

    with isolated_home():
        first = gives_up(1, return_state=True)
        assert first.name == returned
        second: list = []
        thread = threading.Thread(target=lambda: second.append(gives_up(1, return_state=True)), daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the second run with the same key is blocked on a leaked lock"
        assert second[0].name == returned
