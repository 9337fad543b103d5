"""The object-key schemes: where freight keeps what it writes in the store.

Predictions: flat keys (``inputs/<id>``, ``outputs/<id>``; an uploaded input
``inputs/<id>.<token>``), no directory per prediction: creating a directory costs
as much as creating the file on the local backend.

Batch jobs: one folder each, ``batch/<id>/``: ``input/`` (its uploads),
``output/`` (its outputs, unless the job names another prefix) and ``chunks/``
(its working objects, deleted once their file is assembled). A chunk's objects
share a base, ``chunks/<file>-<piece>``: ``.in`` (its records), then per attempt
``.<token>.out``, ``.<token>.err`` and ``.<token>.json``, the token fresh for each
writer, so an attempt that lost its lease and still runs (a zombie) never
overwrites the winner's objects: only the key its winner recorded is read.

Those three spaces (``inputs/``, ``outputs/``, ``batch/``) are freight's own
(:data:`INTERNAL_SPACES`): a caller's output never lands in one, and a caller's
input may read only what makes sense there (:func:`readable`). Every layer that
names an object imports these functions, so each scheme lives in one place.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from freight.errors import InvalidRequestError

#: the key spaces freight writes on its own
INTERNAL_SPACES: Final = ("inputs/", "outputs/", "batch/")


def input_key(prediction_id: str) -> str:
    return f"inputs/{prediction_id}"


def upload_key(prediction_id: str) -> str:
    """A fresh key for one upload to a prediction's presigned URL: two uploads racing
    on the same URL write different objects, so the loser's bytes can never
    overwrite the winner's (and the loser deletes only its own)."""
    return f"{input_key(prediction_id)}.{secrets.token_hex(4)}"


def output_key(prediction_id: str) -> str:
    return f"outputs/{prediction_id}"


URI_PREFIX = "freight://"


def key_of_uri(uri: str, store_key: Callable[[str], str | None]) -> str | None:
    """The object key a URI names: ``freight://<key>``, or a URI of the configured
    store (``store_key`` is its ``key_for_uri``); None when it is elsewhere or would
    climb out of the store (``..``)."""
    key = uri[len(URI_PREFIX) :] if uri.startswith(URI_PREFIX) else store_key(uri)
    if key is None or key.startswith("/") or ".." in key.split("/"):
        return None
    return key


def is_own_input(prediction_id: str, key: str | None) -> bool:
    """True when ``key`` is the input freight stored for the prediction (not an
    ``input_uri`` object of the caller's, which retention must never delete)."""
    own = input_key(prediction_id)
    return key is not None and (key == own or key.startswith(own + "."))


def is_own_output(prediction_id: str, key: str | None) -> bool:
    return key is not None and key == output_key(prediction_id)


# -- freight's own key spaces -----------------------------------------------------------


def is_internal(key: str) -> bool:
    """Whether ``key`` (an object or a prefix) is in one of freight's own spaces."""
    return key.startswith(INTERNAL_SPACES)


def writable(prefix: str) -> bool:
    """Whether a caller may name ``prefix`` as where a job writes: not in one of
    freight's spaces, nor above one (the store's root: an input named
    ``inputs/x.jsonl`` would write ``inputs/x.jsonl.out``)."""
    return not is_internal(prefix) and not any(s.startswith(prefix) for s in INTERNAL_SPACES)


def readable(key: str) -> bool:
    """Whether a caller may name ``key`` (an object or a prefix) as an input: anything
    but a batch job's working objects (its ``chunks/``, deleted as soon as their file
    is assembled) and a job's whole folder (which holds them). Predictions' inputs
    and outputs, and jobs' inputs and outputs, may be read again."""
    parts = key.split("/")
    if parts[0] != "batch":
        return True
    return len(parts) >= 3 and bool(parts[1]) and parts[2] in ("input", "output")


def check_readable(key: str, uri: str) -> str:
    """``key``, or InvalidRequestError ``invalid_location`` when a caller may not name
    it as an input (:func:`readable`): the rule of predictions and batch jobs alike."""
    if not readable(key):
        raise InvalidRequestError(
            f"{uri!r} names a batch job's working objects, not an input: give a job's "
            "input/ or output/ prefix, or an object of yours",
            code="invalid_location",
            uri=uri,
        )
    return key


