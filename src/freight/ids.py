"""Time-ordered ids (UUIDv7): index locality and cursor pagination for free."""

from __future__ import annotations

import uuid_utils


def new_id() -> str:
    """A fresh UUIDv7 as its canonical string; sorts by creation time."""
    return str(uuid_utils.uuid7())
