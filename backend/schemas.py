"""Request and response bodies of the REST API (pydantic), shared by the routes."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from functools import lru_cache

from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, computed_field
from pydantic_core import PydanticCustomError
from typing_extensions import Annotated

from workers.landscape.nets import short_name

MAX_ID = 2**31 - 1
# Ids in URL paths: positive and within what every database's integer column holds.
NetworkId = Annotated[int, Path(ge=1, le=MAX_ID, description="network id")]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]
ResultId = Annotated[int, Path(ge=1, le=MAX_ID, description="result id")]


# ---- bounded input: every string has a length limit and no NUL (PostgreSQL refuses NULs in text and
# JSON); free-form JSON (architectures, options, job params) is bounded in depth, size and string length.
# These errors are answered 400 (backend.app), before any work.

BAD_INPUT = "toroid_bad_input"  # the error type the app answers with 400
MAX_DEPTH, MAX_NODES, MAX_STRING, MAX_KEY = 8, 10_000, 1000, 100


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError(BAD_INPUT, "NUL characters are not allowed in text")
    return value


def bounded_json(value: Any) -> Any:
    """``value`` (parsed JSON) within MAX_DEPTH levels, MAX_NODES values, strings of at most MAX_STRING
    characters and keys of at most MAX_KEY, with no NUL anywhere."""
    nodes = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise PydanticCustomError(BAD_INPUT, f"more than {MAX_NODES} values in one JSON object")
        if depth > MAX_DEPTH:
            raise PydanticCustomError(BAD_INPUT, f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if len(item) > MAX_STRING:
                raise PydanticCustomError(BAD_INPUT, f"a string longer than {MAX_STRING} characters")
            no_nul(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or len(key) > MAX_KEY:
                    raise PydanticCustomError(BAD_INPUT, f"a key longer than {MAX_KEY} characters")
                no_nul(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return value


def text(max_length: int, min_length: int = 0) -> Any:
    """A string of ``min_length`` to ``max_length`` characters without NUL."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length), AfterValidator(no_nul)]


def _no_nul_or_none(value: str | None) -> str | None:
    return value if value is None else no_nul(value)


def filter_query(description: str | None = None, max_length: int = 200) -> Any:
    """An optional query-string filter: bounded, no NUL."""
    return Annotated[str | None, Query(max_length=max_length, description=description), AfterValidator(_no_nul_or_none)]


def _utc(value: datetime | None) -> datetime | None:
    """Times are UTC: SQLite gives them back without a zone, PostgreSQL and a fresh row with one."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


UTCTime = Annotated[datetime, AfterValidator(_utc)]

Name = text(200, 1)
Tag = text(100, 1)
TensorName = text(1000)
JSONObject = Annotated[dict[str, Any], AfterValidator(bounded_json)]


class NetworkMeta(BaseModel):
    """The ``meta`` JSON part of a network upload."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    architecture: JSONObject
    dataset: text(100, 1) = "digits"
    dataset_options: JSONObject = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    visibility: Literal["private", "lab"] = "lab"
    keys: dict[TensorName, TensorName] = Field(default_factory=dict, max_length=10000,
                                               description="exact tensor names of the file -> the architecture's")
    rename: dict[TensorName, TensorName] = Field(default_factory=dict, max_length=100,
                                                 description="substrings replaced in every tensor name, in order")


class NetworkPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    tags: list[Tag] | None = Field(default=None, max_length=50)
    visibility: Literal["private", "lab"] | None = None
    note: text(4000) | None = None


class NetworkSummary(BaseModel):
    """A network as listed: everything but its training curve (read one network for ``history``)."""
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    owner: str
    visibility: str
    architecture: dict[str, Any]
    dataset: str
    dataset_options: dict[str, Any]
    source: dict[str, Any]
    tags: list[str]
    note: str = ""
    train_error: float | None
    test_error: float | None
    train_loss: float | None
    test_loss: float | None
    weights_hash: str
    n_params: int
    created_at: UTCTime

    @computed_field
    @property
    def architecture_label(self) -> str:
        """The architecture's short name (workers.landscape.nets.short_name), as the dashboard and CLI show it."""
        return short_name(self.architecture)


class NetworkOut(NetworkSummary):
    history: list[dict[str, Any]]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: text(40)
    params: JSONObject = Field(default_factory=dict)
    visibility: Literal["private", "lab"] | None = None  # default: private if any input network is


class JobOut(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    inputs: list[int]
    status: str
    progress: float
    message: str
    error: str | None
    owner: str
    visibility: str
    cached: bool
    cached_from: int | None
    result_id: int | None
    result: dict[str, Any] | None = None
    created_at: UTCTime
    started_at: UTCTime | None
    finished_at: UTCTime | None
    queue: str | None = None  # "interactive" or "batch"
    cost: float | None = None  # the kind's estimate, in FLOPs
    queue_position: int | None = None  # while queued: 1 = the next job of its queue to start
    starts_in_seconds: float | None = None  # while queued: when it should start (its queue's running jobs' ETAs
    # and the costs of the jobs before it; None while its queue has no job running, or a duration is unknown)
    eta_seconds: float | None = None  # while running: seconds still needed (progress rate, else cost)

    @computed_field
    @property
    def architecture_label(self) -> str | None:
        """A train job's architecture by its short name (nets.short_name); None for other kinds."""
        spec = self.params.get("architecture") if self.kind == "train" else None
        return short_name(spec) if isinstance(spec, dict) else None


class ResultOut(BaseModel):
    id: int
    kind: str
    data: dict[str, Any]
    created_at: UTCTime


@lru_cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def dump_json(schema: Any, data: Any) -> bytes:
    """``data`` (dicts, mappings or objects) validated against ``schema`` and written as JSON by
    pydantic-core: the fast path of the hot reads. Their routes still declare ``schema`` as their
    response_model, which the OpenAPI description shows."""
    adapter = _adapter(schema)
    return adapter.dump_json(adapter.validate_python(data, from_attributes=True))


def json_response(schema: Any, data: Any, status_code: int = 200) -> Response:
    return Response(dump_json(schema, data), status_code=status_code, media_type="application/json")
