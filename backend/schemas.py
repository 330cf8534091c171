"""Request and response bodies of the REST API (pydantic), shared by the routes."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from functools import lru_cache

from fastapi import Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import Annotated

MAX_ID = 2**31 - 1
# Ids in URL paths: positive and within what every database's integer column holds.
NetworkId = Annotated[int, Path(ge=1, le=MAX_ID, description="network id")]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]
ResultId = Annotated[int, Path(ge=1, le=MAX_ID, description="result id")]


class NetworkMeta(BaseModel):
    """The ``meta`` JSON part of a network upload."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    architecture: dict[str, Any]
    dataset: str = "digits"
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=50)
    visibility: Literal["private", "lab"] = "lab"


class NetworkPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=50)
    visibility: Literal["private", "lab"] | None = None
    note: str | None = Field(default=None, max_length=4000)


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
    created_at: datetime


class NetworkOut(NetworkSummary):
    history: list[dict[str, Any]]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)
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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = None  # while queued: 1 = the next job of its queue to start
    eta_seconds: float | None = None  # while running: seconds still needed, from its progress rate


class ResultOut(BaseModel):
    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


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
