"""The writer's text of a run id (records.id_text, made from the id's int) is the UUID's own text."""

from __future__ import annotations

import uuid

from asyncflow._ids import new_id
from asyncflow._store.records import id_text


def test_a_run_ids_text_from_its_int_is_the_uuids_own_text_for_any_id():
    ids = [uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1), uuid.UUID(int=1), uuid.UUID(int=1 << 127),
           *(uuid.uuid4() for _ in range(200)), *(new_id() for _ in range(200))]
    assert [id_text(u.int) for u in ids] == [str(u) for u in ids]
