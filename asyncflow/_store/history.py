"""A task run's states packed in its row (`task_runs.history`), instead of one `states` row each.

The history is compact JSON: a list of *appends* (the states one batch wrote for the run: its INSERT
when the run is new in the batch, else one UPDATE that adds an append at the end), each a flat list of
four values per state, in the order they were numbered:

    [[seq, code, dt, line, dseq, code, dt, [line, name, message, details], ...], [...]]

- `seq`: the state's number (from the counter states and log lines share; lines.py); in an append, the
  first state's is given whole and the next ones as the difference to the previous one;
- `code`: its type (fold.STATE_CODES);
- `dt`: its time, as an integer number of 2**-22 s after the run's `created` (exact: the decoder computes
  `created + dt / 2**22`, and the encoder keeps that form only when it gives back the same float), else
  the time itself as a float (JSON keeps the two apart: `840` and `840.0`);
- the engine line marked on it (lines.py; 0: none), or, when the state has a name of its own (not its
  type's), a message or details (as in `states`), [line, name, message, details].

A plain state is four numbers (`[0,1,0,1,1,2,210,0,1,3,840,2]`: ~30 bytes for a task run's three
states, against ~140 as rows). Each append has a row in `appends` (its last state's number, its run, and
how far back its batch started): the change feeds find the states after a number through it (`after`).
An append's states all lie in its batch's numbers, and batches' numbers never overlap, so the states
after `since` up to the end of some batch are exactly those of the appends up to the end of that batch.

JSON because Python's C encoder and decoder make and read it in about a microsecond a run (the writer
builds a flat list of numbers per run: nothing per state for the cyclic GC to count), and SQL can build
it (the migrations) and `json.loads` reads it back exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

TICKS = 4194304.0  # 2**22 ticks a second: a time since 2004 is a whole number of them (its float's precision)

# (seq, code, name, message, ts, details, line): a state as the readers use it
Entry = tuple[int, Any, "str | None", "str | None", float, "str | None", "int | None"]


def _make_encoder() -> Callable[[Any], str]:
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def unencodable(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    iterencode = make(None, unencodable, encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(iterencode(value, 0))


encode = _make_encoder()


def stored_time(ts: float, created: float) -> int | float:
    """A state's time as stored: ticks after `created` when they give `ts` back exactly, else `ts`."""
    ticks = int((ts - created) * TICKS)  # (whole when it packs: the check says)
    return ticks if created + ticks / TICKS == ts else float(ts)


def rest(line: int | None, name: str | None, message: str | None, details: str | None) -> Any:
    """A state's fourth value: its line code (0: none), or [line, name, message, details]."""
    if name is None and message is None and details is None:
        return line or 0
    return [line or 0, name, message, details]


def append(states: Iterable[Sequence[Any]], created: float) -> str:
    """One append's JSON, from its states in number order: (seq, code, name, message, ts, details, line)."""
    flat: list[Any] = []
    previous = 0
    for seq, code, name, message, ts, details, line in states:
        flat += (seq - previous, code, stored_time(ts, created), rest(line, name, message, details))
        previous = seq
    return encode(flat)


def decode(history: str | None, created: float) -> list[Entry]:
    """The states of a history, in number order."""
    if not history:
        return []
    out: list[Entry] = []
    for group in json.loads(history):
        seq = 0
        for at in range(0, len(group), 4):
            seq += group[at]
            stored, more = group[at + 2], group[at + 3]
            ts = created + stored / TICKS if type(stored) is int else stored
            if type(more) is int:
                out.append((seq, group[at + 1], None, None, ts, None, more or None))
            else:
                out.append((seq, group[at + 1], more[1], more[2], ts, more[3], more[0] or None))
    return out


def append_keys(history: str | None) -> list[int]:
    """The number of each append's last state: the keys of the run's rows in `appends`."""
    return [sum(group[0::4]) for group in json.loads(history)] if history else []


def count(history: str | None) -> tuple[int, int]:
    """(states, engine lines marked on them) in a history."""
    states = lines = 0
    for group in json.loads(history) if history else ():
        states += len(group) // 4
        lines += sum(1 for more in group[3::4] if (more if type(more) is int else more[0]))
    return states, lines


Query = Callable[[str, Any], list[tuple[Any, ...]]]
_CHUNK = 500


def after(query: Query, since: int, columns: str = "", chunk: int = _CHUNK) -> Iterator[tuple[Entry, tuple[Any, ...]]]:
    """The packed states numbered after `since`, in number order, lazily: (state, (ref, created,
    *columns of its task run)). `columns` names more of the task run's columns (`t.` prefixed); `chunk`:
    appends read at a time (a reader that wants a few states asks for few).

    Reads `appends` a chunk at a time, always to the end of a batch (see the module's docstring), and
    the histories of their runs; a run deleted since (its appends are left for the prune) is skipped."""
    position = since
    while True:
        rows = query("SELECT seq, run_ref, back FROM appends WHERE seq > ? ORDER BY seq LIMIT ?",
                     (position, max(1, min(chunk, _CHUNK))))
        if not rows:
            return
        batch = rows[-1][0] - rows[-1][2]  # where the last append's batch starts: read to its end
        while True:
            more = query("SELECT seq, run_ref, back FROM appends WHERE seq > ? ORDER BY seq LIMIT ?",
                         (rows[-1][0], _CHUNK))
            tail = [row for row in more if row[0] - row[2] == batch]
            rows += tail
            if len(tail) < len(more) or len(more) < _CHUNK:
                break
        end = rows[-1][0]
        refs = sorted({row[1] for row in rows})
        found: list[tuple[Entry, tuple[Any, ...]]] = []
        for start in range(0, len(refs), _CHUNK):
            some = refs[start:start + _CHUNK]
            for run in query(f"SELECT t.ref, t.created, t.history{', ' + columns if columns else ''} FROM task_runs t "
                             f"WHERE t.ref IN ({', '.join('?' * len(some))})", some):
                info = (run[0], run[1], *run[3:])
                found += [(state, info) for state in decode(run[2], run[1]) if position < state[0] <= end]
        found.sort(key=_by_seq)
        yield from found
        position = end


def _by_seq(item: tuple[Entry, tuple[Any, ...]]) -> int:
    return item[0][0]
