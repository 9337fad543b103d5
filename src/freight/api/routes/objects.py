"""``/v1/objects/{key}``: presigned downloads for the local-directory backend."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.schemas import ERRORS
from freight.errors import NotFoundError
from freight.service import DOWNLOAD_CHUNK_BYTES

router = APIRouter(prefix="/v1/objects", tags=["objects"])


@router.get("/{key:path}", responses=ERRORS)
async def download(
    request: Request,
    key: str,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    deps.signer(request).verify("GET", request.url.path, expires, sig)
    storage = deps.service(request).storage
    info = await storage.stat(key)
    if info is None:
        raise NotFoundError(f"no object {key}", code="object_not_found")
    return StreamingResponse(
        storage.get_stream(key, chunk_size=DOWNLOAD_CHUNK_BYTES),
        media_type=info.content_type or "application/octet-stream",
        headers={"Content-Length": str(info.size)},
    )
