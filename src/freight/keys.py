"""The object-key scheme: where a prediction's input and output live in the store.

Flat keys (``inputs/<id>``, ``outputs/<id>``; an uploaded input
``inputs/<id>.<token>``), no directory per prediction:
creating a directory costs as much as creating the file on the local backend.
Every layer that names an object imports these two functions, so the scheme
lives in one place.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable


def input_key(prediction_id: str) -> str:
    return f"inputs/{prediction_id}"


def upload_key(prediction_id: str) -> str:
    """A fresh key for one upload to a prediction's presigned URL: two uploads racing
    on the same URL write different objects, so the loser's bytes can never
    overwrite the winner's (and the loser deletes only its own)."""
    return f"{input_key(prediction_id)}.{secrets.token_hex(4)}"


def output_key(prediction_id: str) -> str:
    return f"outputs/{prediction_id}"


URI_PREFIX = "freight://"


def key_of_uri(uri: str, store_key: Callable[[str], str | None]) -> str | None:
    """The object key a URI names: ``freight://<key>``, or a URI of the configured
    store (``store_key`` is its ``key_for_uri``); None when it is elsewhere or would
    climb out of the store (``..``)."""
    key = uri[len(URI_PREFIX) :] if uri.startswith(URI_PREFIX) else store_key(uri)
    if key is None or key.startswith("/") or ".." in key.split("/"):
        return None
    return key


def is_own_input(prediction_id: str, key: str | None) -> bool:
    """True when ``key`` is the input freight stored for the prediction (not an
    ``input_uri`` object of the caller's, which retention must never delete)."""
    own = input_key(prediction_id)
    return key is not None and (key == own or key.startswith(own + "."))


def is_own_output(prediction_id: str, key: str | None) -> bool:
    return key is not None and key == output_key(prediction_id)


__all__ = [
    "input_key",
    "is_own_input",
    "is_own_output",
    "key_of_uri",
    "output_key",
    "upload_key",
]
