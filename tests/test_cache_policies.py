"""The cache policy API as Prefect users write it: `compute_key(task_ctx, inputs, flow_parameters)`,
`configure(...)`, the algebra (`+` flattens and merges Inputs, `- "name"` excludes an input), user-defined
policies, and what `@task` resolves `cache_policy` / `persist_result` to at decoration."""

from __future__ import annotations

import threading
import uuid

import attrs
import pytest

from asyncflow import flow, task
from asyncflow.cache_policies import (
    DEFAULT,
    INPUTS,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    FlowParameters,
    Inputs,
    NoCache,
    RunId,
    TaskSource,
)
from asyncflow.tasks import task_input_hash
from asyncflow.testing import isolated_home
from asyncflow.transactions import IsolationLevel


def _key(policy, inputs=None, task_ctx=None, flow_parameters=None):
    return policy.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters)


@attrs.define
class _Run:
    id: str
    flow_run_id: str | None = None


@attrs.define
class _Ctx:
    task: object
    task_run: _Run


# -- compute_key(task_ctx, inputs, flow_parameters, **kwargs) -----------------------------------------------
def test_the_base_policy_has_no_key_of_its_own():
    with pytest.raises(NotImplementedError, match="compute_key"):
        _key(CachePolicy(), {"x": 1})


def test_inputs_key_depends_on_the_inputs_only():
    assert _key(INPUTS, None) is None
    assert len({_key(INPUTS, {"x": 42}), _key(INPUTS, {"y": 42}), _key(INPUTS, {"x": "42"})}) == 3
    assert _key(INPUTS, {"x": 42}) == INPUTS.compute_key(None, {"x": 42}, {"other": 1}, extra="ignored")


def test_excluded_inputs_do_not_change_the_key():
    policy = Inputs(exclude=["y"])
    assert policy.exclude == ("y",)
    assert {_key(policy, {"x": 1, "y": v}) for v in (1, "a", None)} == {_key(policy, {"x": 1})}


def test_run_and_source_policies_need_a_task_context():
    def body():
        return 1

    assert _key(RUN_ID, {"x": 1}) is None and _key(TASK_SOURCE, {"x": 1}) is None
    in_flow = _Ctx(body, _Run("t1", flow_run_id="f1"))
    alone = _Ctx(body, _Run("t2"))
    assert _key(RUN_ID, task_ctx=in_flow) == "f1"
    assert _key(RUN_ID, task_ctx=alone) == "t2"


def test_task_source_key_changes_with_the_function():
    def one():
        return "a"

    def other():
        return "b"

    run = _Run("r")
    assert _key(TASK_SOURCE, task_ctx=_Ctx(one, run)) != _key(TASK_SOURCE, task_ctx=_Ctx(other, run))
    assert _key(TASK_SOURCE, task_ctx=_Ctx(task(one), run)) == _key(TASK_SOURCE, task_ctx=_Ctx(one, run))


def test_flow_parameters_policy_hashes_the_flow_runs_parameters():
    assert _key(FlowParameters(), flow_parameters=None) is None
    assert _key(FlowParameters(), flow_parameters={"n": 1}) != _key(FlowParameters(), flow_parameters={"n": 2})


def test_cache_key_fn_policy_calls_the_function_with_context_and_inputs():
    seen = []
    policy = CacheKeyFnPolicy(cache_key_fn=lambda ctx, params: seen.append((ctx, params)) or 7)
    assert CachePolicy.from_cache_key_fn(policy.cache_key_fn) == policy
    assert _key(policy, {"x": 1}, task_ctx="ctx") == "7"
    assert seen == [("ctx", {"x": 1})]
    assert _key(CacheKeyFnPolicy(), {"x": 1}) is None


def test_default_key_changes_with_inputs_run_and_source():
    def a():
        return 1

    def b():
        return 2

    base = _key(DEFAULT, {"x": 1}, _Ctx(a, _Run("t", "f")))
    assert base != _key(DEFAULT, {"x": 2}, _Ctx(a, _Run("t", "f")))
    assert base != _key(DEFAULT, {"x": 1}, _Ctx(a, _Run("t", "g")))
    assert base != _key(DEFAULT, {"x": 1}, _Ctx(b, _Run("t", "f")))


