"""Run ids: random version-4 UUIDs without a system call.

`uuid.uuid4()` reads `os.urandom`, a system call that releases the GIL; with an event loop in
another thread, every id then costs a GIL hand-over (~30 µs measured). Ids need to be unique, not
unpredictable, so a private generator seeded from `os.urandom` serves (and is reseeded in a forked
child, so parent and child never share a sequence; a user's `random.seed()` does not touch it).
"""

from __future__ import annotations

import random
import uuid

from . import _fork

_rng = random.Random()
_fork.register("ids", reset_in_child=_rng.seed)

_getrandbits = _rng.getrandbits
_UUID = uuid.UUID


def new_id() -> uuid.UUID:
    return _UUID(int=_getrandbits(128), version=4)
