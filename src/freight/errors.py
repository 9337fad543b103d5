"""The one exception tree of freight.

Every error carries a stable machine-readable ``code`` and structured fields;
``api/errors.py`` is the only place that maps them to HTTP statuses.

    FreightError
    ├── ConfigError              a setting is wrong (start-up)
    ├── ModelDefinitionError     a model class or project is wrong (start-up)
    ├── NotFoundError            unknown prediction / model / object
    ├── InvalidRequestError      malformed body, wrong content type, bad cursor, ...
    ├── PayloadTooLargeError     body over the configured limit
    ├── ConflictError            idempotency key reused with another body, wrong state
    ├── QueueFullError           backlog bound reached (429 + Retry-After)
    ├── UrlError                 missing, expired or tampered signed URL
    ├── StoreUnavailableError    the database cannot be reached (503)
    └── StorageError             the object store failed
"""

from __future__ import annotations

from typing import Any


class FreightError(Exception):
    """Root of every error freight raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail: dict[str, Any] = detail


class ConfigError(FreightError):
    code = "config_error"


class ModelDefinitionError(FreightError):
    code = "model_definition_error"


class NotFoundError(FreightError):
    code = "not_found"


class InvalidRequestError(FreightError):
    code = "invalid_request"


class PayloadTooLargeError(FreightError):
    code = "payload_too_large"


class ConflictError(FreightError):
    code = "conflict"


class QueueFullError(FreightError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.retry_after_s = retry_after_s


class UrlError(FreightError):
    code = "bad_signature"


class StoreUnavailableError(FreightError):
    code = "store_unavailable"


class StorageError(FreightError):
    code = "storage_error"
