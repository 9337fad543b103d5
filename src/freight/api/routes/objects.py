"""``/v1/objects/{key}``: presigned downloads for backends that cannot presign
(the local directory): freight signs the route, verifies it here, and streams."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.errors import responses
from freight.errors import NotFoundError, StorageError, UrlError
from freight.media import OCTET_STREAM
from freight.signing import UrlSigner

PREFIX = "/v1/objects/"

router = APIRouter(prefix=PREFIX.rstrip("/"), tags=["objects"])


def presigner(signer: UrlSigner) -> Callable[[str, int], str]:
    """How a storage backend without URLs of its own presigns a download: this route,
    signed for GET (the API puts its base URL in front)."""

    def presign(key: str, expires_s: int) -> str:
        return signer.sign("GET", PREFIX + key, expires_s=expires_s)

    return presign


@router.get(
    "/{key:path}",
    responses={
        **responses(UrlError, NotFoundError, StorageError),
        200: {"description": "the object's bytes", "content": {OCTET_STREAM: {}}},
    },
)
async def download(
    request: Request,
    key: str,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    """A presigned download: the signature covers this path and its expiry."""
    deps.signer(request).verify("GET", request.url.path, expires, sig)
    obj = await deps.service(request).open_object(key)
    headers = {"Content-Length": str(obj.size)} if obj.size is not None else None
    return StreamingResponse(obj.chunks, media_type=obj.content_type, headers=headers)
