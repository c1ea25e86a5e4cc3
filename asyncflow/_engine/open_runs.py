"""Runs that have started and not yet ended. At interpreter exit, any still open is recorded
`Crashed`: a run is never left `Running` in the store because its process went away."""

from __future__ import annotations

import atexit
import time
from typing import Any

from .._states import State, StateType
from .._store import flush, get_store

OPEN: dict[Any, Any] = {}  # run id -> run record (task runs and flow runs)


def _record_open_runs_crashed() -> None:
    """atexit runs handlers last-registered first, so the store's own exit flush (registered when the
    store was created, after this module was imported) has already run: flush again after recording."""
    if not OPEN:
        return  # nothing to record: do not create a store at exit
    store = get_store()
    for run in list(OPEN.values()):
        state = State(StateType.CRASHED, "Crashed", "The process exited while the run was still open.", None,
                      run.state.state_details, time.time())
        run.state = state
        store.record_state(run.id, state)
    OPEN.clear()
    flush()


atexit.register(_record_open_runs_crashed)
