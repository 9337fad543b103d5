"""Access to the services the app was built with (kept on ``app.state``).

Routes reach only these: the prediction service, the system service and the
URL signer of freight's own signed routes — never a backend or the agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from freight.service import PredictionService
    from freight.signing import UrlSigner
    from freight.system import SystemService


def service(request: Request) -> PredictionService:
    svc: PredictionService = request.app.state.service
    return svc


def system(request: Request) -> SystemService:
    sys_: SystemService = request.app.state.system
    return sys_


def signer(request: Request) -> UrlSigner:
    sig: UrlSigner = request.app.state.signer
    return sig


def base_url(request: Request) -> str:
    public: str = request.app.state.public_url
    return (public or str(request.base_url)).rstrip("/")


def absolute(request: Request, url: str) -> str:
    return url if "://" in url else base_url(request) + url
