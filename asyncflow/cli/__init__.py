"""The `asyncflow` command (also `python -m asyncflow`).

    asyncflow flow-run ls [--flow-name NAME] [--state STATE] [--limit N] [--json]
    asyncflow flow-run inspect ID [--limit N] [--json]
    asyncflow flow-run logs ID [--follow] [--json]
    asyncflow flow-run delete ID... [--yes] [--json]
    asyncflow task-run ls [--flow-run-id ID] [--limit N] [--json]
    asyncflow task-run inspect ID [--json]          asyncflow task-run logs ID [--follow] [--json]
    asyncflow store prune [--older-than DURATION] [--dry-run] [--json]
    asyncflow config set NAME=VALUE ... | unset NAME ... | view [--show-defaults] [--json]
    asyncflow cache ls [--task NAME] [--json] | clear (--all | --task NAME | --expired)
    asyncflow task-worker serve module:task ... [--limit N]
    asyncflow version [--json]
    asyncflow server start [--host 127.0.0.1] [--port 4200] [--open]
    asyncflow gcl create NAME --limit N [--slot-decay-per-second X] | ls | inspect NAME | update NAME ... | delete NAME
    asyncflow concurrency-limit create TAG N | ls | inspect TAG | reset TAG | delete TAG

Exit status: 0 on success, 1 for a problem with the input or the store (an unknown id, no store yet,
an invalid setting), 2 for a command line that does not parse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._common import CLIError, close_stores


def build_parser() -> argparse.ArgumentParser:
    from . import _config, _limits, _maintenance, _runs, _server

    parser = argparse.ArgumentParser(
        prog="asyncflow", description="Inspect what ran (flow runs, task runs, states, logs), delete and prune "
                                      "runs, manage settings, cached results and concurrency limits, serve "
                                      "background tasks, serve the web UI.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _runs.add_commands(commands)
    _maintenance.add_commands(commands)
    _config.add_commands(commands)
    _server.add_commands(commands)
    _limits.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CLIError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `asyncflow flow-run ls | head`
        return 0
    except Exception as exc:
        from .._settings import SettingError
        from .._store.base import ObjectNotFound, StoreError

        if isinstance(exc, (ObjectNotFound, StoreError, SettingError)):
            return _fail(str(exc))
        if isinstance(exc, (ValueError, TypeError)) and getattr(args, "command", None) != "task-worker":
            return _fail(str(exc))
        raise
    finally:
        close_stores()


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


__all__ = ["build_parser", "main"]
