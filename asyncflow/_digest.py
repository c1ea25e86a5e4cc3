"""md5 without `hashlib`: the interpreter's built-in `_md5` gives the same digests, and importing it
does not load and initialise OpenSSL (`_hashlib`), which task keys and flow versions, computed when a
task or flow is defined, would otherwise pay at every start. Interpreters built without `_md5` (FIPS
builds drop it) use hashlib's."""

from __future__ import annotations

import types
from typing import Any

try:
    from _md5 import md5 as _builtin_md5
except ImportError:  # pragma: no cover - an interpreter without the built-in module
    _builtin_md5 = None


def md5(data: bytes = b"") -> Any:
    """A new md5 hash object (`update`, `digest`, `hexdigest`), as `hashlib.md5(data)`."""
    if _builtin_md5 is not None:
        return _builtin_md5(data)
    import hashlib

    return hashlib.md5(data)


def code_digest(code: types.CodeType, digest: Any) -> None:
    """Feed a function's code into `digest`: bytecode, names and constants, nested code included (task
    keys and cache keys: bodies differ, keys differ)."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            code_digest(const, digest)
        else:
            digest.update(repr(const).encode())
