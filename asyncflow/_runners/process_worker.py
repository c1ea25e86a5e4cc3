"""A `ProcessPoolTaskRunner` worker: `python -m asyncflow._runners.process_worker FD`.

It takes its settings (the flow process's `sys.path` and working directory) from the socket `FD`,
says it is ready, then runs one work item at a time until the socket closes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any


def main(fd: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the flow's process decides what stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from multiprocessing.connection import Connection

    import cloudpickle

    conn: Any = Connection(fd)
    setup = cloudpickle.loads(conn.recv_bytes())
    sys.path[:] = setup["sys_path"]
    with contextlib.suppress(OSError):
        os.chdir(setup["cwd"])
    from .work import execute_payload

    conn.send_bytes(b"ready")
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):  # the runner closed the socket, or its process is gone
            return
        conn.send_bytes(execute_payload(payload))


if __name__ == "__main__":
    main(int(sys.argv[1]))
