"""Access to the objects the app was built with (kept on ``app.state``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:
    from freight.agent import Agent
    from freight.service import PredictionService
    from freight.signing import UrlSigner


def service(request: Request) -> PredictionService:
    svc: PredictionService = request.app.state.service
    return svc


def signer(request: Request) -> UrlSigner:
    sig: UrlSigner = request.app.state.signer
    return sig


def agent(request: Request) -> Agent | None:
    a: Agent | None = request.app.state.agent
    return a


def base_url(request: Request) -> str:
    public: str = request.app.state.service.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def absolute(request: Request, url: str) -> str:
    return url if "://" in url else base_url(request) + url


def state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)
