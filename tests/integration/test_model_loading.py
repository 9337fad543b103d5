"""Models that fail to load: reported, retried, and never taking the server down."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import FAST, Server, wait_until

PROJECT = """
    import time

    import freight


    class Fine(freight.Model):
        name = "fine"

        def predict(self, input: dict) -> dict:
            return input


    class Broken(freight.Model):
        name = "broken"

        def load(self) -> None:
            raise RuntimeError("weights missing")

        def predict(self, input: dict) -> dict:
            return input


    class Stuck(freight.Model):
        name = "stuck"

        def load(self) -> None:
            time.sleep(3600)

        def predict(self, input: dict) -> dict:
            return input
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server whose project holds a fine, a broken and a stuck model."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "models.py").write_text(textwrap.dedent(PROJECT))
    env = {
        **os.environ,
        **FAST,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_LOAD_TIMEOUT_S": "1",
    }
    for name in ("FREIGHT_DATABASE_URL", "FREIGHT_STORAGE_URL", "FREIGHT_MODELS"):
        env.pop(name, None)
    started = Server(env=env, cwd=tmp_path, project=project).start(probe="/healthz")
    yield started
    started.stop(kill=True)


def test_load_failures_are_reported_and_other_models_serve(server: Server) -> None:
    """A load() that raises or hangs shows as load_error on /v1/models and /readyz is
    503, while the other models serve predictions."""
    with server.client() as client:

        def errors() -> dict[str, dict[str, str]] | None:
            models = {m["name"]: m for m in client.get("/v1/models").json()["data"]}
            found = {n: models[n]["load_error"] for n in ("broken", "stuck")}
            return found if all(found.values()) else None

        found = wait_until(errors, timeout_s=30)
        assert "RuntimeError: weights missing" in found["broken"]["message"]
        assert found["stuck"]["code"] == "load_timeout"
        readyz = client.get("/readyz")
        assert readyz.status_code == 503
        assert set(readyz.json()["error"]["detail"]["models"]) == {"broken", "stuck"}
        response = client.post("/v1/models/fine/predict", json={"ok": 1})
        assert response.status_code == 200 and response.json() == {"ok": 1}
