"""The contract between freight and a user's model: ``freight.Model``.

A model implements ``load()`` (once per replica) and either ``predict(input)``
or ``predict_batch(inputs)``. The input type follows the annotation of the
first parameter: ``dict``/``list`` (parsed JSON), ``bytes``, ``pathlib.Path``
(a file on local disk — the stored object itself on the local backend),
:class:`Payload` (all of it), or numpy arrays (``np.ndarray``, ``dict[str,
np.ndarray]``: a *tensor model*, served by the Open Inference Protocol too; so is a
model that declares its tensors, ``inputs`` and ``outputs``: :mod:`freight.tensors`).
Outputs are JSON-able values, ``bytes`` or :class:`File` (a tensor model's: arrays).

While ``predict`` runs, :func:`context` is the prediction's
:class:`PredictionContext` (its id, attempt, deadline, and where it comes from:
a pipeline step, a batch job's chunk); while ``predict_batch`` runs,
:func:`contexts` holds one per input, in input order.

This module must stay import-light: runner processes import it before the
user's model, and must not pay for the web stack.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from freight.errors import ModelDefinitionError
from freight.streaming import OUTPUTS
from freight.tensors import Tensor, takes_tensors


@dataclass(frozen=True, slots=True)
class Batching:
    """Dynamic batching: a free replica takes up to ``max_size`` queued predictions,
    waiting at most ``max_wait_ms`` for more to arrive."""

    max_size: int = 1
    max_wait_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ModelDefinitionError("batching.max_size must be >= 1")
        if self.max_wait_ms < 0:
            raise ModelDefinitionError("batching.max_wait_ms must be >= 0")


@dataclass(frozen=True, slots=True)
class Replicas:
    """How many runner processes serve the model, and when the autoscaler changes that.

    ``min`` replicas are kept at all times (``0`` lets an idle model scale to zero;
    its first request then waits in the queue while a replica loads). Up to ``max``
    are started while the work per replica (queued + running) exceeds
    ``target_backlog``; one is removed after ``idle_s`` seconds in which the smaller
    count would have carried the work. See :mod:`freight.scaling.policy`.
    """

    min: int = 1
    max: int = 1
    target_backlog: int = 8
    idle_s: float = 300.0

    def __post_init__(self) -> None:
        if self.min < 0 or self.max < max(1, self.min):
            raise ModelDefinitionError("replicas need 0 <= min <= max and max >= 1")
        if self.target_backlog < 1:
            raise ModelDefinitionError("replicas.target_backlog must be >= 1")
        if not self.idle_s >= 0:  # also rejects NaN
            raise ModelDefinitionError("replicas.idle_s must be >= 0")


@dataclass(frozen=True, slots=True)
class Resources:
    """What one replica of the model needs from the node.

    ``gpus`` devices are given to each replica for itself (never shared with another
    replica); a model with ``gpus=0`` sees no GPU at all.
    """

    gpus: int = 0

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ModelDefinitionError("resources.gpus must be >= 0")


#: a Payload's ``json()`` has no value parsed in advance (see Payload.from_json)
_UNPARSED: Any = object()


class Payload:
    """A prediction's input as a file on local disk, with what is known about it.

    Or held in memory (:meth:`from_bytes`): a batch job hands each record of a chunk
    to a Payload model this way, because a file per record would cost more than
    the record. ``read_bytes``, ``json`` and ``open`` then never touch the disk;
    ``path`` writes the bytes to a file on first access (in ``temp_dir``; the
    runner passes a directory it removes after the chunk) and returns that file.
    """

    __slots__ = ("_data", "_parsed", "_path", "_temp_dir", "content_type", "size")

    def __init__(self, path: Path, content_type: str, size: int) -> None:
        self._path: Path | None = path
        self._data: bytes | None = None
        self._parsed: Any = _UNPARSED
        self._temp_dir: Path | None = None
        self.content_type = content_type
        self.size = size

    @classmethod
    def from_bytes(cls, data: bytes, content_type: str, *, temp_dir: Path | None = None) -> Payload:
        """An in-memory payload; its ``path`` is a file written lazily in ``temp_dir``
        (the system's temporary directory when None: the caller removes it)."""
        payload = cls.__new__(cls)
        payload._path, payload._data, payload._temp_dir = None, bytes(data), temp_dir
        payload._parsed = _UNPARSED
        payload.content_type, payload.size = content_type, len(data)
        return payload

    @classmethod
    def from_json(
        cls, data: bytes, value: Any, content_type: str, *, temp_dir: Path | None = None
    ) -> Payload:
        """:meth:`from_bytes` of a JSON document the caller has already parsed into
        ``value`` (a batch job's record: the runner parses each to check it): the first
        :meth:`json` returns ``value`` instead of parsing ``data`` again, later ones a
        fresh parse (a model may change what it got). Measured on B9 (30-feature
        records, ~900 bytes): the second parse was ~20 % of the runner's time."""
        payload = cls.from_bytes(data, content_type, temp_dir=temp_dir)
        payload._parsed = value
        return payload

    @property
    def path(self) -> Path:
        if self._path is None:
            import tempfile

            assert self._data is not None
            fd, name = tempfile.mkstemp(prefix="freight-payload-", dir=self._temp_dir)
            with open(fd, "wb") as f:
                f.write(self._data)
            self._path = Path(name)
        return self._path

    @property
    def in_memory(self) -> bool:
        """Whether the bytes are held here (``path`` may still write them out)."""
        return self._data is not None

    def read_bytes(self) -> bytes:
        return self._data if self._data is not None else self.path.read_bytes()

    def json(self) -> Any:
        if self._data is not None:
            value, self._parsed = self._parsed, _UNPARSED
            return json.loads(self._data) if value is _UNPARSED else value
        with self.path.open("rb") as f:
            return json.load(f)

    def open(self) -> typing.BinaryIO:
        if self._data is not None:
            import io

            return io.BytesIO(self._data)
        return self.path.open("rb")

    def __repr__(self) -> str:
        where = f"<{self.size} bytes in memory>" if self._path is None else repr(self._path)
        return f"Payload(path={where}, content_type={self.content_type!r}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Payload):
            return NotImplemented
        mine = self._data if self._data is not None else self._path
        theirs = other._data if other._data is not None else other._path
        return (mine, self.content_type, self.size) == (theirs, other.content_type, other.size)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaces


@dataclass(slots=True)
class File:
    """A file output. freight moves it into the object store (no copy on local disk)."""

    path: Path | str
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PredictionContext:
    """What a model may know about the prediction it is running.

    ``attempt`` counts from 1 and grows each time the prediction runs again after
    its runner or worker died (up to ``max_attempts``); ``deadline`` is the epoch
    second past which freight kills this attempt (the model's ``timeout_s`` from
    when the batch was handed to the replica). A pipeline step has ``run_id`` and
    ``step`` (and ``item_index`` under ``for_each``); a batch job's chunk has
    ``job_id``. The fields that do not apply are None.
    """

    prediction_id: str
    attempt: int = 1
    max_attempts: int = 1
    deadline: float = math.inf
    run_id: str | None = None
    step: str | None = None
    item_index: int | None = None
    job_id: str | None = None

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds left before the deadline (0 past it; inf without a deadline)."""
        return max(0.0, self.deadline - (time.time() if now is None else now))

    @property
    def last_attempt(self) -> bool:
        """Whether a crash now would fail the prediction ``attempts_exhausted``."""
        return self.attempt >= self.max_attempts


# The runner serves one batch at a time, so the running contexts are the process's
# (not a ContextVar): threads a model starts inside predict see them too.
_running: tuple[PredictionContext, ...] | None = None
_batch_call = False


def context() -> PredictionContext:
    """The context of the prediction ``predict`` is running.

    Raises ModelDefinitionError outside ``predict`` (in ``load``, say) and inside
    ``predict_batch``, which runs several predictions: use :func:`contexts` there.
    """
    if _running is None:
        raise ModelDefinitionError("freight.context() is only defined while predict() runs")
    if _batch_call:
        raise ModelDefinitionError(
            "freight.context() inside predict_batch(): use freight.contexts(), one per input"
        )
    return _running[0]


def contexts() -> list[PredictionContext]:
    """The contexts of the inputs ``predict_batch`` (or ``predict``: one) is running,
    in input order. Raises ModelDefinitionError outside a prediction."""
    if _running is None:
        raise ModelDefinitionError("freight.contexts() is only defined while a prediction runs")
    return list(_running)


@contextlib.contextmanager
def running(items: Sequence[PredictionContext], *, batch: bool = False) -> Iterator[None]:
    """Make ``items`` the running contexts for the duration (the runner calls this
    around every model call; a model's own tests may too). ``batch``: a
    ``predict_batch`` call, where :func:`context` refuses to pick one. No items:
    no prediction is running."""
    global _running, _batch_call
    before = _running, _batch_call
    _running, _batch_call = tuple(items) or None, batch
    try:
        yield
    finally:
        _running, _batch_call = before


class InputKind:
    JSON = "json"
    BYTES = "bytes"
    PATH = "path"
    PAYLOAD = "payload"
    TENSORS = "tensors"  # numpy arrays, from the Open Inference Protocol's request


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


class Model:
    """Subclass this to serve a model. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    batching: ClassVar[Batching] = Batching()
    replicas: ClassVar[Replicas] = Replicas()
    resources: ClassVar[Resources] = Resources()
    timeout_s: ClassVar[float | None] = None  # default: the max_run_s setting
    max_attempts: ClassVar[int | None] = None  # default: the max_attempts setting
    # a streaming model's (predict is a generator) output from its chunks:
    # "concat" (str or bytes end to end) or "list" (freight.streaming)
    stream_output: ClassVar[str] = "concat"
    # a tensor model's declared inputs and outputs (the Open Inference Protocol's
    # metadata; requests are checked against them): freight.Tensor(name, datatype, shape)
    inputs: ClassVar[Sequence[Tensor]] = ()
    outputs: ClassVar[Sequence[Tensor]] = ()

    def load(self) -> None:
        """Load weights; called once per replica before any prediction."""

    def predict(self, input: Any) -> Any:
        raise NotImplementedError

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        return [self.predict(x) for x in inputs]

    @classmethod
    def model_name(cls) -> str:
        return cls.name or _slug(cls.__name__)

    @classmethod
    def streams(cls) -> bool:
        """Whether ``predict`` is a generator function (sync or async): each value it
        yields is a chunk, streamed as it comes (:mod:`freight.streaming`)."""
        return inspect.isgeneratorfunction(cls.predict) or inspect.isasyncgenfunction(
            cls.predict
        )

    @classmethod
    def input_kind(cls) -> str:
        """What the model wants as input, from the annotation of predict/predict_batch
        (declared tensors: ``tensors``, whatever the annotation)."""
        if cls.inputs or cls.outputs:
            return InputKind.TENSORS
        return _kind_of(cls._input_annotation())

    @classmethod
    def _input_annotation(cls) -> Any:
        batch = cls.predict_batch is not Model.predict_batch
        method = cls.predict_batch if batch else cls.predict
        params = list(inspect.signature(method).parameters.values())[1:]
        if not params:
            raise ModelDefinitionError(f"{cls.__qualname__}: predict takes no input")
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # unresolvable annotations: treat as JSON
            hints = {}
        ann = hints.get(params[0].name, Any)
        if batch:
            args = typing.get_args(ann)
            ann = args[0] if args else Any
        return ann

    @classmethod
    def takes_one_array(cls) -> bool:
        """A tensor model whose input is one array (``np.ndarray``), not the inputs by
        name (a mapping, the default)."""
        ann = cls._input_annotation()
        return takes_tensors(ann) and (typing.get_origin(ann) or ann) not in (dict, Mapping)

    @classmethod
    def validate(cls) -> None:
        """Raise ModelDefinitionError when the class cannot be served."""
        if cls.predict is Model.predict and cls.predict_batch is Model.predict_batch:
            raise ModelDefinitionError(
                f"{cls.__qualname__} defines neither predict() nor predict_batch()",
                model=cls.__qualname__,
            )
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", cls.model_name()):
            raise ModelDefinitionError(
                f"model name {cls.model_name()!r} must be lowercase letters, digits, . _ -",
                model=cls.__qualname__,
            )
        cls.input_kind()
        _check_streaming(cls)
        for group, tensors in (("inputs", cls.inputs), ("outputs", cls.outputs)):
            if not all(isinstance(t, Tensor) for t in tensors):
                raise ModelDefinitionError(
                    f"{cls.__qualname__}.{group} must be freight.Tensor declarations",
                    model=cls.__qualname__,
                )
            names = [t.name for t in tensors]
            if len(set(names)) != len(names):
                raise ModelDefinitionError(
                    f"{cls.__qualname__}.{group}: two tensors have the same name",
                    model=cls.__qualname__,
                )


def _check_streaming(cls: type[Model]) -> None:
    """A streaming model runs one prediction at a time (its chunks are that prediction's)
    and says how its chunks make its output."""
    if cls.stream_output not in OUTPUTS:
        raise ModelDefinitionError(
            f"{cls.__qualname__}.stream_output must be one of {sorted(OUTPUTS)}, "
            f"not {cls.stream_output!r}",
            model=cls.__qualname__,
        )
    if not cls.streams():
        return
    if cls.predict_batch is not Model.predict_batch or cls.batching.max_size != 1:
        raise ModelDefinitionError(
            f"{cls.__qualname__} streams (predict is a generator): it runs one prediction "
            "at a time, so it defines no predict_batch and keeps batching.max_size 1",
            model=cls.__qualname__,
        )


def _kind_of(ann: Any) -> str:
    origin = typing.get_origin(ann) or ann
    if origin is bytes:
        return InputKind.BYTES
    if isinstance(origin, type) and issubclass(origin, Path):
        return InputKind.PATH
    if origin is Payload:
        return InputKind.PAYLOAD
    if takes_tensors(ann):
        return InputKind.TENSORS
    return InputKind.JSON