# -- tenants ---------------------------------------------------------------------------

#: where a tenant's own objects live (what its ``input_uri`` / ``output_uri`` may name,
#: besides the inputs and outputs of its own predictions and jobs)
TENANTS_SPACE: Final = "tenants/"


def tenant_prefix(tenant: str) -> str:
    return f"{TENANTS_SPACE}{tenant}/"


def owner_of(key: str) -> str | None:
    """The id of the prediction or batch job whose object ``key`` is (``inputs/<id>``,
    ``inputs/<id>.<token>``, ``outputs/<id>``, ``batch/<id>/…``), else None."""
    space, _, rest = key.partition("/")
    if space in ("inputs", "outputs"):
        return rest.split(".", 1)[0] or None
    if space == "batch":
        return rest.split("/", 1)[0] or None
    return None


# -- SageMaker asynchronous invocations -------------------------------------------------

#: where an ``invoke_endpoint_async`` result is written, in the caller's tenant space
#: (the caller's objects, as SageMaker's are in the caller's bucket: never purged)
SAGEMAKER_OUTPUTS: Final = "sagemaker/async-outputs/"
SAGEMAKER_FAILURES: Final = "sagemaker/async-failures/"
_LOCATION_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _location_parts(extension: str | None, filename: str | None) -> str:
    parts = [p for p in (extension or "").strip("/").split("/") if p]
    names = [*parts, *([filename] if filename else [])]
    if (extension and not parts) or any(not _LOCATION_PART.match(n) or ".." in n for n in names):
        raise InvalidRequestError(
            "S3OutputPathExtension and Filename take letters, digits, '.', '_' and '-' "
            "('/' between the extension's parts), without '..'",
            code="invalid_location",
        )
    return "".join(f"{p}/" for p in parts)


def sagemaker_output_key(
    tenant: str, prediction_id: str, extension: str | None = None, filename: str | None = None
) -> str:
    """Where an async invocation's output lands (SageMaker's ``OutputLocation``):
    ``tenants/<t>/sagemaker/async-outputs/[<extension>/]<filename or id.out>``."""
    where = _location_parts(extension, filename)
    name = filename or f"{prediction_id}{OUTPUT_SUFFIX}"
    return f"{tenant_prefix(tenant)}{SAGEMAKER_OUTPUTS}{where}{name}"


def sagemaker_failure_key(tenant: str, prediction_id: str, extension: str | None = None) -> str:
    """Where an async invocation's failure lands (``FailureLocation``):
    ``tenants/<t>/sagemaker/async-failures/[<extension>/]<id>-error.out``."""
    where = _location_parts(extension, None)
    return f"{tenant_prefix(tenant)}{SAGEMAKER_FAILURES}{where}{prediction_id}-error{OUTPUT_SUFFIX}"


def in_tenant_space(tenant: str, key: str) -> bool:
    """Whether ``key`` is one of ``tenant``'s own objects (what a write on its behalf
    may name)."""
    return key.startswith(tenant_prefix(tenant)) and ".." not in key.split("/")


# -- batch jobs -----------------------------------------------------------------------

#: a job's manifest, at the root of its output prefix
MANIFEST: Final = "manifest.json"
#: a file output's failed records, beside it: ``<output>.errors``
ERRORS_SUFFIX: Final = ".errors"
#: a file output: ``<name>.out`` (``.gz`` dropped: outputs are not compressed)
OUTPUT_SUFFIX: Final = ".out"


def batch_upload_prefix(job_id: str) -> str:
    return f"batch/{job_id}/input/"


def batch_output_prefix(job_id: str) -> str:
    """Where a job writes unless it names another prefix."""
    return f"batch/{job_id}/output/"


def manifest_key(output_prefix: str) -> str:
    return output_prefix + MANIFEST


def errors_key(output_key: str) -> str:
    """The error file of one file output."""
    return output_key + ERRORS_SUFFIX


