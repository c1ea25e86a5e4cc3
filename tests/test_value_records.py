"""The records on the import path (states, runs, store records, settings, retry policy, runner
capabilities and options, the run snapshot) are hand-written `__slots__` classes, not attrs classes:
they keep what attrs gave them — constructor defaults, frozen-ness, equality and hashing, repr,
pickling and copying — and a user's attrs options class still works with a runner."""

from __future__ import annotations

import copy
import pickle
import uuid

import attrs
import pytest

from asyncflow._caching import _canonical
from asyncflow._engine.retry import RetryPolicy
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._settings import Setting, Settings
from asyncflow._store.base import LogRecord, StateRecord
from asyncflow._values import FrozenInstanceError
from asyncflow.states import Cached, Completed, Failed, Scheduled, State, StateDetails, StateType
from asyncflow.task_runners import Capabilities, RunnerOptions, RunSnapshot, TaskRunner, ThreadPoolOptions

RUN_ID = uuid.UUID(int=7)


def snapshot() -> RunSnapshot:
    return RunSnapshot("f-id", "f-run", "flow", "v1", {"x": 1}, ("a",), 1, "t-id", "t-run", "task", "key", ("b",), 2,
                       {"y": 2}, True, 20)


def task_run() -> TaskRun:
    return TaskRun(RUN_ID, "t-0", "t", "key", None, None, ("tag",), {"x": 1}, Completed(data=3), run_count=1)


def flow_run() -> FlowRun:
    return FlowRun(RUN_ID, "f", "flow", "v1", {"x": 1}, (), Completed(), run_count=2, end_time=3.0)


def test_state_defaults_its_name_from_its_type_and_its_time_from_now():
    before = __import__("time").time()
    state = State(StateType.COMPLETED)
    assert state.name == "Completed" and state.message is None and state.data is None
    assert state.state_details == StateDetails() and before <= state.ts
    assert State(StateType.FAILED, "Boom", "m", 1, StateDetails(cache_key="k"), 5.0).ts == 5.0


def test_states_compare_by_identity_and_details_by_value():
    first, second = Completed(), Completed(ts=1.0)
    assert first != Completed() and first == first and len({first, second}) == 2
    assert StateDetails(cache_key="k") == StateDetails(cache_key="k") != StateDetails(cache_key="j")
    assert hash(StateDetails(task_run_id=RUN_ID)) == hash(StateDetails(task_run_id=RUN_ID))
    assert (StateDetails() == object()) is False


def test_records_are_frozen():
    for value in (Completed(), StateDetails(), StateRecord(RUN_ID, StateType.RUNNING, "Running", None, 1.0),
                  LogRecord(None, None, "INFO", "m", 1.0), RetryPolicy(), Capabilities(), snapshot(),
                  ThreadPoolOptions(2), Settings({}, {})):
        with pytest.raises(FrozenInstanceError):
            value.ts = 2.0  # type: ignore[union-attr]
        with pytest.raises(AttributeError):
            del value.ts  # type: ignore[union-attr]
    assert issubclass(FrozenInstanceError, AttributeError)


def test_runs_are_mutable_and_compare_by_identity():
    run = task_run()
    run.run_count += 1
    assert run.run_count == 2 and run != task_run() and run == run


def test_pickling_and_copying_keep_every_field():
    state = Failed(message="boom", data=ValueError("x"), state_details=StateDetails(task_run_id=RUN_ID))
    back = pickle.loads(pickle.dumps(state))
    assert (back.type, back.name, back.message, back.ts, back.state_details) == (
        state.type, state.name, state.message, state.ts, state.state_details)
    assert str(back.data) == "x"
    for value in (StateDetails(cache_key="k"), snapshot(), Capabilities(remote=True), RetryPolicy(2, (1.0,)),
                  LogRecord("f", "t", "INFO", "m", 1.0, seq=4), ThreadPoolOptions(3),
                  StateRecord(RUN_ID, StateType.RUNNING, "Running", None, 1.0)):
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
            assert pickle.loads(pickle.dumps(value, protocol)) == value
        assert copy.copy(value) == value and copy.deepcopy(value) == value
    for run in (task_run(), flow_run()):
        back = pickle.loads(pickle.dumps(run))
        fields = [name for name in type(run).__slots__ if name != "state"]
        assert [getattr(back, n) for n in fields] == [getattr(run, n) for n in fields]
        assert back.state.ts == run.state.ts
        clone = copy.copy(run)
        assert clone is not run and clone.parameters is run.parameters


