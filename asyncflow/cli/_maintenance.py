"""`asyncflow flow-run delete ID...` and `asyncflow store prune --older-than 30d`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import _output as out
from ._common import CLIError, duration, nonempty, open_store


def add_delete_command(sub: Any) -> None:
    delete = sub.add_parser("delete", help="delete flow runs with their subflow runs, task runs, states and logs",
                            description="Delete flow runs and everything recorded under them: their subflow runs "
                                        "(recursively), task runs, states and log lines. Asks first when run in a "
                                        "terminal, unless --yes.")
    delete.add_argument("ids", nargs="+", metavar="ID", type=nonempty, help="flow run id (or a unique prefix of it)")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    delete.set_defaults(run=flow_run_delete)


def add_commands(commands: Any) -> None:
    store = commands.add_parser("store", help="maintain the run store (prune old runs, upgrade its schema)",
                                description="Maintain the run store (ASYNCFLOW_STORE: SQLite under ASYNCFLOW_HOME, "
                                            "or a PostgreSQL database).")
    sub = store.add_subparsers(dest="action", metavar="{prune,upgrade}", required=True)
    upgrade = sub.add_parser(
        "upgrade", help="create the store's schema, or bring it to this asyncflow's version",
        description="Create the store's tables, or migrate them to the schema of this asyncflow (processes do it "
                    "themselves when they open the store; run it once before rolling out a new asyncflow to many "
                    "machines). A schema newer than this asyncflow is an error: upgrade asyncflow instead.")
    upgrade.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    upgrade.set_defaults(run=store_upgrade)
    prune = sub.add_parser(
        "prune", help="delete runs that finished before a time, with their states and logs",
        description="Delete the runs in a final state (Completed, Failed, Cancelled, Crashed, Cached, TimedOut...) "
                    "that ended longer ago than --older-than, with their task runs, states and log lines, and "
                    "what other parts of asyncflow keep for them. Runs not in a final state are kept.")
    prune.add_argument("--older-than", type=duration, metavar="DURATION",
                       help="30d, 12h, 90m, 45s or a number of seconds (default: ASYNCFLOW_STORE_RETENTION)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    prune.set_defaults(run=store_prune)


# -- flow-run delete -------------------------------------------------------------------------------
def flow_run_delete(args: argparse.Namespace) -> int:
    from ._runs import resolve_id

    store = open_store()
    runs: list[Any] = []
    for text in args.ids:
        run = store.read_flow_run(resolve_id(store, text, "flow_runs"))
        if all(run.id != other.id for other in runs):
            runs.append(run)
    if not args.yes and _interactive():
        for run in runs:
            _stderr(f"About to delete {_describe(run)}, {run.state.name}"
                    + ("" if run.state.is_final() else " (still open: records its process writes later are kept "
                                                        "as orphans until a prune)")
                    + ", with its subflow runs, task runs, states and log lines.")
        if not _confirm(f"Delete {len(runs)} flow run(s) from {store.path}? [y/N] "):
            _stderr("Nothing was deleted.")
            return 1
    counts = store.delete_flow_runs([run.id for run in runs])
    if args.json:
        out.dump_json({"deleted": [{"id": str(run.id), "name": run.name, "flow_name": run.flow_name,
                                    "state": out.state_json(run.state)} for run in runs], "counts": counts})
        return 0
    for run in runs:
        print(f"Deleted {_describe(run)}.")
    subflows = counts["flow_runs"] - len(runs)
    print(f"Deleted {counts['flow_runs'] - subflows} flow run(s)"
          + (f" and {subflows} subflow run(s)" if subflows > 0 else "")
          + f", {counts['task_runs']} task run(s), {counts['states']} state(s) and {counts['logs']} log line(s) "
            f"from {store.path}.")
    return 0


def _describe(run: Any) -> str:
    return f"flow run '{run.name}' ({run.id}) of flow '{run.flow_name}'"


def _interactive() -> bool:
    try:
        return bool(sys.stdin.isatty())
    except (AttributeError, ValueError):  # no stdin, or closed
        return False


def _confirm(question: str) -> bool:
    _stderr(question, end="")
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError, KeyboardInterrupt):
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _stderr(message: str, end: str = "\n") -> None:
    sys.stderr.write(message + end)
    sys.stderr.flush()


# -- store prune -------------------------------------------------------------------------------------
def store_prune(args: argparse.Namespace) -> int:
    from .. import _settings
    from .._store.retention import TABLES, prune_everything

    seconds = args.older_than
    if seconds is None:
        seconds = _settings.STORE_RETENTION.value()
        if seconds is None:
            raise CLIError("ASYNCFLOW_STORE_RETENTION is off: say how old a run must be, such as "
                           "`asyncflow store prune --older-than 30d`.")
    store = open_store()
    before = time.time() - seconds
    counts = prune_everything(seconds, store=store, dry_run=args.dry_run, command=True)
    if args.json:
        out.dump_json({"dry_run": args.dry_run, "older_than_seconds": seconds, "before": out.iso(before),
                       "store": str(store.path), "counts": counts})
        return 0
    verb = "Would delete (dry run: nothing was deleted)" if args.dry_run else "Deleted"
    print(f"{verb} what finished before {out.local_time(before)} from {store.path}:")
    names = [*TABLES, *sorted(set(counts) - set(TABLES))]
    out.table(["  TABLE", "ROWS"], [(f"  {name}", counts.get(name, 0)) for name in names], empty="")
    return 0


# -- store upgrade -----------------------------------------------------------------------------------
def store_upgrade(args: argparse.Namespace) -> int:
    from .. import _settings
    from .._store import StoreError, default_store

    kind = _settings.STORE.value()
    if kind == "memory":
        raise CLIError("ASYNCFLOW_STORE=memory has no schema to upgrade.")
    before = 0  # the version found, read before opening the store (opening it migrates)
    if kind == "sqlite":
        import sqlite3

        from .._store.sqlite import DB_FILE_NAME, SCHEMA_VERSION, _schema_version

        path = _settings.HOME.value() / DB_FILE_NAME
        if path.exists():
            try:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
                try:
                    before = _schema_version(conn)
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise CLIError(f"Cannot read the store {path}: {exc}.") from None
        after = SCHEMA_VERSION
    else:
        from .._store import postgres

        try:
            conn = postgres.connect(kind)
            try:
                before = postgres._schema_version(conn)
            finally:
                conn.close()
        except Exception as exc:
            raise CLIError(f"Cannot open the PostgreSQL store {postgres.redact(kind)}: {postgres.describe(exc)}. "
                           f"{postgres.advice(exc)}") from None
        after = postgres.SCHEMA_VERSION
    try:
        store: Any = default_store(create=True)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    store.close()
    if args.json:
        out.dump_json({"store": str(store.path), "from_version": before, "to_version": after})
    elif before == after:
        print(f"The store {store.path} is already at version {after}.")
    else:
        print(f"Upgraded the store {store.path} from version {before} to {after}.")
    return 0
