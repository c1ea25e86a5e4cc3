import pytest

from asyncflow._states import aggregate_states, return_value_to_state
from asyncflow.exceptions import CrashedRun, FailedRun, UnfinishedRun
from asyncflow.states import (
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    NotReady,
    Pending,
    Running,
    State,
    StateDetails,
    StateType,
    TimedOut,
)


def test_repr_is_short_and_names_the_type_only_when_it_differs():
    assert repr(Completed()) == "Completed()"
    assert repr(Cached()) == "Cached(type=COMPLETED)"
    assert repr(Failed(message="boom")) == "Failed('boom')"
    assert repr(TimedOut(message="late")) == "TimedOut('late', type=FAILED)"
    assert str(NotReady(message="x")) == "NotReady('x', type=PENDING)"


def test_states_are_immutable():
    state = Completed()
    with pytest.raises(AttributeError):
        state.message = "changed"  # type: ignore[misc]


def test_predicates_follow_the_type():
    assert Completed().is_completed() and Completed().is_final()
    assert Cached().is_completed()
    assert TimedOut().is_failed()
    assert Crashed().is_crashed() and Cancelled().is_cancelled()
    assert Running().is_running() and not Running().is_final()
    assert Pending().is_pending()


def test_result_returns_data_or_raises_the_stored_exception():
    assert Completed(data=3).result() == 3
    error = ValueError("nope")
    with pytest.raises(ValueError, match="nope"):
        Failed(data=error).result()
    assert Failed(data=error).result(raise_on_failure=False) is error


def test_result_wraps_failures_without_an_exception():
    with pytest.raises(FailedRun, match="went wrong"):
        Failed(message="went wrong").result()
    with pytest.raises(FailedRun, match="string data"):
        Failed(data="string data").result()
    with pytest.raises(CrashedRun):
        Crashed(message="interrupted").result()


def test_result_of_unfinished_state_raises_unfinished_run():
    with pytest.raises(UnfinishedRun, match="RUNNING"):
        Running().result()


def test_nested_state_exception_is_raised():
    inner = Failed(data=KeyError("child"), state_details=StateDetails(task_run_id=__import__("uuid").uuid4()))
    outer = return_value_to_state([inner, Completed(data=1, state_details=inner.state_details)])
    with pytest.raises(KeyError, match="child"):
        outer.result()


def test_timestamp_is_timezone_aware():
    assert Completed().timestamp.tzinfo is not None


def _run_state(state: State) -> State:
    import uuid

    return State(state.type, state.name, state.message, state.data, StateDetails(task_run_id=uuid.uuid4()))


def test_aggregation_all_completed():
    states = [_run_state(Completed()), _run_state(Completed())]
    assert repr(aggregate_states(states, states)) == "Completed('All states completed.')"


def test_aggregation_counts_failures_and_crashes():
    states = [_run_state(Failed()), _run_state(Crashed()), _run_state(Completed())]
    assert repr(aggregate_states(states, states)) == "Failed('2/3 states failed.')"


def test_aggregation_cancelled_wins_over_failed():
    states = [_run_state(Cancelled()), _run_state(Failed()), _run_state(Completed())]
    assert aggregate_states(states, states).message == "1/3 states cancelled."


def test_aggregation_unfinished_states():
    states = [_run_state(Running()), _run_state(Pending()), _run_state(Completed())]
    assert aggregate_states(states, states).message == "2/3 states are not final."


def test_user_made_state_is_adopted_as_is():
    state = Cancelled(message="stop")
    assert return_value_to_state(state) is state


def test_plain_value_completes_and_empty_list_is_a_value():
    assert return_value_to_state(5).data == 5
    assert return_value_to_state([]).type is StateType.COMPLETED
    assert return_value_to_state({"a": Completed()}).type is StateType.COMPLETED
