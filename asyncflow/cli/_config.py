"""`asyncflow config ...`, `asyncflow cache ...`, `asyncflow task-worker serve ...`, `asyncflow version`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import _output as out
from ._common import CLIError, nonempty


def add_commands(commands: Any) -> None:
    config = commands.add_parser(
        "config", help="view and change settings (the profile file under ASYNCFLOW_HOME)",
        description="Settings come from environment variables, else the profile file ASYNCFLOW_HOME/profile.env "
                    "(written by `config set`), else their defaults.")
    sub = config.add_subparsers(dest="action", metavar="{set,unset,view}", required=True)
    set_ = sub.add_parser("set", help="write settings into the profile: config set NAME=VALUE ...")
    set_.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
    set_.set_defaults(run=config_set)
    unset = sub.add_parser("unset", help="remove settings from the profile: config unset NAME ...")
    unset.add_argument("names", nargs="+", metavar="NAME")
    unset.set_defaults(run=config_unset)
    view = sub.add_parser("view", help="the settings in effect (from the environment and the profile)")
    view.add_argument("--show-defaults", action="store_true", help="also every setting left at its default, with help")
    view.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    view.set_defaults(run=config_view)

    cache = commands.add_parser("cache", help="list and clear cached results (under ASYNCFLOW_LOCAL_STORAGE_PATH)")
    sub = cache.add_subparsers(dest="action", metavar="{ls,clear}", required=True)
    ls = sub.add_parser("ls", help="list cache records")
    ls.add_argument("--task", type=nonempty, help="only the records of this task (its name)")
    ls.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    ls.set_defaults(run=cache_ls)
    clear = sub.add_parser("clear", help="delete cache records: --all, --task NAME, or --expired")
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every record")
    which.add_argument("--task", type=nonempty, help="the records of this task (its name)")
    which.add_argument("--expired", action="store_true", help="only the records whose expiration has passed")
    clear.set_defaults(run=cache_clear)

    worker = commands.add_parser("task-worker", help="serve background tasks (task.delay)")
    sub = worker.add_subparsers(dest="action", metavar="{serve}", required=True)
    serve = sub.add_parser("serve", help="serve tasks until SIGTERM or Ctrl-C: task-worker serve module:task ...",
                           add_help=False)
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(run=task_worker_serve)

    version = commands.add_parser("version", help="asyncflow's version and where it keeps things")
    version.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    version.set_defaults(run=show_version)


# -- config ------------------------------------------------------------------------------------------
def config_set(args: argparse.Namespace) -> int:
    from .. import _settings

    values: dict[str, str] = {}
    for assignment in args.assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise CLIError(f"{assignment!r} is not NAME=VALUE (for example ASYNCFLOW_LOGGING_LEVEL=DEBUG).")
        values[_settings.lookup(name).name] = value
    path = _settings.update_profile(values)
    for name, value in values.items():
        print(f"Set {name}={value.strip()!r} in {path}.")
        if os.environ.get(name):
            print(f"Note: the environment variable {name}={os.environ[name]!r} overrides it here.")
    return 0


def config_unset(args: argparse.Namespace) -> int:
    from .. import _settings

    present = _settings.profile_values()
    for name in args.names:
        upper = name.strip().upper()
        if upper in _settings.SETTINGS and upper not in present and upper not in _raw_profile_names():
            raise CLIError(f"{upper} is not set in the profile {_settings.profile_path()}; nothing to unset.")
    path = _settings.update_profile(unset=args.names)
    for name in args.names:
        print(f"Unset {name.strip().upper()} in {path}.")
    return 0


def _raw_profile_names() -> set[str]:
    from .. import _settings

    path = _settings.profile_path()
    names: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return names
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            names.add(stripped.partition("=")[0].strip().upper())
    return names


def config_view(args: argparse.Namespace) -> int:
    from .. import _settings

    entries = [_settings.describe(name) for name in _settings.SETTINGS]
    shown = [e for e in entries if args.show_defaults or e["source"] != "default" or e["error"]]
    broken = _settings.profile_error()
    invalid = broken is not None or any(e["error"] for e in entries)
    path = _settings.profile_path()
    if args.json:
        out.dump_json({"profile": str(path), "profile_error": broken, "settings": shown})
        return 1 if invalid else 0
    print(f"profile: {path}" + ("" if path.exists() else " (not written yet)"))
    if broken:
        print(f"INVALID profile (ignored below): {broken}")
    if not shown:
        print("Every setting is at its default (`asyncflow config view --show-defaults` lists them).")
    for entry in shown:
        if entry["error"]:
            print(f"{entry['name']}={entry['raw']!r} (from {entry['source']}) INVALID: {entry['error']}")
        else:
            print(f"{entry['name']}={entry['value']!r} (from {entry['source']})")
        if args.show_defaults:
            print(f"    {entry['help']}")
            print(f"    accepts: {entry['accepts']}; default: {entry['default']!r}")
    return 1 if invalid else 0


# -- cache -------------------------------------------------------------------------------------------
def cache_ls(args: argparse.Namespace) -> int:
    from .. import _results

    root = _results.storage_root(None)  # ASYNCFLOW_RESULT_STORAGE: a directory, or a PostgreSQL database
    records = [r for r in _results.list_records(root) if args.task is None or r["task"] == args.task]
    if args.json:
        out.dump_json([{**r, "expiration": out.iso(r["expiration"])} for r in records])
        return 0
    import time

    now = time.time()
    out.table(["KEY", "TASK", "EXPIRES", "SIZE"],
              [(r["key"], r["task"] or "?",
                "never" if r["expiration"] is None else out.local_time(r["expiration"])
                + (" (expired)" if r["expiration"] <= now else ""), _size(r["size"])) for r in records],
              empty=f"No cache records{' of task ' + repr(args.task) if args.task else ''} under {root}.")
    return 0


def cache_clear(args: argparse.Namespace) -> int:
    from .. import _results

    root = _results.storage_root(None)  # ASYNCFLOW_RESULT_STORAGE: a directory, or a PostgreSQL database
    removed = _results.clear_records(root, task=args.task, expired_only=args.expired)
    what = "expired " if args.expired else ""
    whose = f" of task {args.task!r}" if args.task else ""
    print(f"Removed {removed} {what}cache record(s){whose} from {root}.")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# -- task-worker ---------------------------------------------------------------------------------------
def task_worker_serve(args: argparse.Namespace) -> int:
    from .. import task_worker

    task_worker.main(args.rest)
    return 0


# -- version -------------------------------------------------------------------------------------------
def show_version(args: argparse.Namespace) -> int:
    import platform

    import asyncflow

    from .. import _settings
    from .._store.sqlite import DB_FILE_NAME

    home = _settings.HOME.value()
    kind = _settings.STORE.value()
    db = home / DB_FILE_NAME
    if kind not in ("sqlite", "memory"):  # a PostgreSQL URL: shown without its password
        db, kind = _settings.hide_password(kind), "postgresql"
    info = {
        "version": asyncflow.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "home": str(home),
        "store": kind,
        "database": str(db) if kind != "memory" else None,
        "database_exists": db.exists() if kind == "sqlite" else None,  # type: ignore[union-attr]
        "profile": str(_settings.profile_path()),
        "storage": str(_settings.LOCAL_STORAGE_PATH.value()),
    }
    if args.json:
        out.dump_json(info)
        return 0
    store = (f"sqlite, {db}" + ("" if info["database_exists"] else " (not created yet)")) if kind == "sqlite" else \
        f"postgresql, {db}" if kind == "postgresql" else "memory (nothing kept after a process ends)"
    out.fields([("Version", info["version"]), ("Python", info["python"]), ("Platform", info["platform"]),
                ("Home", home), ("Store", store), ("Profile", info["profile"] + (
                    "" if _settings.profile_path().exists() else " (none)")), ("Results", info["storage"])])
    return 0


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
