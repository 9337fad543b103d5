"""The one exception tree of freight.

Every error carries a stable machine-readable ``code`` and structured fields;
``api/errors.py`` is the only place that maps them to HTTP statuses.

    FreightError
    ├── ConfigError                a setting is wrong (start-up)
    ├── ModelDefinitionError       a model class or project is wrong (start-up)
    ├── NotFoundError              unknown prediction / model / object
    ├── InvalidRequestError        malformed body, bad cursor, ambiguous input, ...
    ├── UnsupportedMediaTypeError  a content type the route or model does not take
    ├── PayloadTooLargeError       body over the configured limit
    ├── ConflictError              idempotency key reused with another body, wrong state
    ├── QueueFullError             backlog bound reached (429 + Retry-After)
    │   └── QuotaExceededError     a tenant's quota or rate reached (429 + Retry-After)
    ├── UnauthorizedError          no credentials, or ones that are not valid (401)
    ├── ForbiddenError             valid credentials without the right (403)
    ├── UrlError                   missing, expired or tampered signed URL
    ├── PredictionFailedError      a real-time prediction ended failed/canceled/expired
    ├── NotReadyError              a model has no ready replica (readiness probe)
    ├── TooManyStreamsError        this process holds its most event streams (503 + Retry-After)
    ├── StoreUnavailableError      the database cannot be reached
    ├── StorageError               the object store failed
    ├── PipelineDefinitionError    a pipeline declaration is wrong (start-up, freight check)
    └── SinkError                  a notification sink cannot start (start-up)

One exception per outcome: ``api/errors.py`` maps each class (never a code) to
one HTTP status, and the OpenAPI document is generated from that same table.
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


class UnsupportedMediaTypeError(FreightError):
    code = "unsupported_media_type"


class PayloadTooLargeError(FreightError):
    code = "payload_too_large"


class ConflictError(FreightError):
    code = "conflict"


class QueueFullError(FreightError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.retry_after_s = retry_after_s


class QuotaExceededError(QueueFullError):
    """A tenant's bound: ``quota_max_queued``, ``quota_rate``;
    or too many failed authentications from one address (``too_many_auth_failures``)."""

    code = "quota_exceeded"


class UnauthorizedError(FreightError):
    """No key or token (``missing_credentials``), or one that is malformed, unknown,
    revoked or expired (``invalid_credentials``: which of these is never said). A SigV4
    signature says what AWS says: ``malformed_authorization``, ``unknown_access_key``,
    ``invalid_signature``, ``signature_expired``."""

    code = "invalid_credentials"


class ForbiddenError(FreightError):
    """Valid credentials without the right: ``missing_scope``, ``target_not_allowed``
    (a key limited to other models), ``uri_not_allowed`` (outside the tenant's prefix)."""

    code = "forbidden"


class UrlError(FreightError):
    code = "bad_signature"


class PredictionFailedError(FreightError):
    """A real-time call whose prediction ended without an output: the prediction's own
    error code and message, and its id (so the caller can fetch the record)."""

    code = "model_error"

    def __init__(
        self, message: str, *, code: str, prediction_id: str, **detail: Any
    ) -> None:
        super().__init__(message, code=code, prediction_id=prediction_id, **detail)
        self.prediction_id = prediction_id


class NotReadyError(FreightError):
    code = "not_ready"


class TooManyStreamsError(FreightError):
    """This process already holds as many event streams as ``max_event_streams`` allows;
    another process (or this one, a moment later) may take it."""

    code = "too_many_streams"

    def __init__(self, message: str, *, retry_after_s: int = 1, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.retry_after_s = retry_after_s


class StoreUnavailableError(FreightError):
    code = "store_unavailable"


class StorageError(FreightError):
    code = "storage_error"


class PipelineDefinitionError(FreightError):
    """A pipeline declaration is wrong: the message names the pipeline and the fault;
    ``detail`` holds ``pipeline``, ``step`` (or None) and ``fault`` (a stable kind)."""

    code = "pipeline_definition_error"


class SinkError(FreightError):
    """A notification sink cannot start: an unreachable broker, a missing credential,
    a stream that does not exist. Raised at start-up, like ConfigError; the message
    names the sink and the cause and never carries a secret. ``detail`` holds
    ``sink`` (its name) and ``sink_type``."""

    code = "sink_error"
