"""Records as bytes and back: JSON Lines and CSV rows, in and out.

Why CSV cells become numbers only when they are JSON numbers: a model given a
row as a dict wants ``3.5``, not ``"3.5"``; but ``"007"`` (a zip code), ``"1e"``
or ``"nan"`` are not numbers anyone wrote as such, and ``int()``/``float()``
accept far more (``" 1_0 "``, ``"inf"``). So: the JSON number grammar, ints
within 64 bits (what orjson writes back), anything else stays a string, ``""``
included.

Why CSV output columns are the union of the outputs' keys (first seen first),
over the whole file: a model may leave a key out of some outputs, or add one
late (an ``error`` key on the 10,000th record); no value may be lost or land
under another column's name. A row has ``""`` where its output had no such key.
Each chunk names its own columns (``ChunkSummary.columns``); the assembler
writes the header of the union (:func:`union_columns`) once every chunk of the
file is done, and realigns a chunk whose columns differ (:func:`realigned`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any, Final

import orjson

#: a cell that reads as a JSON number (RFC 8259) becomes one
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_INT64: Final = 1 << 63
_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY


def parse_json(raw: bytes) -> Any:
    """A JSON Lines record; ValueError (with orjson's reason) when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def cell_value(cell: str) -> Any:
    """A CSV cell as a model sees it: an int or float if it is a JSON number, else the
    text (see the module docstring)."""
    match = _NUMBER.fullmatch(cell)
    if match is None:
        return cell
    if match.group(1) is None and match.group(2) is None:
        number = int(cell)
        return number if -_INT64 <= number < _INT64 else cell
    value = float(cell)
    return value if math.isfinite(value) else cell


def parse_csv_row(raw: bytes, header: list[str]) -> tuple[dict[str, Any], list[str]]:
    """A CSV record: ``(header -> value, the cells as read)``; ValueError when it is not
    UTF-8, not one valid row, or has another number of fields than the header."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8: {exc}") from None
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise ValueError(f"not a valid CSV row: {exc}") from None
    if len(rows) != 1:
        raise ValueError(f"not one CSV row but {len(rows)}")
    (cells,) = rows
    if len(cells) != len(header):
        raise ValueError(f"expected {len(header)} fields (as in the header), got {len(cells)}")
    return {name: cell_value(cell) for name, cell in zip(header, cells, strict=True)}, cells


def json_line(value: Any) -> bytes:
    """One JSON Lines record; TypeError when the value is not JSON-able."""
    return orjson.dumps(value, option=_OPTIONS) + b"\n"


def _cell_text(value: Any) -> str:
    """A value in a CSV cell: text as it is, nothing as empty, the rest as JSON
    (``true``, ``1.5``, ``{"a": 1}``); TypeError when it is not JSON-able."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value, option=_OPTIONS).decode()


def output_cells(output: Any) -> dict[str, str]:
    """An output as named CSV cells: a dict by its keys, in order; a list as
    ``output_0..n``; anything else as ``output``. Arrays (``tolist``) read as lists."""
    if not isinstance(output, str | bytes) and callable(getattr(output, "tolist", None)):
        output = output.tolist()
    if isinstance(output, dict):
        return {str(key): _cell_text(value) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return {f"output_{i}": _cell_text(value) for i, value in enumerate(output)}
    return {"output": _cell_text(output)}


def _output_columns(rows: list[tuple[list[str], dict[str, str]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, cells in rows:
        seen.update(dict.fromkeys(cells))
    return list(seen)


def _renamed(name: str, taken: set[str]) -> str:
    """An output column named like an input column (join=input) gets an ``output.``
    prefix, so that no two columns of a row share a name."""
    while name in taken:
        name = f"output.{name}"
    return name


def csv_rows(
    inputs: list[str], rows: list[tuple[list[str], dict[str, str]]]
) -> tuple[bytes, list[str]]:
    """The CSV rows (no header) of ``(input cells, output cells)`` pairs and their
    column names: the input columns (``inputs``, empty unless joined), then the
    outputs' (see the module docstring)."""
    names = _output_columns(rows)
    taken = set(inputs)
    renamed = []
    for name in names:
        column = _renamed(name, taken)
        taken.add(column)
        renamed.append(column)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for input_cells, cells in rows:
        writer.writerow([*input_cells, *(cells.get(name, "") for name in names)])
    return buffer.getvalue().encode(), [*inputs, *renamed]


def union_columns(chunks: list[list[str]]) -> list[str]:
    """The columns of a whole file: every chunk's, in the order first seen."""
    seen: dict[str, None] = {}
    for columns in chunks:
        seen.update(dict.fromkeys(columns))
    return list(seen)


def realigned(data: bytes, columns: list[str], union: list[str]) -> bytes:
    """A chunk's CSV rows (written under ``columns``) under the file's ``union`` of
    columns: each cell moved to its column, ``""`` where the chunk had none."""
    if columns == union:
        return data
    where = [columns.index(name) if name in columns else -1 for name in union]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in csv.reader(io.StringIO(data.decode())):
        writer.writerow([row[i] if i >= 0 else "" for i in where])
    return buffer.getvalue().encode()


def csv_header(columns: list[str]) -> bytes:
    """The header line of a CSV output, quoted as its rows are."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue().encode()


__all__ = [
    "cell_value",
    "csv_header",
    "csv_rows",
    "json_line",
    "output_cells",
    "parse_csv_row",
    "parse_json",
    "realigned",
    "union_columns",
]
