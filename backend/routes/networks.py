"""Stored networks: upload, list, read, rename/tag, delete, download weights."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from sqlalchemy import or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .. import checks, networks, store, uploads, visibility, writes
from ..auth import Principal, current_user
from ..cache import VersionedCache
from ..config import get_settings
from ..db import read
from ..errors import Invalid, NotFound, TooLarge
from ..models import Network
from ..schemas import (NetworkId, NetworkOut, NetworkPatch, NetworkSummary, dump_json, filter_query,
                       json_response)

router = APIRouter(prefix="/networks", tags=["networks"])
log = logging.getLogger("toroid.api")


NETWORKS = Network.__table__
SUMMARY_COLUMNS = [c for c in NETWORKS.c if c.name != "history"]


def _list_rows(conn: Connection, user: Principal, dataset: str | None, kind: str | None, tag: str | None,
               q: str | None, limit: int, offset: int) -> list:
    stmt = select(*SUMMARY_COLUMNS).order_by(NETWORKS.c.id)
    if not user.is_admin:
        stmt = stmt.where(or_(NETWORKS.c.visibility == "lab", NETWORKS.c.owner == user.name))
        hidden = visibility.hidden_by_sources(conn, user)
        if hidden:
            stmt = stmt.where(NETWORKS.c.id.not_in(sorted(hidden)))
    if dataset:
        stmt = stmt.where(NETWORKS.c.dataset == dataset)
    if kind:
        stmt = stmt.where(NETWORKS.c.architecture["kind"].as_string() == kind)
    if q:
        stmt = stmt.where(NETWORKS.c.name.contains(q, autoescape=True))
    if not tag:
        return list(conn.execute(stmt.limit(limit).offset(offset)))
    # tags are a JSON list, which the databases search differently: filter here, in id order
    out = []
    for row in conn.execute(stmt):
        if tag in (row.tags or []):
            if offset:
                offset -= 1
            elif len(out) < limit:
                out.append(row)
            else:
                break
    return out


LISTINGS = VersionedCache("networks")  # a dashboard lists often; the list changes seldom


def _list_json(conn: Connection, user: Principal, *filters) -> bytes:
    """The listing as JSON, from this process's cache while no network changed since it was made."""
    scope = "" if user.is_admin else user.name  # an admin sees all; others see lab networks and their own
    return LISTINGS.get(conn, (scope, *filters), lambda: dump_json(
        list[NetworkSummary], [row._asdict() for row in _list_rows(conn, user, *filters)]))


@router.get("", response_model=list[NetworkSummary])
async def list_networks(
    user: Principal = Depends(current_user),
    dataset: filter_query() = None,
    kind: filter_query("architecture kind, e.g. mlp") = None,
    tag: filter_query() = None,
    q: filter_query("text contained in the name") = None,
    limit: int = Query(500, ge=1, le=5000),
    offset: int = Query(0, ge=0, le=2**31 - 1, description="matching networks to skip (in id order)"),
) -> Response:
    """Networks you may read, in id order, without their training curves (read one network for its
    ``history``)."""
    return Response(await read(_list_json, user, dataset, kind, tag, q, limit, offset), media_type="application/json")


@router.post("", response_model=NetworkOut, status_code=201)
async def upload_network(
    request: Request,
    file: UploadFile = File(..., description="weights: .safetensors, or a .pt/.pth state_dict"),
    meta: str = Form(..., description='JSON: {"name", "architecture", "dataset", "tags"?, "visibility"?}'),
    user: Principal = Depends(current_user),
    idempotency_key: str | None = Header(None, max_length=200, description=writes.KEY_HELP),
) -> Response:
    """Store a network. With an ``Idempotency-Key`` header a repeat of the upload is answered with the
    first answer and stores nothing."""
    limit = get_settings().max_upload_bytes
    blob = await file.read(limit + 1)
    if len(blob) > limit:
        raise TooLarge(f"the weights file is larger than the limit of {limit} bytes")
    filename = file.filename or ""
    if len(filename) > 255 or "\x00" in filename:
        raise Invalid("the weights file's name must be at most 255 characters, without NUL")

    async def work() -> tuple[Response, int]:
        # parsing and building the model are CPU work: in the checks' pool (backend/checks.py, bounded per
        # user), neither on the event loop nor on the API's threads; then storing, on an API thread
        prepared = await checks.upload(user.name, meta, filename, blob)
        network_id = await writes.write(uploads.store_prepared, user, prepared, filename)
        return json_response(NetworkOut, await read(_network_row, network_id), status_code=201), network_id

    async def replay(status: int, network_id: int) -> Response:  # the network as the caller may read it now
        row = await read(_readable_row, network_id, user)
        if row is None:
            raise NotFound(f"network {network_id} (made by the first request with this Idempotency-Key) does not exist")
        return json_response(NetworkOut, row, status_code=status)

    fp = writes.fingerprint("POST /api/networks", meta, filename, writes.fingerprint(blob))
    return await writes.idempotent(request, user.name, writes.request_key(request), fp, work, replay)


def _network_row(conn: Connection, network_id: int):
    return conn.execute(select(NETWORKS).where(NETWORKS.c.id == network_id)).first()


def _readable_row(conn: Connection, network_id: int, user: Principal):
    """The network's row, or None when ``user`` may not read it (or a network it was made from); one query."""
    stmt = select(NETWORKS).where(NETWORKS.c.id == network_id)
    if not user.is_admin:
        stmt = stmt.where(~visibility.source_hidden(NETWORKS.c.id, user))
    row = conn.execute(stmt).first()
    return row if row is not None and user.can_read(row) else None


@router.get("/{network_id}", response_model=NetworkOut)
async def read_network(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    row = await read(_readable_row, network_id, user)
    if row is None:
        raise NotFound(f"network {network_id} does not exist")
    return json_response(NetworkOut, row)


@router.patch("/{network_id}", response_model=NetworkOut)
async def patch_network(network_id: NetworkId, patch: NetworkPatch, user: Principal = Depends(current_user)) -> Response:
    await writes.write(_patch, network_id, patch, user)
    # read after the commit on a read connection (repeated on a fresh one if the database dropped it):
    # a committed change is answered as one
    return json_response(NetworkOut, await read(_network_row, network_id))


def _patch(db: Session, network_id: int, patch: NetworkPatch, user: Principal) -> None:
    net = networks.readable(db, network_id, user, write=True)
    for key, value in patch.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(net, key, value)
    if patch.visibility == "private":  # what was made from it follows it
        db.flush()
        networks.make_derived_private(db, network_id)
    db.commit()


@router.delete("/{network_id}", status_code=204)
async def delete_network(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    h = await writes.write(networks.delete_network, network_id, user)
    # after the commit, on a read connection (repeated on a fresh one if the database dropped it): the
    # deletion is answered as done, and its weights file goes when no other network shares it
    if await read(_weights_unused, h):
        await run_in_threadpool(store.remove, h)
    return Response(status_code=204)


def _weights_unused(conn: Connection, h: str) -> bool:
    return conn.execute(select(NETWORKS.c.id).where(NETWORKS.c.weights_hash == h).limit(1)).first() is None


@router.get("/{network_id}/weights")
async def download_weights(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    row = await read(_readable_row, network_id, user)
    if row is None:
        raise NotFound(f"network {network_id} does not exist")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in row.name)[:80] or "network"
    return Response(await run_in_threadpool(store.read_bytes, row.weights_hash), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{safe}-{row.id}.safetensors"'})
