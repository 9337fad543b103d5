"""Following a prediction from the CLI: a spinner with its live status until it ends.

The status comes from the prediction's event stream (each event updates the
spinner the moment it happens, a pipeline's steps included); a server without
streams is long-polled instead, as before streams existed.
"""

from __future__ import annotations

import time
from contextlib import closing

from rich.console import Console
from rich.status import Status

from freight.cli import _render
from freight.client import Client, FreightClientError, Prediction, PredictionHandle

# how long each status request may be held by the server while the spinner runs
STATUS_POLL_S = 1.0


def follow(
    client: Client, handle: PredictionHandle, timeout: float | None, console: Console
) -> Prediction:
    """Wait for the prediction with a spinner that shows its live status: from its event
    stream, or from status long-polls where the server has no stream."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with console.status(f"{handle.id}: {handle.prediction.status}", spinner="dots") as spinner:
        prediction = handle.prediction if handle.prediction.terminal else None
        if prediction is None:
            prediction = _stream(client, handle, timeout, spinner)
        if prediction is None:
            prediction = _poll(client, handle, deadline, spinner)
    handle.prediction = prediction
    return prediction


def _stream(
    client: Client, handle: PredictionHandle, timeout: float | None, spinner: Status
) -> Prediction | None:
    """The prediction's end, as its event stream tells it; None when the stream fails."""
    try:
        with closing(client.events(handle.id, timeout=timeout)) as events:
            for event in events:
                spinner.update(f"{handle.id}: {_render.progress(event)}")
                if event.final:
                    return event.prediction
    except FreightClientError as exc:
        if exc.code == "prediction_not_found":
            raise
    return None


def _poll(
    client: Client, handle: PredictionHandle, deadline: float | None, spinner: Status
) -> Prediction:
    prediction = handle.prediction
    while not prediction.terminal:
        left = STATUS_POLL_S if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"prediction {handle.id} still {prediction.status}")
        prediction = client.get(handle.id, wait=min(STATUS_POLL_S, left))
        spinner.update(f"{handle.id}: {prediction.status}")
    return prediction
