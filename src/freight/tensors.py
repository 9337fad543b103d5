"""Tensors: what a model of the Open Inference Protocol takes and returns.

A model declares its tensors (``inputs`` / ``outputs``: :class:`Tensor` names,
datatypes, shapes with ``-1`` for any size), or only annotates ``predict`` with numpy
arrays (``np.ndarray``, or ``dict[str, np.ndarray]``); either makes it a *tensor
model* (input kind ``tensors``). It gets its inputs as numpy arrays (one array, or a
dict by name) and returns an array, a tuple of arrays (in declared order) or a dict.

The wire format is the Open Inference Protocol's (KServe v2): a JSON request
``{"inputs": [{"name", "datatype", "shape", "data"}], "outputs": [...], "parameters"}``,
or the *binary tensor extension*: the same JSON header (``Inference-Header-Content-
Length`` bytes) followed by the raw tensor data of each input whose
``parameters.binary_data_size`` says so (``BYTES`` elements each a little-endian
``uint32`` length and the bytes). The answer is alike: outputs as JSON ``data``, or
binary for those the request asked so (``parameters.binary_data``, or the request's
``binary_data_output``).

Two halves: the API checks a request against a model's declaration without numpy
(:func:`parse_request`, :func:`check_request`) and stores it as a *frame* (the header
length as 4 bytes, the header, the binary data: :data:`FRAME_TYPE`), or as JSON; the
runner turns it into arrays and the model's return into the answer
(:func:`decode_request`, :func:`encode_response`: numpy is imported there only).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from freight.errors import InvalidRequestError, ModelDefinitionError

#: a stored input or output in the binary extension's layout, its header's length first
FRAME_TYPE: Final = "application/vnd.freight.tensors"
_LENGTH = struct.Struct("<I")

#: each datatype's element size in bytes (None: BYTES, length-prefixed elements) and
#: its numpy dtype (little-endian)
DATATYPES: Final[dict[str, tuple[int | None, str]]] = {
    "BOOL": (1, "?"),
    "UINT8": (1, "<u1"),
    "UINT16": (2, "<u2"),
    "UINT32": (4, "<u4"),
    "UINT64": (8, "<u8"),
    "INT8": (1, "<i1"),
    "INT16": (2, "<i2"),
    "INT32": (4, "<i4"),
    "INT64": (8, "<i8"),
    "FP16": (2, "<f2"),
    "FP32": (4, "<f4"),
    "FP64": (8, "<f8"),
    "BYTES": (None, "O"),
}


@dataclass(frozen=True, slots=True)
class Tensor:
    """One declared input or output: its name, datatype (``FP32``, ``INT64``,
    ``BYTES``, … of :data:`DATATYPES`) and shape (``-1``: any size on that axis)."""

    name: str
    datatype: str
    shape: tuple[int, ...] = field(default=())

    def __init__(self, name: str, datatype: str, shape: Sequence[int] = ()) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "datatype", datatype)
        object.__setattr__(self, "shape", tuple(shape))
        if not name or not isinstance(name, str):
            raise ModelDefinitionError("a tensor needs a name")
        if datatype not in DATATYPES:
            raise ModelDefinitionError(
                f"tensor {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
            )
        if any(not isinstance(d, int) or d < -1 for d in self.shape):
            raise ModelDefinitionError(f"tensor {name!r}: a shape holds sizes >= 0, or -1")

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether a tensor of ``shape`` is one of this declaration (empty: any shape)."""
        if not self.shape:
            return True
        return len(shape) == len(self.shape) and all(
            d == -1 or d == s for d, s in zip(self.shape, shape, strict=True)
        )


