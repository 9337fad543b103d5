"""The HTTP API (FastAPI): routes, error mapping, rendering of predictions."""

from freight.api.app import create_app, create_probe_app

__all__ = ["create_app", "create_probe_app"]
