"""A batch of records folded into rows: what every database store writes, whatever its dialect.

New runs get numbers (`ref`, from the store's counter) and rows; a run's current state, attempt
count and timing are folded from its states: into the run's new row when the run is new in this
batch, else into one update row per run (`[type, name, message, ts, attempts, start, end, owner,
ref]`, and for a task run the JSON of its states to append to its history (history.py), applied by the
dialect so that the newest state by time wins). A run recorded again (a
rendered task-run name) becomes a rename. The dialect then inserts and updates the rows its own way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .._states import FINAL_TYPES, StateType
from . import history
from .history import TICKS
from .records import FLOW, LINE, LOG, STATE, TASK, details_json, id_text

# a state row's type, as a number (fixed: stored): one byte instead of the type's name (SQLite 8, PostgreSQL 4)
STATE_CODES = {"SCHEDULED": 0, "PENDING": 1, "RUNNING": 2, "COMPLETED": 3, "FAILED": 4, "CANCELLED": 5, "CRASHED": 6,
               "PAUSED": 7, "CANCELLING": 8}
# a stored type (its number, or its name in rows written before) -> the StateType, and its own name
STORED_TYPES: dict[Any, StateType] = {**{t.value: t for t in StateType},
                                      **{STATE_CODES[t.value]: t for t in StateType}}
PLAIN_NAMES = {key: t.value.capitalize() for key, t in STORED_TYPES.items()}  # a state's name when it is its type's own
TASK_STATE_COLUMN, FLOW_STATE_COLUMN = 12, 10  # where the state columns start in a run row
OPEN_RUNS_KEPT = 100_000  # runs a writer remembers (their ref) until their final state
_FINAL_CODES = frozenset(STATE_CODES[t.value] for t in FINAL_TYPES)
_RUNNING_CODE = STATE_CODES["RUNNING"]


def _same(value: Any) -> Any:
    return value


def _none(run_id: Any) -> Any:
    return None


def _text(number: int | None) -> str | None:
    return None if number is None else id_text(number)


def _tags(tags: Any) -> str:
    return json.dumps(list(tags)) if tags else "[]"


class Folded:
    """The rows of one batch (see the module's docstring)."""

    __slots__ = ("flows", "flow_runs", "task_runs", "renames", "states", "logs", "flow_updates", "task_updates",
                 "next_ref", "next_seq", "packed", "appends", "history_updates")

    def __init__(self, next_ref: int, next_seq: int) -> None:
        self.flows: dict[str, tuple[Any, ...]] = {}  # flow name -> (name, version, created): once per batch
        self.flow_runs: list[list[Any]] = []
        self.task_runs: list[list[Any]] = []
        self.renames: list[tuple[str, int]] = []
        # a plain state (no message, no details, its run's ref known): (run ref, type, name, line, flow ref,
        # ts, seq); any other: (run ref, run id (only when the ref is not known), type, name, message, details,
        # line, flow ref, ts, seq). `line` and `flow ref` (the ref of the flow run the line belongs to) are
        # set on a state carrying an engine line (lines.py). Fewer values per row: less to bind.
        self.states: list[tuple[Any, ...]] = []
        self.logs: list[tuple[Any, ...]] = []  # (flow run id, task run id, level, message, ts, seq)
        self.flow_updates: list[list[Any]] = []
        self.task_updates: list[list[Any]] = []
        self.next_ref = next_ref
        self.next_seq = next_seq  # the last number given to a state or a log line (one sequence: lines.py)
        # packing (history.py): the task runs' states of this batch, per run: [ref, created, its states (see `_pack`,
        # then the append's JSON), new (its row is in task_runs: the history is in it), that row], the rows of
        # `appends` ((last seq, ref, back)) and the appends to rows another writer stored ((append JSON, ref):
        # an earlier batch's rows get theirs as the last value of their `task_updates` row)
        self.packed: list[list[Any]] = []
        self.appends: list[tuple[int, int, int]] = []
        self.history_updates: list[tuple[str, int]] = []


def fold(batch: list[tuple[Any, ...]], *, next_ref: int, next_seq: int, owner: int, open_runs: dict[int, list[Any]],
         find_ref: Callable[[Any], list[Any] | None], parameters_json: Callable[[Any], str],
         clean: Callable[[Any], Any] = _same, find_flow_ref: Callable[[Any], list[Any] | None] = _none,
         find_given: Callable[[Any], int | None] = _none, wired: bool = False) -> Folded:
    """Fold `batch`: records as recorded, or as they arrive through the writer process's pipe when `wired`
    (writer_pipe.py: a run id as its int, a state's type as its name, its details as their JSON). States
    and log lines are numbered after `next_seq`, in the order they were recorded; an engine line (LINE)
    marks the state it is about when that state is in this batch (its run's last one, with the line's
    time), else it becomes a log row (lines.py). `open_runs` (the writer's memory of runs written and not
    yet final, by their id's int) is updated; `find_ref(run_id)` looks up a run written before it (by its
    id's text, as `find_flow_ref` and `find_given` do); `clean` makes a text storable (PostgreSQL refuses
    NUL characters).

    A task run points at its flow run by number (`flow_ref`). A flow run that is not stored yet (a
    background run's caller, in another process) is given its number ahead of its row, and the task run
    keeps the flow run's id as text too; the flow run takes that number when it arrives.
    `find_flow_ref(flow_id)` is the number of a flow run stored or given ahead, `find_given(flow_id)` the
    number given ahead only.

    A task run's states go into its row's history instead of `states` rows (history.py): `open_runs` and
    `find_ref` give a task run as [ref, False, created, its flow run's id int or None]."""
    out = Folded(next_ref, next_seq)
    seq = next_seq
    states, logs, renames = out.states, out.logs, out.renames
    # per run seen in this batch (by its id's int): [ref, id text, row holding its state columns, where
    # they start, index of its last state in `states`, its packed states (or None: its states are rows),
    # its flow run's id int]; parent ids as text (a batch's task runs mostly share their flow run)
    seen: dict[int, list[Any]] = {}
    # the flow runs of this batch's task runs, by their id's int: (number, id text if given ahead else None)
    flows_of_tasks: dict[int, tuple[int, str | None]] = {}
    flow_refs: dict[int, int] = {}  # flow runs' refs, by their id's int, for the lines of this batch
    last_details: Any = None
    details_text: str | None = None
    running, final_codes = _RUNNING_CODE, _FINAL_CODES
    cleaning = clean is not _same  # SQLite stores any text: no call per value there
    packed: list[Any] | None
    for record in batch:
        kind = record[0]
        if kind == STATE:
            _, rid, type_text, name, message, ts, details = record
            if wired:
                details_text = details
            else:
                rid, type_text = rid.int, type_text._value_  # not `.value`: a descriptor written in Python
                if details is not last_details:  # a run's states mostly share theirs
                    last_details, details_text = details, details_json(details)
            entry = seen.get(rid)
            if entry is None:  # a run written by an earlier batch
                known = open_runs.get(rid)
                if known is None:
                    known = find_ref(id_text(rid))
                if known is None:  # its run record never arrived: keep the state (and its run's id) anyway
                    entry = seen[rid] = [None, id_text(rid), [None, None, None, None, 0, None, None, owner], 0, None,
                                         None, None]
                else:
                    row = [None, None, None, None, 0, None, None, owner, known[0]]
                    (out.flow_updates if known[1] else out.task_updates).append(row)
                    packed = None
                    if not known[1]:
                        packed = [0, known[2], None]  # see _pack
                        out.packed.append([known[0], known[2], packed, False, row])  # (its update row)
                    entry = seen[rid] = [known[0], None, row, 0, None, packed, None if known[1] else known[3]]
            ref, key, row, offset, _, packed, _ = entry
            code = STATE_CODES[type_text]
            if cleaning:
                name, message = clean(name), clean(message)
            stored_name = None if name == PLAIN_NAMES[type_text] else name  # read back as the type's own name
            seq += 1
            if packed is not None:  # numbers in the run's list: no object per state for the cyclic GC to count
                created = packed[1]
                ticks = int((ts - created) * TICKS)  # (whole when it packs: the check below says)
                packed.extend((seq - packed[0], code, ticks if created + ticks / TICKS == ts else float(ts),
                               0 if stored_name is None and message is None and details_text is None else
                               [0, stored_name, message, details_text]))
                packed[0] = seq
                packed[2] = ts
            elif message is None and details_text is None and ref is not None:
                states.append((ref, code, stored_name, None, None, ts, seq))
            else:
                states.append((ref, key if ref is None else None, code, stored_name, message, details_text, None,
                               None, ts, seq))
            entry[4] = len(states) - 1
            current = row[offset + 3]
            if current is None or current <= ts:  # the newest state by time is the current one
                row[offset] = type_text
                row[offset + 1] = name
                row[offset + 2] = message
                row[offset + 3] = ts
            if code == running:
                row[offset + 4] += 1
                if row[offset + 5] is None:
                    row[offset + 5] = ts
            elif code in final_codes:
                row[offset + 6] = ts
                open_runs.pop(rid, None)
        elif kind == LOG:
            _, flow_run_id, task_run_id, level, message, ts = record
            seq += 1
            logs.append((flow_run_id, task_run_id, level, clean(message) if cleaning else message, ts, seq))
        elif kind == LINE:
            _, flow_run_id, task_run_id, level, message, ts, run_id, code, flow_id = record
            if not wired:
                run_id, flow_id = run_id.int, None if flow_id is None else flow_id.int
            entry = seen.get(run_id)
            packed = None if entry is None else entry[5]
            if packed is not None and len(packed) > 3:  # a task run's last packed state: the line is read back
                # with it, in its task run's flow run
                more = packed[-1]
                if packed[2] == ts and not (more if type(more) is int else more[0]) and flow_id == entry[6]:  # type: ignore[index]
                    if type(more) is int:
                        packed[-1] = code
                    else:
                        more[0] = code
                    continue
            elif entry is not None and entry[4] is not None:
                index = entry[4]
                state = states[index]
                if state[-2] == ts and state[-4] is None and state[0] is not None:  # the run's last state: the line's
                    if flow_id is None:  # a task run outside any flow
                        flow_ref = None
                    else:
                        flow_ref = flow_refs.get(flow_id)
                        if flow_ref is None:
                            flow = seen.get(flow_id) or open_runs.get(flow_id) or find_ref(id_text(flow_id))
                            flow_ref = None if flow is None else flow_refs.setdefault(flow_id, flow[0])
                    if flow_id is None or flow_ref is not None:
                        if len(state) == 7:  # plain: (ref, type, name, line, flow ref, ts, seq)
                            states[index] = (state[0], state[1], state[2], code, flow_ref, state[5], state[6])
                        else:
                            states[index] = (*state[:-4], code, flow_ref, *state[-2:])
                        continue
            seq += 1
            logs.append((flow_run_id, task_run_id, level, clean(message) if cleaning else message, ts, seq))
        elif kind == TASK:
            (_, rid, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters,
             tags, created) = record
            if not wired:
                rid = rid.int
                flow_run_id = None if flow_run_id is None else flow_run_id.int
                parent_task_run_id = None if parent_task_run_id is None else parent_task_run_id.int
            if cleaning:
                name = clean(name)
            entry = seen.get(rid)
            if entry is not None and entry[3]:  # recorded again in this batch: a new name
                entry[2][2] = name
                continue
            known = open_runs.get(rid)
            if known is not None:  # written by an earlier batch: a new name
                renames.append((name, known[0]))
                continue
            if flow_run_id is None:
                flow_ref = flow_text = None
            else:
                flow_ref, flow_text = flows_of_tasks.get(flow_run_id) or _flow_of_task(
                    flow_run_id, seen, open_runs, find_flow_ref, flows_of_tasks, out)
            out.next_ref += 1
            key = id_text(rid)
            if cleaning:
                task_name, task_key, task_version = clean(task_name), clean(task_key), clean(task_version)
                text, tags_text = clean(parameters_json(parameters)), clean(_tags(tags))
            else:
                text, tags_text = parameters_json(parameters), _tags(tags) if tags else "[]"
            row = [out.next_ref, key, name, task_name, task_key, task_version, flow_ref, flow_text,
                   _text(parent_task_run_id), text, tags_text, created,
                   None, None, None, None, 0, None, None, owner]
            out.task_runs.append(row)
            open_runs[rid] = [out.next_ref, False, created, flow_run_id]
            packed = [0, created, None]  # see _pack
            out.packed.append([out.next_ref, created, packed, True, row])
            row.append(None)  # its history (the end of fold)
            seen[rid] = [out.next_ref, key, row, TASK_STATE_COLUMN, None, packed, flow_run_id]
        elif kind == FLOW:
            (_, rid, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id,
             created) = record
            if not wired:
                rid = rid.int
                parent_flow_run_id = None if parent_flow_run_id is None else parent_flow_run_id.int
                parent_task_run_id = None if parent_task_run_id is None else parent_task_run_id.int
            if rid in seen or rid in open_runs:
                continue
            given = flows_of_tasks.get(rid)  # its number, given ahead to its task runs (this batch or before)
            key = id_text(rid)
            ref = given[0] if given is not None and given[1] is not None else find_given(key)
            if ref is None:
                out.next_ref += 1
                ref = out.next_ref
            flows_of_tasks[rid] = (ref, None)
            flow_name = clean(flow_name)
            out.flows[flow_name] = (flow_name, clean(flow_version), created)
            row = [ref, key, clean(name), flow_name, clean(flow_version), clean(parameters_json(parameters)),
                   clean(_tags(tags)), _text(parent_flow_run_id), _text(parent_task_run_id), created,
                   None, None, None, None, 0, None, None, owner]
            out.flow_runs.append(row)
            open_runs[rid] = [ref, True]
            seen[rid] = [ref, key, row, FLOW_STATE_COLUMN, None, None, None]
    out.next_seq = seq
    _pack(out, next_seq + 1)
    if len(open_runs) > OPEN_RUNS_KEPT:  # runs that never end (NotReady...), or very many pending: the
        # older half is forgotten at once (looked up if needed). (Not the first key, one at a time: a dict
        # emptied from its front walks every deleted slot to find it: ~40 µs per run at 100,000.)
        newest = list(open_runs.items())[-(OPEN_RUNS_KEPT // 2):]
        open_runs.clear()
        open_runs.update(newest)
    return out


def _pack(out: Folded, batch_start: int) -> None:
    """The packed states of the batch as histories: in the new rows, else as appends to earlier rows.

    A run's packing is one list: [its last state's number, the run's creation time, its last state's time,
    then four values per state as history.py stores them]."""
    appends = out.appends
    encode = history.encode
    for entry in out.packed:
        ref, _, packing, new, row = entry
        if len(packing) == 3:  # no state in this batch
            entry[2] = None
            if not new:
                row.append(None)
            continue
        text = entry[2] = encode(packing[3:])
        if new:
            row[-1] = f"[{text}]"
        else:  # appended by the run's update row (its last value)
            row.append(text)
        appends.append((packing[0], ref, packing[0] - batch_start))


def _flow_of_task(fid: int, seen: dict[int, list[Any]], open_runs: dict[int, list[Any]],
                  find_flow_ref: Callable[[Any], list[Any] | None], flows_of_tasks: dict[int, tuple[int, str | None]],
                  out: Folded) -> tuple[int, str | None]:
    """(number, id text or None) of a task run's flow run: written (this batch or before: its number), or
    not stored yet: the number given ahead of its row (by an earlier batch, or now), with its id as text."""
    flow = seen.get(fid) or open_runs.get(fid)
    found: tuple[int, str | None]
    if flow is not None:
        found = (flow[0], None)
    else:
        flow_id = id_text(fid)
        known = find_flow_ref(flow_id)  # [number, stored] or None
        if known is None:
            out.next_ref += 1
            found = (out.next_ref, flow_id)
        else:
            found = (known[0], None if known[1] else flow_id)
    flows_of_tasks[fid] = found
    return found


def merge_known(task_runs: list[list[Any]], existing: dict[str, int], open_runs: dict[int, list[Any]],
                task_updates: list[list[Any]], renames: list[tuple[str, int]]) -> dict[int, int]:
    """Task runs of a batch that another writer recorded first (a background run: `.delay()` records
    it Scheduled in the caller's process, the worker again when it runs it) keep the row that exists
    (`existing`: id text -> its ref): its name is updated, the batch's states for them go to that row,
    and its current state is updated (the newest by time wins). Returns {ref this batch gave them:
    ref of the existing row}."""
    import uuid

    remap: dict[int, int] = {}
    for row in task_runs:
        ref = existing.get(row[1])
        if ref is None or ref == row[0]:
            continue
        remap[row[0]] = ref
        known = open_runs.get(uuid.UUID(row[1]).int)
        if known is not None:
            known[0] = ref  # later batches' states for this run go to the existing row
        renames.append((row[2], ref))
        state = row[TASK_STATE_COLUMN:TASK_STATE_COLUMN + 7]
        if state[0] is not None:  # [type, name, message, ts, run_count, start, end]: written by the caller
            task_updates.append([*state, row[TASK_STATE_COLUMN + 7], ref, None])  # (no packed states: see repack)
    return remap


def repack(out: Folded, remap: dict[int, int], created: dict[int, float], open_runs: dict[int, list[Any]]) -> None:
    """The packed states of task runs another writer stored first (`remap`, from `merge_known`: the ref
    this batch gave them -> the existing row's; `created`: that row's creation time, by its ref): appended
    to that row, their times counted from its creation, as later batches' states will be."""
    import uuid

    for ref, first, text, new, _ in out.packed:
        target = remap.get(ref)
        if target is not None and new and text is not None:  # the same states, their times from the row's creation
            states = history.decode(f"[{text}]", first)
            out.history_updates.append((history.append(states, created[target]), target))
    out.appends = [(seq, remap.get(ref, ref), back) for seq, ref, back in out.appends]
    for row in out.task_runs:
        target = remap.get(row[0])
        if target is not None:
            known = open_runs.get(uuid.UUID(row[1]).int)
            if known is not None:
                known[2] = created[target]
