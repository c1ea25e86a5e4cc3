"""RunFilter is validated when it is built: any input either makes a filter (normalised, so that the
same filter written two ways is one query) or fails at once with an error that names the field."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncflow._states import StateType
from asyncflow._store.reads import RunFilter, decode_cursor, encode_cursor, query_key

FIELDS = ["flow_names", "task_names", "states", "tags", "since", "until", "parent_flow_run_id", "search"]

anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.binary(max_size=4), st.uuids(), st.uuids().map(str), st.sampled_from(list(StateType)),
    st.datetimes(), st.datetimes(timezones=st.timezones()),
    st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none(), st.sampled_from(list(StateType))), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(object()))


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=anything)
def test_any_value_makes_a_filter_or_an_error_naming_its_field(field, value):
    try:
        made = RunFilter(**{field: value})
    except (TypeError, ValueError) as exc:
        assert field in str(exc), str(exc)
        return
    normalised = getattr(made, field)
    if value is None:
        assert normalised is None
    elif field in ("flow_names", "task_names", "tags"):
        assert isinstance(normalised, frozenset) and all(isinstance(n, str) and n.strip() for n in normalised)
    elif field == "states":
        assert isinstance(normalised, frozenset) and all(n == n.lower() and n for n in normalised)
    elif field in ("since", "until"):
        assert isinstance(normalised, float) and math.isfinite(normalised)
    elif field == "parent_flow_run_id":
        assert isinstance(normalised, uuid.UUID)
    else:
        assert normalised is None or (isinstance(normalised, str) and normalised == normalised.strip())
    assert RunFilter(**{field: normalised}) == made  # normalising again changes nothing


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=5).filter(str.strip), min_size=1, max_size=4),
       states=st.lists(st.sampled_from(["completed", "FAILED", "Cached", "awaitingretry"]), min_size=1, max_size=3),
       newest_first=st.booleans())
def test_the_same_filter_written_two_ways_is_one_query(names, states, newest_first):
    one = RunFilter(flow_names=names, states=states, tags=names)
    other = RunFilter(flow_names=tuple(reversed(names)), states=[s.upper() for s in states], tags=set(names))
    assert one == other
    key = query_key("flow_runs", one, newest_first)
    assert key == query_key("flow_runs", other, newest_first)
    assert decode_cursor(encode_cursor(key, 1.5, 7), query_key("flow_runs", other, newest_first)) == (1.5, 7)
    assert key != query_key("task_runs", one, newest_first) != query_key("flow_runs", one, not newest_first)


def test_time_range_errors_name_the_field():
    naive = dt.datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="since is a naive datetime"):
        RunFilter(since=naive)
    with pytest.raises(ValueError, match="until must be a finite timestamp"):
        RunFilter(until=math.inf)
    with pytest.raises(TypeError, match="since must be a datetime with a timezone or a Unix timestamp"):
        RunFilter(since="yesterday")
    with pytest.raises(ValueError, match=r"since \(.*\) is after until"):
        RunFilter(since=10, until=5)
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert RunFilter(since=aware).since == aware.timestamp()
    with pytest.raises(ValueError, match="states is an empty list"):
        RunFilter(states=[])
    with pytest.raises(ValueError, match="RunFilter parent_flow_run_id 'x' is not a valid id"):
        RunFilter(parent_flow_run_id="x")
    with pytest.raises(TypeError):
        RunFilter("etl")  # keywords only
    assert RunFilter(search="  ") == RunFilter()  # an empty search box
    assert RunFilter(states=StateType.FAILED).states == frozenset({"failed"})