def _invalid(message: str, **detail: Any) -> InvalidRequestError:
    return InvalidRequestError(message, code="invalid_tensor", **detail)


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flat(data: Any) -> list[Any]:
    """JSON tensor data, row-major: nested lists flattened."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _bytes_elements(raw: memoryview, name: str) -> list[bytes]:
    """The elements of a binary BYTES tensor (each a uint32 length, then its bytes)."""
    out: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise _invalid(f"input {name!r}: a BYTES element is cut short", tensor=name)
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + size > len(raw):
            raise _invalid(f"input {name!r}: a BYTES element is cut short", tensor=name)
        out.append(bytes(raw[at : at + size]))
        at += size
    return out


@dataclass(frozen=True, slots=True)
class RequestTensor:
    """One input of a request: its JSON entry and, when binary, its raw bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any] | None  # JSON data, flat
    raw: memoryview | None  # binary data


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A parsed inference request: its header (JSON), inputs and binary part."""

    header: dict[str, Any]
    inputs: tuple[RequestTensor, ...]
    binary: bytes = b""

    @property
    def id(self) -> str | None:
        value = self.header.get("id")
        return None if value is None else str(value)

    @property
    def has_binary(self) -> bool:
        return bool(self.binary)

    def requested_outputs(self) -> list[str] | None:
        outputs = self.header.get("outputs")
        return None if outputs is None else [str(o["name"]) for o in outputs]

    def frame(self) -> bytes:
        """The request as stored: the header's length (4 bytes), header, binary."""
        header = orjson.dumps(self.header)
        return _LENGTH.pack(len(header)) + header + self.binary


def _entries(header: Any, key: str) -> list[dict[str, Any]]:
    entries = header.get(key) if isinstance(header, dict) else None
    if entries is None and key == "outputs":
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _invalid(f"the request's {key!r} must be a list of objects")
    for entry in entries:
        if not isinstance(entry.get("name"), str):
            raise _invalid(f"every entry of {key!r} needs a name")
        if entry.get("parameters") is not None and not isinstance(entry["parameters"], dict):
            raise _invalid(f"{key} {entry['name']!r}: parameters must be an object")
    return entries


