"""Task workers for background tasks (`task.delay(...)`).

    from asyncflow.task_worker import serve
    serve(send_email, limit=10)          # until SIGTERM / Ctrl-C

    python -m asyncflow.task_worker my_app.tasks:send_email --limit 10
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ._workers.future import DelayedFuture as DelayedFuture
from ._workers.worker import TaskWorker as TaskWorker
from ._workers.worker import serve as serve
from ._workers.worker import serve_async as serve_async

__all__ = ["DelayedFuture", "TaskWorker", "serve", "serve_async"]


def load_task(spec: str) -> Any:
    """`package.module:task_name` -> the task object."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: {spec!r} is not module:task (for example my_app.tasks:send_email)")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"error: module {module_name!r} has no task {attr!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="asyncflow task-worker serve", description="Serve background tasks.")
    parser.add_argument("tasks", nargs="+", help="tasks to serve, as module:task")
    parser.add_argument("--limit", type=int, default=10, help="runs at once (default 10)")
    args = parser.parse_args(argv)
    serve(*[load_task(spec) for spec in args.tasks], limit=args.limit)


if __name__ == "__main__":
    main()
