"""`asyncflow gcl create|ls|inspect|update|delete` (global concurrency limits) and `asyncflow
concurrency-limit create|ls|inspect|reset|delete` (tag-based task concurrency limits: the limit named
`tag:<TAG>`), kept in the store (SQLite under ASYNCFLOW_HOME)."""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from typing import Any

from . import _output as out
from ._common import CLIError, _opened, nonempty


def _slots(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of slots >= 1, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of slots per second >= 0, got {text!r}")
    return value


def add_commands(commands: Any) -> None:
    gcl = commands.add_parser(
        "gcl", help="manage global concurrency limits",
        description="Global concurrency limits, used with `concurrency(...)` and `rate_limit(...)` from "
                    "asyncflow.concurrency.sync / .asyncio, shared by every process on the store.")
    sub = gcl.add_subparsers(dest="action", metavar="{create,ls,inspect,update,delete}", required=True)
    create = sub.add_parser("create", help="create a limit")
    create.add_argument("name", type=nonempty)
    create.add_argument("--limit", "-l", type=_slots, required=True, help="slots that may be held at once (>= 1)")
    create.add_argument("--slot-decay-per-second", type=_rate, default=0.0,
                        help="slots freed per second (needed by rate_limit; default 0: held until released)")
    create.add_argument("--disable", action="store_true", help="create it inactive (it limits nothing)")
    create.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    create.set_defaults(run=gcl_create)
    ls = sub.add_parser("ls", help="list the limits")
    ls.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    ls.set_defaults(run=lambda args: limits_ls(args, tags=False))
    inspect = sub.add_parser("inspect", help="show a limit and who holds its slots")
    inspect.add_argument("name", type=nonempty)
    inspect.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    inspect.set_defaults(run=lambda args: limit_inspect(args, args.name))
    update = sub.add_parser("update", help="change a limit")
    update.add_argument("name", type=nonempty)
    update.add_argument("--limit", "-l", type=_slots)
    update.add_argument("--slot-decay-per-second", type=_rate)
    active = update.add_mutually_exclusive_group()
    active.add_argument("--enable", dest="active", action="store_const", const=True, help="let it limit again")
    active.add_argument("--disable", dest="active", action="store_const", const=False,
                        help="stop it limiting (everything that uses it runs unlimited)")
    update.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    update.set_defaults(run=gcl_update)
    delete = sub.add_parser("delete", help="delete a limit (its holders go on unlimited)")
    delete.add_argument("name", type=nonempty)
    delete.set_defaults(run=lambda args: limit_delete(args.name, f"concurrency limit {args.name!r}"))

    tag = commands.add_parser(
        "concurrency-limit", help="manage tag-based task concurrency limits",
        description="Tag-based task concurrency limits: at most N task runs with the tag run at once, in every "
                    "process on the store; the others wait in the state AwaitingConcurrencySlot.")
    tsub = tag.add_subparsers(dest="action", metavar="{create,ls,inspect,reset,delete}", required=True)
    tcreate = tsub.add_parser("create", help="limit the task runs with a tag")
    tcreate.add_argument("tag", type=nonempty)
    tcreate.add_argument("limit", type=_slots, help="task runs with the tag that may run at once (>= 1)")
    tcreate.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    tcreate.set_defaults(run=tag_create)
    tls = tsub.add_parser("ls", help="list the tag limits")
    tls.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    tls.set_defaults(run=lambda args: limits_ls(args, tags=True))
    tinspect = tsub.add_parser("inspect", help="show a tag limit and the task runs holding its slots")
    tinspect.add_argument("tag", type=nonempty)
    tinspect.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    tinspect.set_defaults(run=lambda args: limit_inspect(args, _tag(args.tag)))
    treset = tsub.add_parser("reset", help="free every slot of a tag limit")
    treset.add_argument("tag", type=nonempty)
    treset.set_defaults(run=tag_reset)
    tdelete = tsub.add_parser("delete", help="remove a tag limit")
    tdelete.add_argument("tag", type=nonempty)
    tdelete.set_defaults(run=lambda args: limit_delete(_tag(args.tag), f"tag concurrency limit {args.tag!r}"))


def _tag(tag: str) -> str:
    from .._limits.sql import TAG_PREFIX

    return TAG_PREFIX + tag


def _db(create: bool = False) -> Any:
    """The limit tables of the store the settings name (created with the store if `create`)."""
    from .._limits.db import for_store
    from .._store import MemoryStore, default_store

    store = default_store(create=create)
    _opened.append(store)  # closed by main
    if isinstance(store, MemoryStore):
        raise CLIError("ASYNCFLOW_STORE=memory: concurrency limits would live in this command's memory only. Unset "
                       "it to keep them in ASYNCFLOW_HOME/asyncflow.db, shared by every process.")
    db = for_store(store)
    if db is None:
        raise CLIError(f"Concurrency limits are kept in the SQLite or PostgreSQL store; {store!r} has no limit "
                       f"tables. Unset ASYNCFLOW_STORE to use ASYNCFLOW_HOME/asyncflow.db.")
    return db


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    from .._exceptions import ConcurrencySlotAcquisitionError

    try:
        yield
    except KeyError as exc:
        raise CLIError(str(exc.args[0])) from None
    except ConcurrencySlotAcquisitionError as exc:
        raise CLIError(str(exc)) from None


def _json(limit: Any) -> dict[str, Any]:
    data = {"name": limit.name, "limit": limit.limit, "active": limit.active, "active_slots": limit.active_slots,
            "slot_decay_per_second": limit.slot_decay_per_second, "created": out.iso(limit.created),
            "updated": out.iso(limit.updated)}
    if limit.tag is not None:
        data["tag"] = limit.tag
    return data


def _print_limit(limit: Any, verb: str) -> None:
    what = f"tag concurrency limit for tag {limit.tag!r}" if limit.tag is not None else \
        f"concurrency limit {limit.name!r}"
    print(f"{verb} {what}: {limit.limit} slot(s)"
          + (f", {limit.slot_decay_per_second:g} slot(s) freed per second" if limit.slot_decay_per_second else "")
          + ("" if limit.active else ", inactive") + ".")


def gcl_create(args: argparse.Namespace) -> int:
    from .._limits import manage

    with _errors():
        limit = manage.create_limit(args.name, args.limit, slot_decay_per_second=args.slot_decay_per_second,
                                    active=not args.disable, db=_db(create=True))
    out.dump_json(_json(limit)) if args.json else _print_limit(limit, "Created")
    return 0


def gcl_update(args: argparse.Namespace) -> int:
    from .._limits import manage

    if args.limit is None and args.slot_decay_per_second is None and args.active is None:
        raise CLIError("nothing to change: give --limit, --slot-decay-per-second, --enable or --disable.")
    with _errors():
        limit = manage.update_limit(args.name, limit=args.limit, slot_decay_per_second=args.slot_decay_per_second,
                                    active=args.active, db=_db())
    out.dump_json(_json(limit)) if args.json else _print_limit(limit, "Updated")
    return 0


def tag_create(args: argparse.Namespace) -> int:
    from .._limits import manage

    with _errors():
        limit = manage.create_limit(_tag(args.tag), args.limit, db=_db(create=True))
    out.dump_json(_json(limit)) if args.json else _print_limit(limit, "Created")
    return 0


def tag_reset(args: argparse.Namespace) -> int:
    from .._limits import manage

    with _errors():
        manage.reset_limit(_tag(args.tag), db=_db())
    print(f"Freed every slot of the tag concurrency limit for tag {args.tag!r}.")
    return 0


def limits_ls(args: argparse.Namespace, tags: bool) -> int:
    from .._limits import manage
    from .._store.base import StoreNotFoundError

    try:
        db = _db()
    except StoreNotFoundError:  # nothing has run with this home yet: no store, so no limits either
        db = None
    with _errors():
        limits = manage.read_limits(tags=tags, db=db) if db is not None else []
    if args.json:
        out.dump_json([_json(limit) for limit in limits])
        return 0
    rows = [(limit.tag if tags else limit.name, limit.limit, f"{limit.active_slots:g}",
             f"{limit.slot_decay_per_second:g}", "yes" if limit.active else "no") for limit in limits]
    out.table(["TAG" if tags else "NAME", "LIMIT", "ACTIVE SLOTS", "DECAY/S", "ACTIVE"], rows,
              empty="No tag concurrency limits." if tags else "No global concurrency limits.")
    return 0


def limit_inspect(args: argparse.Namespace, name: str) -> int:
    from .._limits import manage

    with _errors():
        limit, slots = manage.read_limit(name, db=_db())
    if args.json:
        data = _json(limit)
        data["holders"] = [{"lease": slot.lease, "slots": slot.slots, "holder": slot.holder, "host": slot.host,
                            "pid": slot.pid, "since": out.iso(slot.created), "expires": out.iso(slot.expires)}
                           for slot in slots]
        out.dump_json(data)
        return 0
    out.fields([("Name", limit.name), ("Tag", limit.tag or "-"), ("Limit", limit.limit),
                ("Active slots", f"{limit.active_slots:g}"),
                ("Slot decay per second", f"{limit.slot_decay_per_second:g}"),
                ("Active", "yes" if limit.active else "no"), ("Created", out.local_time(limit.created)),
                ("Updated", out.local_time(limit.updated))])
    print()
    out.table(["HOLDER", "SLOTS", "PROCESS", "SINCE", "LEASE EXPIRES"],
              [(slot.holder or "-", slot.slots, f"pid {slot.pid} on {slot.host}", out.local_time(slot.created),
                out.local_time(slot.expires)) for slot in slots], empty="No slots held.")
    return 0


def limit_delete(name: str, what: str) -> int:
    from .._limits import manage

    with _errors():
        manage.delete_limit(name, db=_db())
    print(f"Deleted {what}.")
    return 0