# -- the algebra --------------------------------------------------------------------------------------------
def test_adding_policies_makes_one_flat_compound():
    nested = CompoundCachePolicy(policies=[CompoundCachePolicy(policies=[Inputs(), TaskSource()]),
                                           CompoundCachePolicy(policies=[RunId()])])
    assert nested.policies == (Inputs(), TaskSource(), RunId())
    summed = CompoundCachePolicy(policies=[Inputs(), TaskSource()]) + CompoundCachePolicy(policies=[RunId()])
    assert isinstance(summed, CompoundCachePolicy) and summed.policies == nested.policies
    assert isinstance(Inputs() + CompoundCachePolicy(), CompoundCachePolicy)


def test_inputs_parts_are_merged_into_one_excluding_what_any_excluded():
    policy = CompoundCachePolicy(policies=[Inputs(), TaskSource(), Inputs(exclude=["x"]), Inputs(exclude=["y"])])
    assert policy.policies == (Inputs(exclude=["x", "y"]), TaskSource())
    less = policy - "z"
    assert [p for p in less.policies if isinstance(p, Inputs)] == [Inputs(exclude=["x", "y", "z"])]
    assert (INPUTS + INPUTS - "a").policies == (Inputs(exclude=["a"]),)


def test_subtracting_a_name_excludes_that_input():
    policy = DEFAULT - "debug"
    assert isinstance(policy, CompoundCachePolicy) and policy != DEFAULT
    assert _key(policy, {"x": 1, "debug": True}) == _key(policy, {"x": 1, "debug": False})
    assert _key(policy, {"x": 1, "debug": True}) == _key(RunId() + Inputs(exclude=["debug"]), {"x": 1})
    with pytest.raises(TypeError, match="parameter name"):
        INPUTS - 3


def test_subtracting_from_a_policy_without_inputs_changes_nothing():
    for policy in (RUN_ID, RUN_ID + TASK_SOURCE):
        assert (policy - "x") is policy


def test_no_cache_adds_as_nothing_and_nones_give_no_key():
    for policy in (INPUTS, TASK_SOURCE, RUN_ID, DEFAULT):
        assert NO_CACHE + policy == policy and policy + NO_CACHE == policy
    assert _key(CompoundCachePolicy(policies=[NoCache(), NoCache()]), {"z": [1]}, flow_parameters={"x": 1}) is None


# -- configure ----------------------------------------------------------------------------------------------
def test_configure_returns_a_new_policy_with_the_settings_changed(tmp_path):
    class Locks:
        def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None):
            return True

        def release_lock(self, key, holder):
            pass

    locks = Locks()
    policy = INPUTS.configure(key_storage=str(tmp_path), lock_manager=locks, isolation_level="SERIALIZABLE")
    assert policy is not INPUTS and INPUTS.key_storage is None
    assert (policy.key_storage, policy.lock_manager, policy.isolation_level) == (str(tmp_path), locks, "SERIALIZABLE")
    assert INPUTS.configure(key_storage=None, lock_manager=None, isolation_level=None) == INPUTS
    assert INPUTS.configure(isolation_level=IsolationLevel.SERIALIZABLE).isolation_level == "SERIALIZABLE"


def test_configure_rejects_bad_settings_naming_them():
    with pytest.raises(ValueError, match="isolation_level must be 'READ_COMMITTED' or 'SERIALIZABLE'"):
        INPUTS.configure(isolation_level="REPEATABLE")
    with pytest.raises(TypeError, match="lock_manager must have acquire_lock"):
        INPUTS.configure(lock_manager="/path/to/locks")


