"""The notification commands as subprocesses against a real server and a real webhook
receiver, on both shapes: a dead notification shown apart from the prediction's status,
then sent again by ``freight redeliver`` and ``freight deliveries --redeliver-dead``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.acceptance.conftest import Cli
from tests.fixtures.server import Server, wait_until
from tests.integration.test_notifications import FAST_DELIVERY, Receiver, receiver

__all__ = ["receiver"]  # the fixture, used here too

ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_redeliver_sends_dead_notifications_again(
    make_server: Callable[..., Server], cli_for: Callable[[Server], Cli], receiver: Receiver
) -> None:
    """status shows a succeeded prediction whose notifications are dead; deliveries lists
    their ids; redeliver ID and deliveries ID --redeliver-dead send them again with their
    event ids, and status shows them delivered; a delivered or unknown id exits 1 with
    its code."""
    server = make_server(models=["Echo"], **FAST_DELIVERY, FREIGHT_DELIVERY_MAX_AGE_S="0.3")
    cli = cli_for(server)
    receiver.answer = 503
    argv = ["--webhook", receiver.url, "--webhook-event", "started", "--webhook-event", "completed"]
    predicted = cli("predict", "echo", "--input", '{"x": 1}', *argv)
    assert predicted.returncode == 0, predicted.stderr
    match = ID.search(predicted.stderr)
    assert match, predicted.stderr
    prediction_id = match.group(0)
    with server.client() as client:

        def rows() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get(
                f"/v1/predictions/{prediction_id}/deliveries"
            ).json()["data"]
            return found

        started, completed = wait_until(
            lambda: (r := rows()) and [d["status"] for d in r] == ["dead", "dead"] and r
        )
        shown = cli("status", prediction_id)
        assert re.search(r"status\s+succeeded", shown.stdout), shown.stdout
        assert re.search(r"notifications\s+dead \(2 dead of 2\)", shown.stdout), shown.stdout
        listed = cli("deliveries", prediction_id)
        assert started["id"] in listed.stdout and completed["id"] in listed.stdout

        receiver.answer = 200
        again = cli("redeliver", started["id"])
        assert again.returncode == 0, again.stderr
        assert "started to webhook" in again.stdout and started["event_id"] in again.stdout
        wait_until(lambda: rows()[0]["status"] == "delivered")
        rest = cli("deliveries", prediction_id, "--redeliver-dead")
        assert rest.returncode == 0, rest.stderr
        assert "sent 1 dead notification(s) again" in rest.stderr
        wait_until(lambda: [d["status"] for d in rows()] == ["delivered", "delivered"])

    shown = cli("status", prediction_id)
    assert re.search(r"notifications\s+delivered \(2 delivered of 2\)", shown.stdout)
    done = cli("redeliver", started["id"])
    assert done.returncode == 1 and "invalid_state" in done.stderr
    assert "Traceback" not in done.stderr
    unknown = cli("redeliver", "nosuch#0")
    assert unknown.returncode == 1 and "delivery_not_found" in unknown.stderr
    accepted = [h["webhook-id"] for h, _ in receiver.received if h["x-answered"] == "200"]
    assert accepted == [started["event_id"], completed["event_id"]]
