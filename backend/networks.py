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
from .models import Network, NetworkSource, User

ERROR_FIELDS = ("train_error", "test_error", "train_loss", "test_loss")


class QuotaError(ValueError):
    """Storing a network would take its owner past the storage quota (HTTP 413)."""

    status = 413


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


def hidden_by_sources(conn, user, ids=None, query: bool = False):
    """Ids (among ``ids``; all when None) of networks made from a network ``user`` may not read (someone
    else's private one): they are as unreadable as it. ``query``: the SELECT, to join into another."""
    ns, n = NetworkSource.__table__, Network.__table__.alias("source_network")
    stmt = select(ns.c.network_id).join(n, n.c.id == ns.c.source_id).where(n.c.visibility == "private",
                                                                             n.c.owner != user.name)
    if ids is not None:
        ids = sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool)})
        stmt = stmt.where(ns.c.network_id.in_(ids))
    if query:
        return stmt
    if user.is_admin or (ids is not None and not ids):
        return set()
    return set(conn.scalars(stmt))


def source_hidden(network_id, user):
    """A SQL condition: the network ``network_id`` (a column or an id) was made from one ``user`` may not read."""
    ns, n = NetworkSource.__table__, Network.__table__.alias("source_network")  # (not the outer query's)
    return select(ns.c.network_id).join(n, n.c.id == ns.c.source_id).where(
        ns.c.network_id == network_id, n.c.visibility == "private", n.c.owner != user.name).exists()


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
