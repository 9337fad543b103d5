"""The batch-job object, as the API returns it and notifications carry it.

Pure: presigned URLs are computed by the caller (they need the store) and passed
in by object key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from freight.batch.job import JobDoc
from freight.keys import manifest_key
from freight.prediction import Prediction, Status
from freight.views import error_of, iso

#: job statuses as the API names them (a job row never skips or pends)
STATUSES = ("awaiting_input", "queued", "running", "succeeded", "failed", "canceled", "expired")


def _uri(key: str | None) -> str | None:
    return None if key is None else f"freight://{key}"


def job_dict(
    row: Prediction,
    doc: JobDoc,
    *,
    urls: Mapping[str, str | None] | None = None,
    upload_urls: Mapping[str, str] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """``urls``: presigned download URLs by object key (outputs, errors, manifest)."""
    urls = urls or {}
    running = row.status == Status.RUNNING
    total = doc.records_done + doc.records_failed if doc.split_all else None
    if row.status == Status.SUCCEEDED:
        total = doc.records_done + doc.records_failed
    manifest = manifest_key(doc.output_prefix)
    base = f"/v1/batch-jobs/{row.id}"
    return {
        "id": row.id,
        "target": doc.target,
        "target_kind": doc.target_kind,
        "status": str(row.status),
        "created_at": iso(row.created_at),
        "started_at": iso(doc.started_at),
        "finished_at": iso(row.finished_at),
        "options": doc.options.to_json(),
        "input": {
            "uri": doc.input_uri or _uri(doc.input_prefix),
            "files": None if doc.files is None else len(doc.files),
        },
        "output": {
            "uri": _uri(doc.output_prefix),
            "manifest_uri": _uri(manifest),
            "manifest_url": urls.get(manifest),
        },
        "counts": {"total": total, "done": doc.records_done, "failed": doc.records_failed},
        "progress": round(1.0 if row.status == Status.SUCCEEDED else doc.progress(), 4),
        "records_per_s": _round(doc.rate(now if running else row.finished_at or now)),
        "eta_s": _round(doc.eta_s(now)) if running else None,
        "outputs": [
            {
                "name": o.name,
                "input_uri": _uri(o.input_key),
                "output_uri": _uri(o.output_key),
                "output_url": urls.get(o.output_key),
                "errors_uri": _uri(o.errors_key),
                "errors_url": urls.get(o.errors_key) if o.errors_key else None,
                "records": o.records,
                "failed": o.failed,
            }
            for o in doc.outputs
        ],
        "error": error_of(row) or (doc.error if row.status == Status.FAILED else None),
        "upload_urls": dict(upload_urls) if upload_urls else None,
        "metadata": orjson.loads(row.metadata) if row.metadata else {},
        "urls": {"self": base, "cancel": f"{base}/cancel"},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
