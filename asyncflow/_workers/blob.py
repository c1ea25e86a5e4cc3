"""Checksums on the broker's blobs (a run's payload: its pickled arguments; its result: the pickled value
or exception), so that damage is reported as damage instead of surfacing as an unpickling error, or
worse, as a different value.

A sealed blob is `MAGIC | digest | data`: the digest is a 16-byte BLAKE2b of the data, personalised with
the blob's kind and keyed by nothing secret, over the run id too, so a blob copied from another run (or
a payload where a result belongs) does not verify either. It detects accidents (bit rot, truncation,
a bad copy); it is not a signature: whoever can write the broker can write a valid blob (see the trust
model in docs/background-tasks.md).

Blobs without the header (written before checksums existed) are refused: asyncflow 0.1.0 was never
released without them, and a blob that cannot be verified must not be unpickled as if it were good.
"""

from __future__ import annotations

import hashlib
import hmac

MAGIC = b"AFB1"  # asyncflow blob, format 1
_DIGEST_SIZE = 16
_HEADER = len(MAGIC) + _DIGEST_SIZE


class DamagedBlob(ValueError):
    """A blob does not verify; the message says how (for "the ... is damaged: <message>")."""


def _digest(data: bytes, kind: str, run_id: str) -> bytes:
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=kind.encode()[:16])
    h.update(run_id.encode())
    h.update(b"\x00")
    h.update(data)
    return h.digest()


def seal(data: bytes, kind: str, run_id: str) -> bytes:
    """`data` with its checksum in front; `kind` is "payload" or "result"."""
    return MAGIC + _digest(data, kind, run_id) + data


def unseal(blob: object, kind: str, run_id: str) -> bytes:
    """The data of a sealed blob, or DamagedBlob saying why it cannot be trusted."""
    if isinstance(blob, memoryview):
        blob = blob.tobytes()
    if not isinstance(blob, bytes):
        raise DamagedBlob(f"it is a {type(blob).__name__}, not bytes")
    if not blob:
        raise DamagedBlob("it is empty")
    if not blob.startswith(MAGIC):
        if blob.startswith(b"\x80"):  # a bare pickle
            raise DamagedBlob("it has no checksum (written by an asyncflow without broker checksums, or by "
                              "another program)")
        raise DamagedBlob(f"its header is not asyncflow's ({blob[:len(MAGIC)]!r} instead of {MAGIC!r})")
    if len(blob) < _HEADER:
        raise DamagedBlob(f"it is truncated ({len(blob)} bytes)")
    data = blob[_HEADER:]
    if not hmac.compare_digest(blob[len(MAGIC):_HEADER], _digest(data, kind, run_id)):
        raise DamagedBlob(f"its checksum does not match ({len(blob)} bytes): the bytes changed after they were "
                          f"written, or they belong to another run")
    return data
