"""``/v1/keys`` and ``/v1/audit``: API keys and the audit log (the ``admin`` scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from freight.access import ApiKey, AuditEntry, Scope
from freight.api import deps
from freight.api.bodies import read_json
from freight.api.errors import responses
from freight.api.render import json_response
from freight.api.schemas import AuditPage, CreateKey, KeyList, KeyOut, WebhookSecretOut
from freight.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from freight.views import iso

router = APIRouter(tags=["access"])


def key_dict(key: ApiKey, token: str | None = None) -> dict[str, Any]:
    """A key as shown: never its hash; its token (a SigV4 pair's secret) only in the
    answer that created it."""
    shown: dict[str, Any] = {
        "id": key.key_id,
        "kind": "sigv4" if key.sigv4 else "bearer",
        "tenant": key.tenant,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "models": None if key.targets is None else sorted(key.targets),
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
    }
    if token is not None and key.sigv4:
        shown["access_key_id"], shown["secret_access_key"] = key.key_id, token
    elif token is not None:
        shown["token"] = token
    return shown


def _audit_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": entry.actor,
        "tenant": entry.tenant,
        "action": entry.action,
        "subject": entry.subject,
        "detail": entry.detail,
    }


_ADMIN_ERRORS = (ForbiddenError,)


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=KeyOut,
    responses=responses(
        InvalidRequestError, UnsupportedMediaTypeError, PayloadTooLargeError, *_ADMIN_ERRORS
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateKey.model_json_schema()}},
        }
    },
)
async def create_key(request: Request, who: deps.Admin) -> Response:
    """A new key for a tenant; the answer holds its token, which is never shown again."""
    raw = await read_json(request, 64 * 1024)
    try:
        body = CreateKey.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    key, token = await deps.keyring(request).create(
        who,
        tenant=body.tenant,
        name=body.name,
        scopes=[Scope(s) for s in body.scopes],
        targets=body.models,
        expires_in_s=body.expires_in_s,
        sigv4=body.sigv4,
    )
    return json_response(key_dict(key, token), status_code=201)


@router.get("/v1/keys", response_model=KeyList, responses=responses(*_ADMIN_ERRORS))
async def list_keys(request: Request, who: deps.Admin, tenant: str | None = None) -> Response:
    """Every key (of one tenant with ``tenant``), revoked and expired ones included."""
    keys = await deps.keyring(request).keys(who, tenant)
    return json_response({"data": [key_dict(k) for k in keys]})


@router.post(
    "/v1/keys/{key_id}/revoke",
    response_model=KeyOut,
    responses=responses(NotFoundError, *_ADMIN_ERRORS),
)
async def revoke_key(request: Request, who: deps.Admin, key_id: str) -> Response:
    """Revoke a key: every API process refuses it within ``key_cache_s`` seconds."""
    key = await deps.keyring(request).revoke(who, key_id)
    return json_response(key_dict(key))


@router.get("/v1/audit", response_model=AuditPage, responses=responses(*_ADMIN_ERRORS))
async def audit_log(
    request: Request,
    who: deps.Admin,
    tenant: str | None = None,
    before: Annotated[int | None, Query(ge=1, description="`next_before` of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Who changed keys and secrets, and what admins did: newest first."""
    entries = await deps.keyring(request).audit_log(
        who, tenant=tenant, before_id=before, limit=limit + 1
    )
    page, more = entries[:limit], len(entries) > limit
    next_before = page[-1].id if more and page else None
    return json_response({"data": [_audit_dict(e) for e in page], "next_before": next_before})


@router.get(
    "/v1/webhooks/secret",
    response_model=WebhookSecretOut,
    responses=responses(*_ADMIN_ERRORS),
)
async def webhook_secret(
    request: Request, who: deps.Reader, tenant: str | None = None
) -> Response:
    """The secret this tenant's webhooks are signed with (Standard Webhooks), made on
    first use; another tenant's (``tenant``) for ``admin`` only."""
    secret = await deps.keyring(request).webhook_secret(who, tenant=tenant)
    return json_response({"tenant": tenant or who.tenant, "secret": secret})


@router.post(
    "/v1/webhooks/secret/rotate",
    response_model=WebhookSecretOut,
    responses=responses(*_ADMIN_ERRORS),
)
async def rotate_webhook_secret(
    request: Request, who: deps.Admin, tenant: str | None = None
) -> Response:
    """A new secret for the tenant; the previous one keeps signing alongside it for
    ``webhook_secret_overlap_s`` so its receivers can switch over (audited)."""
    secret = await deps.keyring(request).webhook_secret(who, tenant=tenant, rotate=True)
    return json_response({"tenant": tenant or who.tenant, "secret": secret})