def parse_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """A request as the API received it (``header_length``: the binary extension's
    ``Inference-Header-Content-Length``; None: the body is all JSON). 400
    ``invalid_tensor`` (or ``invalid_json``) naming the fault."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise _invalid(
            f"Inference-Header-Content-Length {header_length} does not fit a body of "
            f"{len(body)} bytes"
        )
    text = body if header_length is None else body[:header_length]
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the inference header is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(header, dict):
        raise _invalid("the inference request must be a JSON object")
    binary = b"" if header_length is None else body[header_length:]
    view = memoryview(binary)
    at = 0
    inputs: list[RequestTensor] = []
    for entry in _entries(header, "inputs"):
        tensor = _input(entry, view, at)
        at += len(tensor.raw) if tensor.raw is not None else 0
        inputs.append(tensor)
    if at != len(view):
        raise _invalid(f"{len(view) - at} bytes of binary data belong to no input")
    if not inputs:
        raise _invalid("the request has no inputs")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise _invalid("two inputs have the same name")
    for entry in _entries(header, "outputs"):
        if "classification" in (entry.get("parameters") or {}):
            raise _invalid("the classification extension is not supported", tensor=entry["name"])
    return InferRequest(header, tuple(inputs), binary)


def _input(entry: dict[str, Any], view: memoryview, at: int) -> RequestTensor:
    """One input of a request; its binary data (if any) starts at ``at`` of ``view``."""
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if datatype not in DATATYPES:
        raise _invalid(f"input {name!r}: unknown datatype {datatype!r}", tensor=name)
    if not isinstance(shape, list) or any(
        not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape
    ):
        raise _invalid(f"input {name!r}: shape must be a list of sizes >= 0", tensor=name)
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if "data" in entry:
            raise _invalid(f"input {name!r} has both data and binary_data_size", tensor=name)
        if not isinstance(size, int) or size < 0 or at + size > len(view):
            raise _invalid(
                f"input {name!r}: binary_data_size {size} does not fit the body", tensor=name
            )
        raw = view[at : at + size]
        _check_binary(name, datatype, tuple(shape), raw)
        return RequestTensor(name, datatype, tuple(shape), None, raw)
    if "data" not in entry:
        raise _invalid(f"input {name!r} has no data", tensor=name)
    data = _flat(entry["data"])
    if len(data) != _count(shape):
        raise _invalid(
            f"input {name!r}: {len(data)} elements for shape {shape} ({_count(shape)} expected)",
            tensor=name,
        )
    return RequestTensor(name, datatype, tuple(shape), data, None)


def _check_binary(name: str, datatype: str, shape: tuple[int, ...], raw: memoryview) -> None:
    itemsize = DATATYPES[datatype][0]
    count = _count(shape)
    if itemsize is None:
        found = len(_bytes_elements(raw, name))
        if found != count:
            raise _invalid(
                f"input {name!r}: {found} BYTES elements for shape {list(shape)}", tensor=name
            )
    elif len(raw) != count * itemsize:
        raise _invalid(
            f"input {name!r}: {len(raw)} bytes for {count} {datatype} elements "
            f"({count * itemsize} expected)",
            tensor=name,
        )


def check_request(
    request: InferRequest, inputs: Sequence[Tensor], outputs: Sequence[Tensor]
) -> None:
    """The request against a model's declaration (none declared: anything goes): every
    declared input given with its datatype and a shape it allows, nothing else, and
    only declared outputs asked for. 400 ``invalid_tensor``."""
    if inputs:
        declared = {t.name: t for t in inputs}
        given = {t.name for t in request.inputs}
        missing = sorted(set(declared) - given)
        if missing:
            raise _invalid(f"missing input(s) {', '.join(missing)}", tensors=missing)
        for tensor in request.inputs:
            want = declared.get(tensor.name)
            if want is None:
                raise _invalid(f"the model has no input {tensor.name!r}", tensor=tensor.name)
            if tensor.datatype != want.datatype:
                raise _invalid(
                    f"input {tensor.name!r} is {want.datatype}, not {tensor.datatype}",
                    tensor=tensor.name,
                )
            if not want.fits(tensor.shape):
                raise _invalid(
                    f"input {tensor.name!r}: shape {list(tensor.shape)} is not {list(want.shape)}",
                    tensor=tensor.name,
                )
    asked = request.requested_outputs()
    if outputs and asked:
        unknown = sorted(set(asked) - {t.name for t in outputs})
        if unknown:
            raise _invalid(f"the model has no output(s) {', '.join(unknown)}", tensors=unknown)


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """A frame's header length and its body (header then binary), as the protocol
    sends them."""
    if len(frame) < 4:
        raise ValueError("a tensor frame is at least 4 bytes")
    (length,) = _LENGTH.unpack_from(frame)
    return length, frame[4:]


# -- the runner's half: numpy ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Encoded:
    """An output already in its final bytes, with their content type (a frame)."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a request asks of the answer: which outputs (None: all), which binary."""

    id: str | None = None
    names: tuple[str, ...] | None = None
    binary: Mapping[str, bool] = field(default_factory=dict)
    binary_default: bool = False

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def wanted_of(header: Mapping[str, Any]) -> Wanted:
    outputs = header.get("outputs") or []
    binary = {
        str(o["name"]): bool((o.get("parameters") or {}).get("binary_data"))
        for o in outputs
        if "binary_data" in (o.get("parameters") or {})
    }
    default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    names = tuple(str(o["name"]) for o in outputs) or None
    request_id = header.get("id")
    return Wanted(None if request_id is None else str(request_id), names, binary, default)


def decode_request(
    data: bytes | dict[str, Any], content_type: str
) -> tuple[dict[str, Any], Wanted]:
    """A stored request (a frame, or its JSON) as numpy arrays by name, and what it
    asks of the answer."""
    import numpy as np

    if isinstance(data, dict):
        request = parse_request(orjson.dumps(data))
    elif content_type.split(";")[0].strip() == FRAME_TYPE:
        length, body = split_frame(data)
        request = parse_request(body, length)
    else:
        request = parse_request(data)
    arrays: dict[str, Any] = {}
    for tensor in request.inputs:
        itemsize, dtype = DATATYPES[tensor.datatype]
        if tensor.raw is not None and itemsize is None:
            values: Any = np.array(_bytes_elements(tensor.raw, tensor.name) or [], dtype=object)
        elif tensor.raw is not None:
            values = np.frombuffer(tensor.raw, dtype=dtype).copy()
        elif itemsize is None:
            values = np.array(
                [v.encode() if isinstance(v, str) else v for v in tensor.data or []], dtype=object
            )
        else:
            values = np.array(tensor.data, dtype=dtype)
        arrays[tensor.name] = values.reshape(tensor.shape)
    return arrays, wanted_of(request.header)


