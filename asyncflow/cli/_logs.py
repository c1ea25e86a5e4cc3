"""`asyncflow flow-run logs ID` and `asyncflow task-run logs ID`, with `--follow` for live runs.

Lines are read by their number in the store (`seq`), a page at a time, so that a run with millions of
lines is printed in bounded memory and following a run reads only the new lines. Following polls the
file every POLL_SECONDS: it never asks the process that runs the flow to flush, and it sees lines as
soon as that process's writer has written them (within milliseconds). It ends when the run is in a
final state: the run's state is read before its lines, so every line logged before the final state
was recorded is printed; one more poll picks up the lines logged just after (such as "Finished in
state Completed()"). Ctrl-C ends it (exit status 130, no traceback).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from . import _output as out

POLL_SECONDS = 0.5
PAGE = 10_000


class _Lines:
    """Prints one run's lines as they are read (a table line, or a JSON object per line when
    following), or collects them for one JSON list."""

    def __init__(self, store: Any, run: Any, is_flow: bool, as_json: bool, follow: bool) -> None:
        self.store, self.run, self.is_flow = store, run, is_flow
        self.as_json, self.follow = as_json, follow
        self.collected: list[dict[str, Any]] = []
        self.count = 0
        self._names: dict[str, str] | None = None

    def where(self, task_run_id: str | None) -> str:
        if not task_run_id:
            return f"Flow run '{self.run.name}'"
        if not self.is_flow:
            return f"Task run '{self.run.name}'"
        if self._names is None:
            self._names = {str(t.id): t.name for t in self.store.read_task_runs(flow_run_id=self.run.id)}
        name = self._names.get(task_run_id)
        if name is None:  # a task run that started after the names were read
            try:
                name = self._names[task_run_id] = self.store.read_task_run(task_run_id).name
            except (KeyError, ValueError):
                name = task_run_id
        return f"Task run '{name}'"

    def emit(self, log: Any) -> None:
        self.count += 1
        if self.as_json:
            if self.follow:
                sys.stdout.write(json.dumps(out.log_json(log), ensure_ascii=False) + "\n")
            else:
                self.collected.append(out.log_json(log))
            return
        sys.stdout.write(f"{out.local_time(log.ts, millis=True)} | {log.level:<7} | {self.where(log.task_run_id)} - "
                         f"{log.message}\n")


def show(store: Any, run: Any, *, is_flow: bool, as_json: bool, follow: bool) -> int:
    """Print a run's lines (and, with `follow`, the new ones until the run ends)."""
    lines = _Lines(store, run, is_flow, as_json, follow)
    where = {"flow_run_id": run.id} if is_flow else {
        "flow_run_id": run.flow_run_id, "task_run_id": run.id}
    read_state = store.read_flow_run if is_flow else store.read_task_run
    after, last_poll = 0, False
    try:
        while True:
            final = follow and read_state(run.id).state.is_final()  # the state first: see the docstring
            while True:  # the read API's log feed: what is stored, never flushing the running process
                page, after = store.read_logs_since(after, limit=PAGE, **where)
                for log in page:
                    lines.emit(log)
                if len(page) < PAGE:
                    break
            sys.stdout.flush()
            if not follow or (final and last_poll):
                break
            last_poll = final
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        sys.stdout.flush()
        return 130
    if as_json and not follow:
        out.dump_json(lines.collected)
    elif not lines.count and not as_json:
        print(f"{'Flow' if is_flow else 'Task'} run '{run.name}' has no log lines.")
    return 0