def chunks_prefix(job_id: str, file_index: int | None = None) -> str:
    """Every chunk object of the job (or of one of its files)."""
    base = f"batch/{job_id}/chunks/"
    return base if file_index is None else f"{base}{file_index}-"


def chunk_base(job_id: str, file_index: int, piece_index: int) -> str:
    """What a chunk's objects are named after (see the module docstring)."""
    return f"{chunks_prefix(job_id, file_index)}{piece_index}"


def chunk_input_key(base: str) -> str:
    return f"{base}.in"


def chunk_output_key(base: str, token: str | None = None) -> str:
    """Where one attempt writes a chunk's output: fenced by a fresh token."""
    return f"{base}.{token or secrets.token_hex(4)}{OUTPUT_SUFFIX}"


def chunk_errors_key(output_key: str) -> str:
    """The failed records of the chunk attempt that wrote ``output_key``."""
    return output_key.removesuffix(OUTPUT_SUFFIX) + ".err"


def chunk_summary_key(output_key: str) -> str:
    """The summary of the attempt that wrote ``output_key``, written after its other
    objects: whoever finds it finds them whole."""
    return output_key.removesuffix(OUTPUT_SUFFIX) + ".json"


def chunk_output_of_summary(summary_key: str) -> str:
    return summary_key.removesuffix(".json") + OUTPUT_SUFFIX


def is_job_bookkeeping(name: str) -> bool:
    """A job's manifest or an error file: never an input when a prefix is listed (a
    job's outputs may be the next job's input, its bookkeeping is not)."""
    return name.rpartition("/")[2] == MANIFEST or name.endswith(ERRORS_SUFFIX)


def skip_listed(prefix: str, key: str) -> bool:
    """Whether an object listed under an input prefix is not an input: a job's
    bookkeeping, or an object in one of freight's spaces when the prefix is above it
    (the store's root lists every prediction's objects too)."""
    own = key[len(prefix) :]
    return is_job_bookkeeping(own) or (is_internal(key) and not is_internal(prefix))


def output_name(name: str) -> str:
    """The output of an input file named ``name``: ``rows.csv.gz`` -> ``rows.csv.out``
    (outputs are written uncompressed; see :func:`output_names` for clashes)."""
    stem = name[: -len(".gz")] if name.lower().endswith(".gz") else name
    return stem + OUTPUT_SUFFIX


def output_names(names: Sequence[str]) -> list[str]:
    """The output names of a job's input files, distinct and never one of the inputs'
    names (a job may write where it reads), whatever their order: ``output_name``,
    unless a plain file's output has that name (``rows.csv`` beside ``rows.csv.gz``),
    else the full input name plus ``.out``, else that with ``.1``, ``.2``... before
    ``.out``."""
    plain = {name + OUTPUT_SUFFIX for name in names}
    taken = set(names)
    chosen: list[str] = []
    for name in names:
        first, whole = output_name(name), name + OUTPUT_SUFFIX
        candidates = [first] if first == whole or first not in plain else []
        candidates += [whole, *(f"{name}.{n}{OUTPUT_SUFFIX}" for n in range(1, len(names) + 2))]
        pick = next(c for c in candidates if c not in taken)
        taken.add(pick)
        chosen.append(pick)
    return chosen


__all__ = [
    "ERRORS_SUFFIX",
    "INTERNAL_SPACES",
    "MANIFEST",
    "OUTPUT_SUFFIX",
    "batch_output_prefix",
    "batch_upload_prefix",
    "check_readable",
    "chunk_base",
    "chunk_errors_key",
    "chunk_input_key",
    "chunk_output_key",
    "chunk_output_of_summary",
    "chunk_summary_key",
    "chunks_prefix",
    "errors_key",
    "in_tenant_space",
    "input_key",
    "is_internal",
    "is_job_bookkeeping",
    "is_own_input",
    "is_own_output",
    "key_of_uri",
    "manifest_key",
    "output_key",
    "output_name",
    "output_names",
    "readable",
    "sagemaker_failure_key",
    "sagemaker_output_key",
    "skip_listed",
    "upload_key",
    "writable",
]
