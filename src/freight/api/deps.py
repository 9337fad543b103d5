"""Access to the services the app was built with (kept on ``app.state``).

Routes reach only these: the prediction service, the system service and the
URL signer of freight's own signed routes — never a backend or the agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from freight import logsetup
from freight.access import ANONYMOUS, Principal, Scope
from freight.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from freight.callbacks import CallbackService
    from freight.keyring import Keyring
    from freight.sagemaker import SageMakerService
    from freight.service import PredictionService
    from freight.signing import UrlSigner
    from freight.system import SystemService


def service(request: Request) -> PredictionService:
    svc: PredictionService = request.app.state.service
    return svc


def callbacks(request: Request) -> CallbackService:
    svc: CallbackService = request.app.state.callbacks
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


# -- who is calling -------------------------------------------------------------------

#: ``Authorization: Bearer <key or token>`` (declared once: the OpenAPI security scheme)
bearer = HTTPBearer(
    auto_error=False,
    description="an API key (`frk_…`, `freight keys create`) or an identity provider's JWT",
)


def keyring(request: Request) -> Keyring:
    ring: Keyring = request.app.state.keyring
    return ring


def principal(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """The dependency of a route that needs ``scope``: the caller, authenticated
    (401 without valid credentials once any key exists; 403 without the scope).
    With no key configured (a loopback server), every caller is the ``default``
    tenant with every scope."""

    async def authenticated(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        ring: Keyring | None = getattr(request.app.state, "keyring", None)
        if ring is None:  # a worker's probe app: no keys there, nothing of a tenant's
            return ANONYMOUS
        if credentials is None:
            if await ring.required():
                raise UnauthorizedError(
                    "this route needs `Authorization: Bearer <key>`", code="missing_credentials"
                )
            who = ANONYMOUS
        else:
            source = request.client.host if request.client else ""
            who = await ring.authenticate(credentials.credentials, source)
        if not who.has(scope):
            raise ForbiddenError(
                f"this route needs a key with the {scope} scope",
                code="missing_scope",
                scope=str(scope),
            )
        request.state.principal = who
        logsetup.bind(tenant=who.tenant)  # this request's log lines name it
        return who

    authenticated.__name__ = f"needs_{scope}"
    return authenticated


#: the caller of a route, by the scope it needs
Predictor = Annotated[Principal, Depends(principal(Scope.PREDICT))]
Reader = Annotated[Principal, Depends(principal(Scope.READ))]
Batcher = Annotated[Principal, Depends(principal(Scope.BATCH))]
Admin = Annotated[Principal, Depends(principal(Scope.ADMIN))]
Scraper = Annotated[Principal, Depends(principal(Scope.METRICS))]


# -- callers that sign requests as AWS clients do (the SageMaker runtime API) ------------


def sagemaker(request: Request) -> SageMakerService:
    svc: SageMakerService = request.app.state.sagemaker
    return svc


def signed(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """The dependency of a route that AWS clients call: the caller of an
    ``AWS4-HMAC-SHA256`` signature (its SigV4 pair checked against the whole body,
    read here up to ``max_json_bytes``, the bound of a body read whole, once the
    header, its time and its key are good, and kept as ``request.state.body``), or of a
    bearer key. A server without keys takes any signature, as it takes any caller."""

    async def authenticated(request: Request) -> Principal:
        from freight.api.bodies import read_limited
        from freight.sigv4 import SignedRequest, is_sigv4

        limit = service(request).limits.max_json_bytes

        async def signed_request() -> SignedRequest:
            request.state.body = await read_limited(request, limit)
            return SignedRequest(
                method=request.method,
                raw_path=(request.scope.get("raw_path") or request.url.path.encode()).decode(
                    "latin-1"
                ),
                query=request.scope.get("query_string", b"").decode("latin-1"),
                headers=request.headers.items(),
                body=request.state.body,
            )

        ring: Keyring = request.app.state.keyring
        header = request.headers.get("authorization")
        source = request.client.host if request.client else ""
        if header is None or (is_sigv4(header) and not await ring.required()):
            if await ring.required():
                raise UnauthorizedError(
                    "this route needs a SigV4 signature (an AWS client with a key pair of "
                    "`freight keys create --sigv4`) or `Authorization: Bearer <key>`",
                    code="missing_credentials",
                )
            who = ANONYMOUS
        elif is_sigv4(header):
            amz_date = request.headers.get("x-amz-date")
            # the body is read once the header, its time and its key are good
            who = await ring.authenticate_sigv4(header, amz_date, signed_request, source)
        else:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise UnauthorizedError(
                    "Authorization is neither an AWS4-HMAC-SHA256 signature nor a bearer key",
                    code="malformed_authorization",
                )
            who = await ring.authenticate(token.strip(), source)
        if not hasattr(request.state, "body"):
            request.state.body = await read_limited(request, limit)
        if not who.has(scope):
            raise ForbiddenError(
                f"this route needs a key with the {scope} scope",
                code="missing_scope",
                scope=str(scope),
            )
        request.state.principal = who
        logsetup.bind(tenant=who.tenant)
        return who

    authenticated.__name__ = f"signed_{scope}"
    return authenticated


#: the caller of a SageMaker route (``predict`` scope)
SignedPredictor = Annotated[Principal, Depends(signed(Scope.PREDICT))]
