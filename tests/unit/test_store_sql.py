"""Pure logic of the store's SQL layer: parameter styles, IN lists, row mapping."""

from __future__ import annotations

import dataclasses

import pytest

from freight.prediction import Kind, Prediction, Status, TargetStats
from freight.store import sql
from freight.store.rows import (
    check_idempotent,
    claim_order,
    prediction_params,
    row_to_prediction,
    stats_from_rows,
)
from freight.store.schema import predictions


def test_pyformat_converts_names_and_keeps_casts_and_percents() -> None:
    """:name becomes %(name)s; ::casts stay; a literal % is doubled for psycopg."""
    text = "SELECT :a::text, 'x%' WHERE b = :b_2 AND c=:c"
    assert sql.to_pyformat(text) == "SELECT %(a)s::text, 'x%%' WHERE b = %(b_2)s AND c=%(c)s"


def test_render_fills_dialect_slots() -> None:
    """SKIP LOCKED appears on PostgreSQL only; SQLite keeps :name parameters."""
    assert "SKIP LOCKED" in sql.render(sql.CLAIM, "postgresql")
    sqlite_claim = sql.render(sql.CLAIM, "sqlite")
    assert "FOR UPDATE" not in sqlite_claim
    assert ":target" in sqlite_claim


def test_hot_statements_use_literal_status_predicates() -> None:
    """The claim filters status with a literal, so the partial index applies."""
    assert "status = 'queued' AND target = :target" in sql.CLAIM


def test_expand_in_numbers_parameters_and_handles_empty() -> None:
    """expand_in gives one parameter per value; an empty list matches nothing."""
    assert sql.expand_in("id", ["a", "b"]) == ("(:id0, :id1)", {"id0": "a", "id1": "b"})
    assert sql.expand_in("id", []) == ("(NULL)", {})


def test_columns_match_schema_and_dataclass() -> None:
    """The table's columns are the Prediction fields, in the same order."""
    fields = [f.name for f in dataclasses.fields(Prediction)]
    assert list(sql.COLUMNS) == fields == [c.name for c in predictions.columns]


def test_row_mapping_round_trip() -> None:
    """prediction_params -> row -> Prediction is the identity, status as Status."""
    p = Prediction(id="x", target="t", status=Status.RUNNING, created_at=1.0, priority=3)
    row = tuple(prediction_params(p)[c] for c in sql.COLUMNS)
    assert type(row[sql.COLUMNS.index("status")]) is str
    back = row_to_prediction(row)
    assert back == p
    assert type(back.status) is Status


def test_claim_order_is_priority_desc_then_id() -> None:
    """claim_order sorts what RETURNING gave back: priority desc, then oldest id."""
    rows = [
        Prediction(id=i, target="t", status=Status.RUNNING, created_at=0, priority=pr)
        for i, pr in [("b", 0), ("c", 5), ("a", 0)]
    ]
    assert [p.id for p in claim_order(rows)] == ["c", "a", "b"]


def test_list_query_builds_filters() -> None:
    """list_query adds only the filters given and pages by id, newest first; without a
    kind it lists top-level predictions and runs only."""
    text, params = sql.list_query(target="t", status=Status.QUEUED, after_id="z", limit=5)
    assert "target = :target AND status = :status AND id < :after_id" in text
    assert text.endswith("ORDER BY id DESC LIMIT :limit")
    assert params == {"target": "t", "status": "queued", "after_id": "z", "limit": 5}
    bare, _ = sql.list_query(target=None, status=None, after_id=None, limit=1)
    assert "WHERE run_id IS NULL AND kind IN ('model', 'pipeline') ORDER BY" in bare
    jobs, params = sql.list_query(target=None, status=None, after_id=None, limit=1, kind=Kind.BATCH)
    assert "WHERE kind = 'batch' ORDER BY" in jobs and "kind" not in params


def test_check_idempotent_compares_hashes() -> None:
    """The same hash returns the existing row; another raises idempotency_conflict."""
    existing = Prediction(
        id="a",
        target="t",
        status=Status.QUEUED,
        created_at=0,
        idempotency_key="k",
        request_hash="h",
    )
    same = dataclasses.replace(existing, id="b")
    assert check_idempotent(existing, same) is existing
    with pytest.raises(Exception, match="different request") as info:
        check_idempotent(existing, dataclasses.replace(same, request_hash="other"))
    assert getattr(info.value, "code", None) == "idempotency_conflict"


def test_stats_from_rows_groups_per_target() -> None:
    """stats_from_rows folds (target, status, count, oldest id) rows into TargetStats;
    the oldest queued id dates the oldest queued prediction (UUIDv7 milliseconds)."""
    oldest = "01a23402-1875-7264-9b52-7b3fd281f725"
    rows = [("a", "queued", 2, oldest), ("a", "running", 1, None), ("b", "awaiting_input", 4, None)]
    stats = stats_from_rows(rows)
    assert stats == {
        "a": TargetStats(queued=2, running=1, oldest_queued_id=oldest),
        "b": TargetStats(awaiting_input=4),
    }
    assert stats["a"].oldest_queued_at == int("01a234021875", 16) / 1000
    assert stats["b"].oldest_queued_at is None