def test_log_records_compare_without_their_sequence_number():
    assert LogRecord(None, "t", "INFO", "m", 1.0, seq=1) == LogRecord(None, "t", "INFO", "m", 1.0, seq=2)
    assert LogRecord(None, "t", "INFO", "m", 1.0) != LogRecord(None, "t", "INFO", "n", 1.0)
    assert len({LogRecord(None, "t", "INFO", "m", 1.0, seq=1), LogRecord(None, "t", "INFO", "m", 1.0, seq=2)}) == 1


def test_reprs_name_every_field_as_attrs_did():
    assert repr(StateDetails(cache_key="k")) == (
        "StateDetails(flow_run_id=None, task_run_id=None, child_flow_run_id=None, cache_key='k', "
        "cache_expiration=None, scheduled_time=None)")
    assert repr(LogRecord(None, "t", "INFO", "m", 1.0, seq=3)) == (
        "LogRecord(flow_run_id=None, task_run_id='t', level='INFO', message='m', ts=1.0, seq=3)")
    assert repr(Capabilities(slots=True)) == (
        "Capabilities(pool_threads=False, slots=True, async_tasks=False, remote=False, enforces_timeouts=False, "
        "kills_at_deadline=False)")
    assert repr(Cached()) == "Cached(type=COMPLETED)"  # States keep their short form
    assert repr(ThreadPoolOptions(2)) == "ThreadPoolOptions(max_workers=2)"


def test_replace_and_with_details_copy_with_changes():
    state = Completed(data=1, state_details=StateDetails(cache_key="k"))
    changed = state.with_details(task_run_id=RUN_ID)
    assert changed.state_details == StateDetails(task_run_id=RUN_ID, cache_key="k")
    assert (changed.data, changed.ts, changed.name) == (1, state.ts, "Completed")
    assert Scheduled(scheduled_time=None).state_details == StateDetails()
    assert flow_run().replace(name="g").name == "g"
    setting = Setting("X", str, "d", "help", "text")
    assert setting.in_profile and setting.replace(in_profile=False) == Setting("X", str, "d", "help", "text", False)


def test_keyword_patterns_match_records():
    match LogRecord("f", None, "INFO", "m", 1.0):
        case LogRecord(level="INFO", message=message):
            assert message == "m"
        case _:
            raise AssertionError("no match")
    match Capabilities(True):
        case Capabilities(True, False):
            pass
        case _:
            raise AssertionError("no positional match")


def test_records_as_parameters_keep_their_cache_keys():
    """Cache keys of a record passed as a parameter are what they were when it was an attrs class."""
    key = _canonical(StateDetails(cache_key="k"), "x", 0)
    assert key[0] == "attrs" and key[1] == "asyncflow._states.StateDetails"


def test_thread_pool_options_check_max_workers():
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        ThreadPoolOptions(0)
    assert ThreadPoolOptions() == ThreadPoolOptions(None) != ThreadPoolOptions(1)


@attrs.frozen
class LimitOptions(RunnerOptions):
    limit: int = 2
    label: str = attrs.field(default="x")


class LimitRunner(TaskRunner):
    def __init__(self, limit: int = 2) -> None:
        super().__init__()
        self.options = LimitOptions(limit)


def test_a_users_attrs_options_class_works_with_a_runner():
    runner = LimitRunner(3)
    assert repr(runner) == "LimitRunner(limit=3, label='x')"
    assert runner == LimitRunner(3) != LimitRunner(4) and hash(runner) == hash(LimitRunner(3))
    assert runner.duplicate().options is runner.options
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        runner.options.limit = 5  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(runner.options)) == runner.options
    assert attrs.evolve(runner.options, limit=1) == LimitOptions(1)
    assert repr(TaskRunner()) == "TaskRunner()" and TaskRunner() == TaskRunner()
