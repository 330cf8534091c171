"""Stored networks: upload, list, read, rename/tag, delete, download weights."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Header, HTTPException, Query, Request, Response, UploadFile
from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from workers.landscape import data, nets

from .. import checks, jobs, networks, store, writes
from ..auth import Principal, current_user
from ..cache import VersionedCache
from ..config import get_settings
from ..db import new_session, read
from ..models import Job, Network
from ..schemas import (NetworkId, NetworkMeta, NetworkOut, NetworkPatch, NetworkSummary, dump_json, filter_query,
                       json_response)
from ..writes import committed_rows

router = APIRouter(prefix="/networks", tags=["networks"])
log = logging.getLogger("toroid.api")


def get_or_404(db: Session, network_id: int, user: Principal, write: bool = False) -> Network:
    net = db.get(Network, network_id)
    if net is None or not user.can_read(net):  # a private network of someone else does not exist for you
        raise HTTPException(404, f"network {network_id} does not exist")
    if write and not user.can_write(net):
        raise HTTPException(403, f"network {network_id} belongs to {net.owner}; only its owner or an admin may change it")
    return net


NETWORKS = Network.__table__
SUMMARY_COLUMNS = [c for c in NETWORKS.c if c.name != "history"]


def _list_rows(conn: Connection, user: Principal, dataset: str | None, kind: str | None, tag: str | None,
               q: str | None, limit: int, offset: int) -> list:
    stmt = select(*SUMMARY_COLUMNS).order_by(NETWORKS.c.id)
    if not user.is_admin:
        stmt = stmt.where(or_(NETWORKS.c.visibility == "lab", NETWORKS.c.owner == user.name))
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
        raise HTTPException(413, f"the weights file is larger than the limit of {limit} bytes")
    filename = file.filename or ""
    if len(filename) > 255 or "\x00" in filename:
        raise HTTPException(400, "the weights file's name must be at most 255 characters, without NUL")

    async def work() -> Response:
        # parsing and building the model are CPU work: in the checks' pool (backend/checks.py, bounded per
        # user), neither on the event loop nor on the API's threads; then storing, on an API thread
        async with checks.slot(user.name) as run:
            if (arch := _architecture_of(meta)) is not None:
                try:  # the heavy check first: in a check process
                    await checks.architecture(run, *arch)
                except nets.SpecError as exc:
                    raise HTTPException(400, f"architecture: {exc}") from None
            prepared = await run(_prepare_upload, meta, filename, blob)
        row = await writes.write(_store_upload, user, prepared, filename)
        if isinstance(row, int):  # committed, then the connection died: read on a fresh one
            row = await read(_network_row, row)
        return json_response(NetworkOut, row, status_code=201)

    fp = writes.fingerprint("POST /api/networks", meta, filename, writes.fingerprint(blob))
    return await writes.idempotent(request, user.name, writes.request_key(request), fp, work)


def _store_upload(db: Session, user: Principal, prepared: "_Prepared", filename: str):
    """The stored network's row, or only its id when it was committed and answering failed after."""
    with committed_rows(db, Network) as made, committed_rows(db, Job) as queued:
        try:
            return _store(db, user, prepared, filename)
        except HTTPException:
            raise
        except Exception:
            if not made:
                raise
            log.warning("network %s was committed, then its upload failed; answering with it", made[0], exc_info=True)
    if not queued:  # its evaluate job, on a fresh connection
        with new_session() as fresh:
            jobs.submit(fresh, "evaluate", {"network": made[0]}, user=user, check_quota=False)
    return made[0]


def _architecture_of(meta: str):
    """(architecture, input shape, classes) of an upload's meta, None where it is not what _prepare_upload
    accepts (which then says why); cheap."""
    try:
        info = NetworkMeta.model_validate(json.loads(meta))
    except Exception:  # noqa: BLE001 - _prepare_upload names it
        return None
    try:
        shape, n_classes = data.shape_of(info.dataset, data.normalize_options(info.dataset, info.dataset_options))
        return info.architecture, tuple(shape), n_classes
    except Exception:  # noqa: BLE001 - _prepare_upload names it
        return info.architecture, None, None


@dataclass
class _Prepared:
    """An upload parsed and checked, before the database is asked: its meta, spec, options and model."""

    info: NetworkMeta
    spec: dict
    options: dict
    model: Any