def test_adding_configured_policies_keeps_the_settings_and_rejects_conflicts(tmp_path):
    configured = INPUTS + TASK_SOURCE.configure(isolation_level="SERIALIZABLE", key_storage=tmp_path)
    assert configured.isolation_level == "SERIALIZABLE" and configured.key_storage == tmp_path
    with pytest.raises(ValueError, match="different isolation levels"):
        configured + RUN_ID.configure(isolation_level="READ_COMMITTED")
    with pytest.raises(ValueError, match="different storage locations"):
        configured + RUN_ID.configure(key_storage=tmp_path / "other")


# -- policies written by users, and policy classes ----------------------------------------------------------
class _EvenOdd(CachePolicy):
    """A user's policy with Prefect's signature: the key is whether `n` is even."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs):
        assert task_ctx.task.name == "parity" and task_ctx.task_run.id is not None
        return f"parity-{inputs['n'] % 2}"


def test_a_user_defined_policy_gets_the_run_context_and_inputs(tmp_path):
    @task(name="parity", cache_policy=_EvenOdd(), result_storage=tmp_path)
    def parity(n):
        return n

    assert [parity(n) for n in (2, 4, 3, 5)] == [2, 2, 3, 3]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["parity-0", "parity-1"]


@pytest.mark.parametrize("policy_class", [Inputs, TaskSource, RunId, FlowParameters, CompoundCachePolicy])
def test_a_policy_class_is_accepted_as_its_instance(policy_class):
    @task(cache_policy=policy_class)
    def work():
        return 1

    assert work.cache_policy == policy_class() and work.persist_result is True


def test_a_policy_class_that_needs_arguments_is_an_error_naming_it():
    class NeedsArgs(CachePolicy):
        def __init__(self, x):
            super().__init__()

    with pytest.raises(TypeError, match=r"cache_policy=NeedsArgs is a class that cannot be made without arguments"):
        task(cache_policy=NeedsArgs)(lambda: 1)


@pytest.mark.parametrize("not_a_policy", ["INPUTS", 3, lambda ctx, p: "k", object])
def test_anything_else_as_cache_policy_is_rejected_at_decoration(not_a_policy):
    with pytest.raises(TypeError, match="cache_policy must be a CachePolicy"):
        task(cache_policy=not_a_policy)(lambda: 1)


# -- task.cache_policy and task.persist_result, resolved at decoration ---------------------------------------
def test_a_plain_task_has_the_default_policy_and_no_persistence_choice():
    @task
    def work():
        return 1

    assert work.cache_policy is DEFAULT and work.persist_result is None
    renamed = work.with_options(name="other")
    assert renamed.cache_policy is DEFAULT and renamed.persist_result is None


@pytest.mark.parametrize("persist", [True, False])
def test_persist_result_is_kept_as_given(persist):
    @task(persist_result=persist)
    def work():
        return 1

    assert work.persist_result is persist
    assert task(lambda: 1).with_options(persist_result=persist).persist_result is persist
    assert work.cache_policy is (DEFAULT if persist else NO_CACHE)


@pytest.mark.parametrize("option", [
    {"cache_policy": INPUTS}, {"cache_key_fn": lambda ctx, p: "k"}, {"result_serializer": "json"},
    {"result_storage_key": "k"}, {"result_storage": "results"},
])
def test_an_explicit_caching_or_result_option_turns_persistence_on(option, tmp_path):
    if "result_storage" in option:
        option = {"result_storage": tmp_path}

    @task(**option)
    def work():
        return 1

    assert work.persist_result is True
    assert task(lambda: 1).with_options(**option).persist_result is True


def test_cache_key_fn_becomes_the_policy_and_wins_over_cache_policy():
    def key(ctx, params):
        return "k"

    with pytest.warns(UserWarning, match="cache_key_fn will be used"):
        @task(cache_key_fn=key, cache_policy=INPUTS)
        def work():
            return 1

    assert work.cache_policy == CacheKeyFnPolicy(cache_key_fn=key)


def test_persist_result_false_means_no_cache_policy():
    @task(persist_result=False)
    def off():
        return 1

    @task(persist_result=False, cache_policy=None)
    def none():
        return 1

    assert off.cache_policy is NO_CACHE and none.cache_policy is None
    with pytest.warns(UserWarning, match="ignoring cache_policy because persist_result is False"):
        assert task(persist_result=False, cache_policy=INPUTS)(lambda: 1).cache_policy is NO_CACHE


def test_a_result_storage_key_replaces_the_policy():
    @task(result_storage_key="out-{parameters[x]}")
    def work(x):
        return x

    assert work.cache_policy is None and work.result_storage_key == "out-{parameters[x]}"
    assert task(persist_result=True, cache_policy=TASK_SOURCE)(lambda: 1).cache_policy is TASK_SOURCE


def test_explicit_none_policy_caches_nothing(store):
    calls = []

    @task(cache_policy=None, persist_result=True)
    def work(x):
        calls.append(x)
        return x

    @flow
    def f():
        return work(1, return_state=True), work(1, return_state=True)

    assert [s.name for s in f()] == ["Completed", "Completed"] and calls == [1, 1]


# -- what runs see ------------------------------------------------------------------------------------------
def test_cache_key_fn_sees_parameters_in_signature_order(store):
    seen = []

    def key(ctx, params):
        seen.append(list(params))
        return str(params)

    @task(cache_key_fn=key)
    def add(a, b, c=3):
        return a + b + c

    @flow
    def f():
        return [add(1, 2, 3, return_state=True), add(1, b=2, return_state=True),
                add(c=3, a=1, b=2, return_state=True), add(b=2, a=1, return_state=True)]

    assert [s.name for s in f()] == ["Completed", "Cached", "Cached", "Cached"]
    assert seen == [["a", "b", "c"]] * 4


def test_task_input_hash_changes_when_the_tasks_function_changes(store):
    @task(cache_key_fn=task_input_hash)
    def work(x):
        return x

    def new_code(x):
        return x + 1

    @flow
    def f():
        first = work(1, return_state=True)
        again = work(1, return_state=True)
        work.fn = new_code
        changed = work(1, return_state=True)
        return first, again, changed

    states = f()
    assert [s.name for s in states] == ["Completed", "Cached", "Completed"]
    assert [s.result() for s in states] == [1, 1, 2]


def test_key_storage_is_where_the_policys_records_live(tmp_path):
    with isolated_home(tmp_path / "home") as sqlite_store:
        policy = INPUTS.configure(key_storage=tmp_path / "keys")
        expected = policy.compute_key(task_ctx=None, inputs={"x": 1}, flow_parameters=None)

        @task(cache_policy=policy)
        def work(x):
            return x

        assert [work.with_options()(1, return_state=True).name for _ in range(2)] == ["Completed", "Cached"]
        assert (tmp_path / "keys" / expected).exists()
        sqlite_store.flush()
        assert len(sqlite_store.read_task_runs()) == 2


@pytest.mark.anyio
async def test_a_lock_manager_serializes_runs_with_the_same_key(anyio_backend):
    """SERIALIZABLE with the user's lock manager: one run computes, the others wait and then hit."""

    class Locks:
        def __init__(self):
            self.locks, self.calls = {}, []

        def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None):
            self.calls.append(("acquire", key))
            self.locks.setdefault(key, threading.Lock()).acquire()
            return True

        def release_lock(self, key, holder):
            self.calls.append(("release", key))
            self.locks[key].release()

    import anyio

    locks = Locks()
    computed = []

    @task(cache_policy=(INPUTS + TASK_SOURCE).configure(isolation_level="SERIALIZABLE", lock_manager=locks))
    async def work(x):
        computed.append(x)
        await anyio.sleep(0.01)
        return uuid.uuid4().hex

    results = []

    async def call():
        results.append(await work(42))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
    assert len(computed) == 1 and len(set(results)) == 1
    assert sorted(c[0] for c in locks.calls) == ["acquire"] * 3 + ["release"] * 3
    assert len({c[1] for c in locks.calls}) == 1
