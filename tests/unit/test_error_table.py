"""The error statuses have one source: ``api/errors.STATUS``. The handlers answer from
it, the OpenAPI document is generated from it, and the HTTP reference's table must
be the one generated from it too, so no copy can drift."""

from __future__ import annotations

from pathlib import Path

from freight import errors
from freight.api.errors import COMMON, MEANING, STATUS, responses, status_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "http-api.md"
START, END = "<!-- errors:start -->", "<!-- errors:end -->"

#: answers that are not FreightErrors: Starlette's own and the catch-all
FRAMEWORK = {
    404: "no such route (`not_found`)",
    405: "method not allowed (`method_not_allowed`, with `Allow`)",
    500: "an unexpected error (`internal_error`); a bug, logged with its traceback",
}


def expected_table() -> str:
    rows: dict[int, list[str]] = {}
    for cls, status in STATUS.items():
        rows.setdefault(status, []).append(MEANING[cls])
    for status, text in FRAMEWORK.items():
        rows.setdefault(status, []).append(text)
    lines = ["| status | meaning (codes) |", "|---|---|"]
    lines += [f"| {status} | {'; '.join(texts)} |" for status, texts in sorted(rows.items())]
    return "\n".join(lines)


def test_every_request_time_error_has_a_status_and_a_meaning() -> None:
    """Each FreightError a request can raise maps to one status and is documented."""
    start_up_only = {
        errors.ConfigError,
        errors.ModelDefinitionError,
        errors.PipelineDefinitionError,
        errors.SinkError,
    }
    raised = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.FreightError)
    } - start_up_only - {errors.FreightError}
    assert raised <= set(STATUS), raised - set(STATUS)
    assert set(STATUS) == set(MEANING)


def test_subclasses_inherit_their_status() -> None:
    """A subclass without its own entry answers with its parent's status."""

    class Special(errors.NotFoundError):
        pass

    assert status_of(Special("x")) == 404
    assert status_of(errors.FreightError("x")) == 500


def test_openapi_responses_come_from_the_table() -> None:
    """A route's documented error responses are exactly its raises plus the common ones."""
    documented = responses(errors.NotFoundError, errors.UrlError)
    assert set(documented) == {404, 403} | {STATUS[c] for c in COMMON}


def test_http_reference_table_is_the_generated_one() -> None:
    """docs/reference/http-api.md shows the table generated from STATUS (regenerate it
    from the assertion's message when the table changes)."""
    text = DOC.read_text()
    shown = text[text.index(START) + len(START) : text.index(END)].strip()
    assert shown == expected_table(), "\n" + expected_table()
