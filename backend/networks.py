"""The one place a ``Network`` row is made (upload, train, bend midpoint, canonical form), with the
owner's storage quota checked and the row inserted in one atomic step (db.lock)."""
from __future__ import annotations

from typing import Any

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import store
from .config import get_settings
from .db import lock
from .errors import Conflict, Forbidden, NotFound, TooLarge
from .models import Job, Network, NetworkSource, User
from .visibility import unreadable_networks

ERROR_FIELDS = ("train_error", "test_error", "train_loss", "test_loss")


class QuotaError(TooLarge):
    """Storing a network would take its owner past the storage quota (HTTP 413)."""


def stored_bytes(session: Session, owner: str) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(Network.weights_bytes), 0)).where(Network.owner == owner)))


def storage_limit(session: Session, owner: str) -> int:
    """The owner's quota of stored weight bytes (their own, else the server's default)."""
    own = session.scalar(select(User.max_stored_bytes).where(User.name == owner))
    return own or get_settings().max_stored_bytes


def check_quota(session: Session, owner: str, size: int, limit: int | None = None) -> None:
    used = stored_bytes(session, owner)
    limit = storage_limit(session, owner) if limit is None else limit
    if used + size > limit:
        raise QuotaError(f"storage quota exceeded: {owner} stores {used} bytes of weights and this network adds "
                         f"{size}, over the limit of {limit}; delete networks first")


def create_network(session: Session, max_stored_bytes: int | None = None, size: int | None = None,
                   **fields: Any) -> Network:
    """Add a network (``fields``: the columns; its weights already in the store) in the session's
    transaction, after checking its owner's quota (``size``: the bytes it adds, default its weights file's)
    under the owner's lock; the caller commits, which releases the lock. Raises QuotaError (the weights
    file is removed again when nothing else uses it)."""
    lock(session, f"owner:{fields['owner']}")
    try:
        check_quota(session, fields["owner"], int(fields.get("weights_bytes") or 0 if size is None else size),
                    max_stored_bytes)
    except QuotaError:
        h = fields.get("weights_hash")
        if h and session.scalar(select(Network.id).where(Network.weights_hash == h).limit(1)) is None:
            store.remove(h)
        raise
    sources = source_ids(fields.get("source"))
    if sources:  # every network it came from, through others too; private when one of them is
        sources |= set(session.scalars(select(NetworkSource.source_id).where(NetworkSource.network_id.in_(sources))))
        if session.scalar(select(func.count(Network.id)).where(Network.id.in_(sources), Network.visibility == "private")):
            fields = {**fields, "visibility": "private"}
    net = Network(**fields)
    session.add(net)
    session.flush()
    session.add_all(NetworkSource(network_id=net.id, source_id=i) for i in sorted(sources))
    return net


def source_ids(source: Any) -> set[int]:
    """The networks a network was made from, as its ``source`` records them (``"from"``: an id or ids)."""
    made_from = (source or {}).get("from") if isinstance(source, dict) else None
    ids = made_from if isinstance(made_from, list) else [made_from]
    return {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}


def make_derived_private(session: Session, network_id: int) -> None:
    """``network_id`` became private: so does every network made from it (directly or through others)."""
    derived = select(NetworkSource.network_id).where(NetworkSource.source_id == network_id).scalar_subquery()
    session.execute(update(Network).where(Network.id.in_(derived), Network.visibility != "private")
                    .values(visibility="private"), execution_options={"synchronize_session": False})


def store_state(session: Session, state: dict[str, torch.Tensor], **fields: Any) -> Network:
    """Put ``state`` in the weight store and add its network (``create_network``; the quota counts the
    tensors' bytes)."""
    weights_hash, weights_bytes = store.put(state)
    return create_network(session, size=state_bytes(state), weights_hash=weights_hash, weights_bytes=weights_bytes,
                          **fields)


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def fill_errors(session: Session, network_id: int, result: dict[str, Any]) -> None:
    """Write the errors an evaluate result measured into the network's row."""
    net = session.get(Network, network_id)
    if net is not None:
        for key in ERROR_FIELDS:
            setattr(net, key, result.get(key))


def readable(session: Session, network_id: int, user, write: bool = False) -> Network:
    """The network ``user`` may read (and, with ``write``, change); NotFound / Forbidden otherwise."""
    net = session.get(Network, network_id)
    # a private network of someone else does not exist for you, nor one made from it
    if net is None or not user.can_read(net) or network_id in unreadable_networks(session.connection(), user, [network_id]):
        raise NotFound(f"network {network_id} does not exist")
    if write and not user.can_write(net):
        raise Forbidden(f"network {network_id} belongs to {net.owner}; only its owner or an admin may change it")
    return net


def delete_network(session: Session, network_id: int, user) -> str:
    """Delete a network ``user`` may change, unless it is an input of an unfinished job (Conflict); commits
    and returns its weights hash (the caller removes the file when no other network shares it)."""
    net = readable(session, network_id, user, write=True)
    running = session.scalars(select(Job).where(Job.status.in_(("queued", "running")))).all()
    users = [j.id for j in running if network_id in (j.inputs or [])]
    if users:
        raise Conflict(f"network {network_id} is an input of unfinished job(s) {users}; cancel them first")
    h = net.weights_hash
    session.delete(net)
    session.commit()
    return h