def _prepare_upload(meta: str, filename: str, blob: bytes) -> _Prepared:
    """Parse and check an upload (no database): 400 naming the first problem."""
    try:
        info = NetworkMeta.model_validate(json.loads(meta))
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"'meta' is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise HTTPException(400, "meta: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'meta'}: {e['msg']}" for e in exc.errors())) from None
    try:
        spec = nets.normalize_spec(info.architecture)
    except nets.SpecError as exc:
        raise HTTPException(400, f"architecture: {exc}") from None
    try:
        options = data.normalize_options(info.dataset, info.dataset_options)
        shape, n_classes = data.shape_of(info.dataset, options)
    except data.DatasetError as exc:
        raise HTTPException(400, f"dataset: {exc}") from None
    # the spec's size from the spec alone (nothing allocated), then the file's names and shapes against it
    # from its header, before any real tensor or module is made
    try:
        nets.check_size(spec, shape, n_classes, get_settings().max_parameters)
        expected = nets.meta_model(spec, shape, n_classes).state_dict()
    except nets.SpecError as exc:
        raise HTTPException(400, f"architecture: {exc}") from None
    expected_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    try:
        # a file may hold float64 where the model has float32: twice the bytes, plus the archive's own records
        shapes = store.upload_shapes(filename, blob, max_bytes=2 * expected_bytes + 64 * 1024)
        _check_shapes(expected, shapes)
        state = store.parse_upload(filename, blob, max_bytes=2 * expected_bytes + 64 * 1024)
    except store.UploadError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        model = nets.build(spec, shape, n_classes)
        nets.load_weights(model, state)
    except nets.WeightsError as exc:
        raise HTTPException(400, str(exc)) from None
    except nets.SpecError as exc:
        raise HTTPException(400, f"architecture: {exc}") from None
    return _Prepared(info, spec, options, model)


def _store(db: Session, user: Principal, prepared: _Prepared, filename: str):
    info, spec, options, model = prepared.info, prepared.spec, prepared.options, prepared.model
    try:  # a first look, before the file is written; create_network checks again, atomically
        networks.check_quota(db, user.name, networks.state_bytes(model.state_dict()), user.max_stored_bytes)
        net = networks.store_state(db, model.state_dict(), max_stored_bytes=user.max_stored_bytes, name=info.name,
                                   owner=user.name, architecture=spec, dataset=info.dataset, dataset_options=options,
                                   source={"kind": "uploaded", "filename": filename}, tags=info.tags,
                                   visibility=info.visibility, n_params=nets.n_parameters(model), history=[])
        db.commit()
    except networks.QuotaError as exc:
        db.rollback()
        raise HTTPException(413, str(exc)) from None
    # Its train and test errors are measured by a worker, not in this request.
    jobs.submit(db, "evaluate", {"network": net.id}, user=user, check_quota=False)
    return _network_row(db.connection(), net.id)


def _check_shapes(expected: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """The names and shapes of a file's tensors against the architecture's (the same words as
    nets.check_state_dict, which checks values and dtypes once the tensors exist)."""
    problems = []
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(n[:100] for n in unexpected[:20])}"
                        + (f" and {len(unexpected) - 20} more" if len(unexpected) > 20 else ""))
    for name in sorted(set(expected) & set(shapes)):
        if tuple(shapes[name]) != tuple(expected[name].shape):
            problems.append(f"{name} has shape {list(shapes[name])}, expected {list(expected[name].shape)}")
    if problems:
        raise store.UploadError("weights do not fit the architecture: " + "; ".join(problems))


def _network_row(conn: Connection, network_id: int):
    return conn.execute(select(NETWORKS).where(NETWORKS.c.id == network_id)).first()


@router.get("/{network_id}", response_model=NetworkOut)
async def read_network(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    row = await read(_network_row, network_id)
    if row is None or not user.can_read(row):
        raise HTTPException(404, f"network {network_id} does not exist")
    return json_response(NetworkOut, row)


@router.patch("/{network_id}", response_model=NetworkOut)
async def patch_network(network_id: NetworkId, patch: NetworkPatch, user: Principal = Depends(current_user)) -> Response:
    await writes.write(_patch, network_id, patch, user)
    # read after the commit on a read connection (repeated on a fresh one if the database dropped it):
    # a committed change is answered as one
    return json_response(NetworkOut, await read(_network_row, network_id))


def _patch(db: Session, network_id: int, patch: NetworkPatch, user: Principal) -> None:
    net = get_or_404(db, network_id, user, write=True)
    for key, value in patch.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(net, key, value)
    db.commit()


@router.delete("/{network_id}", status_code=204)
async def delete_network(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    h = await writes.write(_delete, network_id, user)
    # after the commit, on a read connection (repeated on a fresh one if the database dropped it): the
    # deletion is answered as done, and its weights file goes when no other network shares it
    if await read(_weights_unused, h):
        await run_in_threadpool(store.remove, h)
    return Response(status_code=204)


def _delete(db: Session, network_id: int, user: Principal) -> str:
    net = get_or_404(db, network_id, user, write=True)
    running = db.scalars(select(Job).where(Job.status.in_(("queued", "running")))).all()
    users = [j.id for j in running if network_id in (j.inputs or [])]
    if users:
        raise HTTPException(409, f"network {network_id} is an input of unfinished job(s) {users}; cancel them first")
    h = net.weights_hash
    db.delete(net)
    db.commit()
    return h


def _weights_unused(conn: Connection, h: str) -> bool:
    return conn.execute(select(NETWORKS.c.id).where(NETWORKS.c.weights_hash == h).limit(1)).first() is None


@router.get("/{network_id}/weights")
async def download_weights(network_id: NetworkId, user: Principal = Depends(current_user)) -> Response:
    row = await read(_network_row, network_id)
    if row is None or not user.can_read(row):
        raise HTTPException(404, f"network {network_id} does not exist")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in row.name)[:80] or "network"
    return Response(await run_in_threadpool(store.read_bytes, row.weights_hash), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{safe}-{row.id}.safetensors"'})
