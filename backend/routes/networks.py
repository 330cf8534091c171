"""Stored networks: upload, list, read, rename/tag, delete, download weights."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from workers.landscape import data, nets

from .. import jobs, store
from ..auth import Principal, current_user
from ..config import get_settings
from ..db import get_db
from ..models import Job, Network
from ..schemas import NetworkId, NetworkMeta, NetworkOut, NetworkPatch

router = APIRouter(prefix="/networks", tags=["networks"])


def get_or_404(db: Session, network_id: int, user: Principal, write: bool = False) -> Network:
    net = db.get(Network, network_id)
    if net is None or not user.can_read(net):  # a private network of someone else does not exist for you
        raise HTTPException(404, f"network {network_id} does not exist")
    if write and not user.can_write(net):
        raise HTTPException(403, f"network {network_id} belongs to {net.owner}; only its owner or an admin may change it")
    return net


def stored_bytes(db: Session, owner: str) -> int:
    return int(db.scalar(select(func.coalesce(func.sum(Network.weights_bytes), 0)).where(Network.owner == owner)))


@router.get("", response_model=list[NetworkOut])
def list_networks(
    db: Session = Depends(get_db),
    user: Principal = Depends(current_user),
    dataset: str | None = None,
    kind: str | None = Query(None, description="architecture kind, e.g. mlp"),
    tag: str | None = None,
    q: str | None = Query(None, description="text contained in the name"),
    limit: int = Query(500, ge=1, le=5000),
) -> list[Network]:
    stmt = select(Network).order_by(Network.id)
    if not user.is_admin:
        stmt = stmt.where(or_(Network.visibility == "lab", Network.owner == user.name))
    if dataset:
        stmt = stmt.where(Network.dataset == dataset)
    if q:
        stmt = stmt.where(Network.name.contains(q))
    rows = list(db.scalars(stmt.limit(limit)))
    if kind:
        rows = [n for n in rows if n.architecture.get("kind") == kind]
    if tag:
        rows = [n for n in rows if tag in (n.tags or [])]
    return rows


@router.post("", response_model=NetworkOut, status_code=201)
async def upload_network(
    file: UploadFile = File(..., description="weights: .safetensors, or a .pt/.pth state_dict"),
    meta: str = Form(..., description='JSON: {"name", "architecture", "dataset", "tags"?, "visibility"?}'),
    db: Session = Depends(get_db),
    user: Principal = Depends(current_user),
) -> Network:
    limit = get_settings().max_upload_bytes
    blob = await file.read(limit + 1)
    if len(blob) > limit:
        raise HTTPException(413, f"the weights file is larger than the limit of {limit} bytes")
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
    try:
        state = store.parse_upload(file.filename or "", blob)
    except store.UploadError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        model = nets.build(spec, shape, n_classes)
        nets.load_weights(model, state)
    except nets.WeightsError as exc:
        raise HTTPException(400, str(exc)) from None
    except nets.SpecError as exc:
        raise HTTPException(400, f"architecture: {exc}") from None
    used = stored_bytes(db, user.name)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if used + size > user.max_stored_bytes:
        raise HTTPException(413, f"storage quota exceeded: {user.name} stores {used} bytes of weights and this "
                                 f"network adds {size}, over the limit of {user.max_stored_bytes}; delete networks first")
    weights_hash, weights_bytes = store.put(model.state_dict())
    net = Network(name=info.name, owner=user.name, weights_bytes=weights_bytes, architecture=spec, dataset=info.dataset, dataset_options=options,
                  source={"kind": "uploaded", "filename": file.filename}, tags=info.tags,
                  visibility=info.visibility, weights_hash=weights_hash, n_params=nets.n_parameters(model),
                  history=[])
    db.add(net)
    db.commit()
    # Its train and test errors are measured by a worker, not in this request.
    jobs.submit(db, "evaluate", {"network": net.id}, user=user, check_quota=False)
    db.refresh(net)
    return net


@router.get("/{network_id}", response_model=NetworkOut)
def read_network(network_id: NetworkId, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> Network:
    return get_or_404(db, network_id, user)


@router.patch("/{network_id}", response_model=NetworkOut)
def patch_network(network_id: NetworkId, patch: NetworkPatch, db: Session = Depends(get_db),
                  user: Principal = Depends(current_user)) -> Network:
    net = get_or_404(db, network_id, user, write=True)
    for key, value in patch.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(net, key, value)
    db.commit()
    db.refresh(net)
    return net


@router.delete("/{network_id}", status_code=204)
def delete_network(network_id: NetworkId, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> Response:
    net = get_or_404(db, network_id, user, write=True)
    running = db.scalars(select(Job).where(Job.status.in_(("queued", "running")))).all()
    users = [j.id for j in running if network_id in (j.inputs or [])]
    if users:
        raise HTTPException(409, f"network {network_id} is an input of unfinished job(s) {users}; cancel them first")
    h = net.weights_hash
    db.delete(net)
    db.commit()
    if db.scalar(select(Network.id).where(Network.weights_hash == h).limit(1)) is None:
        store.remove(h)
    return Response(status_code=204)


@router.get("/{network_id}/weights")
def download_weights(network_id: NetworkId, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> Response:
    net = get_or_404(db, network_id, user)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in net.name)[:80] or "network"
    return Response(store.read_bytes(net.weights_hash), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{safe}-{net.id}.safetensors"'})
