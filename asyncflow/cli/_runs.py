"""`asyncflow flow-run ...` and `asyncflow task-run ...`: read the store under ASYNCFLOW_HOME."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from . import _output as out
from ._common import CLIError, count, nonempty, open_store


def add_commands(commands: Any) -> None:
    from ._maintenance import add_delete_command

    flow_run = commands.add_parser("flow-run", help="list, inspect, follow and delete flow runs",
                                   description="List, inspect, follow and delete flow runs recorded under "
                                               "ASYNCFLOW_HOME.")
    sub = flow_run.add_subparsers(dest="action", metavar="{ls,inspect,logs,delete}", required=True)
    ls = sub.add_parser("ls", help="list flow runs, newest first")
    ls.add_argument("--flow-name", type=nonempty, help="only runs of this flow")
    ls.add_argument("--state", action="append", metavar="STATE", type=nonempty,
                    help="only runs in this state: a name (Completed, Cached, TimedOut...) or a type (COMPLETED, "
                         "FAILED...), any case; repeat for several")
    ls.add_argument("--limit", type=count, default=15, help="at most this many runs (default 15; 0 for all)")
    _json(ls)
    ls.set_defaults(run=flow_run_ls)
    inspect = _one_run(sub, "inspect", "a flow run: details, state history, task runs", "flow run", flow_run_inspect)
    inspect.add_argument("--limit", type=count, default=INSPECT_TASK_RUNS,
                         help=f"show at most this many of its task runs (default {INSPECT_TASK_RUNS}; 0 for all)")
    logs = _one_run(sub, "logs", "a flow run's log lines (its task runs' included)", "flow run", flow_run_logs)
    _follow(logs, "flow run")
    add_delete_command(sub)

    task_run = commands.add_parser("task-run", help="list, inspect and follow task runs",
                                   description="List, inspect and follow task runs recorded under ASYNCFLOW_HOME.")
    sub = task_run.add_subparsers(dest="action", metavar="{ls,inspect,logs}", required=True)
    ls = sub.add_parser("ls", help="list task runs (of one flow run in the order they ran, else newest first)")
    ls.add_argument("--flow-run-id", type=nonempty, help="only the task runs of this flow run (id or unique prefix)")
    ls.add_argument("--limit", type=count, default=None,
                    help="at most this many runs (default: all of a flow run's, else 15; 0 for all)")
    _json(ls)
    ls.set_defaults(run=task_run_ls)
    _one_run(sub, "inspect", "a task run: details and state history", "task run", task_run_inspect)
    logs = _one_run(sub, "logs", "a task run's log lines", "task run", task_run_logs)
    _follow(logs, "task run")


INSPECT_TASK_RUNS = 100  # task runs `flow-run inspect` shows unless --limit says otherwise


def _one_run(sub: Any, name: str, help: str, kind: str, run: Any) -> argparse.ArgumentParser:
    """A command about one run: `NAME ID [--json]`."""
    parser = sub.add_parser(name, help=help)
    parser.add_argument("id", type=nonempty, help=f"{kind} id (or a unique prefix of it)")
    _json(parser)
    parser.set_defaults(run=run)
    return parser


def _follow(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--follow", "-f", action="store_true",
                        help=f"keep printing new lines until the {kind} ends (Ctrl-C stops); with --json, one "
                             f"JSON object per line")


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def resolve_id(store: Any, text: str, table: str) -> uuid.UUID:
    """A full id, or its first or last characters when they name exactly one run."""
    kind = "flow run" if table == "flow_runs" else "task run"
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        pass
    matches = store.find_run_ids(text, table)
    if len(matches) == 1:
        return uuid.UUID(matches[0])
    if not matches:
        raise CLIError(f"No {kind} with an id starting or ending with {text!r} in {store.path}. "
                       f"`asyncflow {kind.replace(' ', '-')} ls` lists them.")
    raise CLIError(f"{text!r} is the start of several {kind} ids ({', '.join(matches[:5])}): give more "
                   f"characters, or the last few (ids begin with the time they were made).")


def _state_cell(state: Any) -> str:
    return state.name if state.name.upper() == state.type.value else f"{state.name} ({state.type.value})"


# -- flow runs ---------------------------------------------------------------------------------------
def flow_run_ls(args: argparse.Namespace) -> int:
    store = open_store()
    runs = store.read_flow_runs(flow_name=args.flow_name, state=args.state, limit=args.limit or None)
    return _list(args, runs, out.flow_run_json, "FLOW", lambda run: run.flow_name,
                 "No flow runs" + (" match these filters." if args.flow_name or args.state else " yet."))


def _list(args: argparse.Namespace, runs: list[Any], to_json: Any, what: str, name_of: Any, empty: str) -> int:
    if args.json:
        out.dump_json([to_json(run) for run in runs])
        return 0
    out.table(["ID", what, "NAME", "STATE", "STARTED", "DURATION"],
              [(run.id, name_of(run), run.name, _state_cell(run.state), out.local_time(run.start_time),
                out.duration(run.start_time, run.end_time)) for run in runs], empty=empty)
    return 0


def flow_run_inspect(args: argparse.Namespace) -> int:
    store = open_store()
    run = store.read_flow_run(resolve_id(store, args.id, "flow_runs"))
    states = store.read_states(run.id)
    task_runs = store.read_task_runs(flow_run_id=run.id, limit=args.limit or None)
    counts = store.task_run_state_counts(run.id)
    total = sum(n for _, n in counts)
    if args.json:
        out.dump_json({**out.flow_run_json(run), "states": [out.state_json(s) for s in states],
                       "task_run_count": total, "task_runs": [out.task_run_json(t) for t in task_runs]})
        return 0
    print(f"Flow run '{run.name}' ({run.id})")
    out.fields([
        ("flow", run.flow_name + (f" (version {run.flow_version})" if run.flow_version else "")),
        ("state", _state_cell(run.state) + (f": {run.state.message}" if run.state.message else "")),
        *_common_fields(run),
        *([("parent flow run", run.parent_flow_run_id)] if run.parent_flow_run_id else []),
        *([("parent task run", run.parent_task_run_id)] if run.parent_task_run_id else []),
        ("task runs", f"{total}" + (" (" + ", ".join(f"{n} {name}" for name, n in counts) + ")" if counts else "")),
    ])
    print()
    _history(states)
    if task_runs:
        print()
        out.table(["TASK RUN", "ID", "STATE", "DURATION"],
                  [(t.name, t.id, _state_cell(t.state), out.duration(t.start_time, t.end_time)) for t in task_runs],
                  empty="")
        if len(task_runs) < total:
            print(f"(the first {len(task_runs)} of {total} task runs; --limit 0 shows all, "
                  f"`asyncflow task-run ls --flow-run-id {run.id}` lists them)")
    return 0


def flow_run_logs(args: argparse.Namespace) -> int:
    from . import _logs

    store = open_store()
    run = store.read_flow_run(resolve_id(store, args.id, "flow_runs"))
    return _logs.show(store, run, is_flow=True, as_json=args.json, follow=args.follow)


# -- task runs ---------------------------------------------------------------------------------------
def task_run_ls(args: argparse.Namespace) -> int:
    store = open_store()
    if args.flow_run_id:
        flow_run_id = resolve_id(store, args.flow_run_id, "flow_runs")
        store.read_flow_run(flow_run_id)  # an unknown flow run is an error, not an empty list
        runs = store.read_task_runs(flow_run_id=flow_run_id, limit=args.limit or None)
    else:
        runs = store.read_task_runs(limit=15 if args.limit is None else (args.limit or None), newest_first=True)
    return _list(args, runs, out.task_run_json, "TASK", lambda run: run.task_name,
                 "No task runs" + (" in this flow run." if args.flow_run_id else " yet."))


def task_run_inspect(args: argparse.Namespace) -> int:
    store = open_store()
    run = store.read_task_run(resolve_id(store, args.id, "task_runs"))
    states = store.read_states(run.id)
    if args.json:
        out.dump_json({**out.task_run_json(run), "states": [out.state_json(s) for s in states]})
        return 0
    print(f"Task run '{run.name}' ({run.id})")
    out.fields([
        ("task", run.task_name + (f" (version {run.task_version})" if run.task_version else "")),
        ("task key", run.task_key),
        ("state", _state_cell(run.state) + (f": {run.state.message}" if run.state.message else "")),
        ("flow run", run.flow_run_id or "- (called outside a flow)"),
        *([("parent task run", run.parent_task_run_id)] if run.parent_task_run_id else []),
        *_common_fields(run),
    ])
    print()
    _history(states)
    return 0


def task_run_logs(args: argparse.Namespace) -> int:
    from . import _logs

    store = open_store()
    run = store.read_task_run(resolve_id(store, args.id, "task_runs"))
    return _logs.show(store, run, is_flow=False, as_json=args.json, follow=args.follow)


def _common_fields(run: Any) -> list[tuple[str, Any]]:
    return [("parameters", _plain(run.parameters)), ("tags", ", ".join(run.tags) or "-"),
            ("started", out.local_time(run.start_time, millis=True)),
            ("ended", out.local_time(run.end_time, millis=True)),
            ("duration", out.duration(run.start_time, run.end_time)), ("run count", run.run_count)]


def _history(states: list[Any]) -> None:
    print("State history:")
    out.table(["  TIME", "STATE", "TYPE", "MESSAGE"],
              [("  " + out.local_time(s.ts, millis=True), s.name, s.type.value, out.short(s.message, 100))
               for s in states], empty="  (no states recorded)")


def _plain(parameters: dict[str, Any]) -> str:
    if not parameters:
        return "-"
    import json

    return ", ".join(f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in parameters.items())