def _datatype_of(array: Any) -> str:
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return "BOOL"
    if kind in "OSU":
        return "BYTES"
    names = {"u": "UINT", "i": "INT", "f": "FP"}
    if kind not in names:
        raise TypeError(f"an output of dtype {array.dtype} has no Open Inference datatype")
    return f"{names[kind]}{size * 8}"


def _named(output: Any, declared: Sequence[Tensor]) -> dict[str, Any]:
    """A model's return as arrays by name: a dict as it is, a tuple in declared order,
    one array the one output (``OUTPUT0`` when none is declared)."""
    if isinstance(output, Mapping):
        return dict(output)
    names = [t.name for t in declared]
    if isinstance(output, tuple):
        names = names or [f"OUTPUT{n}" for n in range(len(output))]
        if len(names) != len(output):
            raise TypeError(f"predict returned {len(output)} outputs for {len(names)} declared")
        return dict(zip(names, output, strict=True))
    if len(names) > 1:
        raise TypeError(f"predict returned one output for {len(names)} declared: {names}")
    return {(names or ["OUTPUT0"])[0]: output}


def _bytes_data(array: Any) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(raw)) + raw)
    return b"".join(parts)


def encode_response(
    output: Any, declared: Sequence[Tensor], wanted: Wanted, model_name: str
) -> dict[str, Any] | Encoded:
    """A model's return as the protocol's answer: JSON when no output is asked in
    binary, else a frame. TypeError (the prediction's ``output_error``) for a return
    that does not fit the declaration."""
    import numpy as np

    arrays = _named(output, declared)
    kinds = {t.name: t for t in declared}
    unknown = sorted(set(arrays) - set(kinds)) if kinds else []
    if unknown:
        raise TypeError(f"predict returned undeclared output(s) {', '.join(unknown)}")
    names = list(wanted.names) if wanted.names is not None else list(arrays)
    entries: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for name in names:
        if name not in arrays:
            raise TypeError(f"predict returned no output {name!r}")
        want = kinds.get(name)
        array = np.asarray(arrays[name])
        if want is not None and want.datatype != "BYTES":
            array = array.astype(DATATYPES[want.datatype][1], copy=False)
        datatype = want.datatype if want is not None else _datatype_of(array)
        if want is not None and not want.fits(array.shape):
            raise TypeError(
                f"output {name!r} has shape {list(array.shape)}, not {list(want.shape)}"
            )
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if wanted.is_binary(name):
            raw = (
                _bytes_data(array)
                if datatype == "BYTES"
                else np.ascontiguousarray(array, dtype=DATATYPES[datatype][1]).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [
                v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)
            ]
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if wanted.id is not None:
        answer["id"] = wanted.id
    answer["outputs"] = entries
    if not binary:
        return answer
    header = orjson.dumps(answer)
    return Encoded(_LENGTH.pack(len(header)) + header + b"".join(binary), FRAME_TYPE)


def takes_tensors(annotation: Any) -> bool:
    """Whether an annotation asks for numpy arrays (``np.ndarray`` or a mapping of
    them), told without importing numpy."""
    import typing

    origin = typing.get_origin(annotation) or annotation
    if getattr(origin, "__module__", "") == "numpy" and getattr(origin, "__name__", "") in (
        "ndarray",
        "NDArray",
    ):
        return True
    args = typing.get_args(annotation)
    return origin in (dict, Mapping) and len(args) == 2 and takes_tensors(args[1])


__all__ = [
    "DATATYPES",
    "FRAME_TYPE",
    "Encoded",
    "InferRequest",
    "RequestTensor",
    "Tensor",
    "Wanted",
    "check_request",
    "decode_request",
    "encode_response",
    "parse_request",
    "split_frame",
    "takes_tensors",
    "wanted_of",
]
