"""Runs that have started and not yet ended. At interpreter exit, any still open is recorded
`Crashed`: a run is never left `Running` in the store because its process went away."""

from __future__ import annotations

import atexit
import time
from typing import Any

from .._states import State, StateType
from .._store import get_store

OPEN: dict[Any, Any] = {}  # run id -> run record (task runs and flow runs)


def _record_open_runs_crashed() -> None:
    store = get_store()
    for run in list(OPEN.values()):
        state = State(StateType.CRASHED, "Crashed", "The process exited while the run was still open.", None,
                      run.state.state_details, time.time())
        run.state = state
        store.record_state(run.id, state)
    OPEN.clear()


atexit.register(_record_open_runs_crashed)
