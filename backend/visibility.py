"""Who may read a job or a result: the one home of the visibility rule.

A network is readable by everyone (``lab``) or by its owner and admins (``private``), and a network made
from others (a canonical form, a bend's midpoint) only by who may read every one of them. A job is readable
when its own visibility allows it *and* every network it names is readable: its inputs and the networks
its result names (``kinds.result_networks``: a train's network, a canonical form, a bend's midpoint).
A result is readable through any readable job that produced or reused it, unless a network the result
itself names is unreadable. The cache reads the same rule: a result is reused only while every network
it names exists and the asker may read it.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from workers.landscape.kinds import result_networks

from .auth import Principal
from .models import Network, NetworkSource

NETWORKS = Network.__table__


def _ids(ids: Iterable[Any]) -> list[int]:
    return sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool)})


def unreadable_networks(conn: Connection, user: Principal, ids: Iterable[Any] | None = None) -> set[int]:
    """Ids (among ``ids``; all when None) of networks ``user`` may not read: others' private ones, and
    networks made from one of them (``hidden_by_sources``); one query."""
    if user.is_admin:
        return set()
    stmt = select(NETWORKS.c.id).where(NETWORKS.c.visibility == "private", NETWORKS.c.owner != user.name)
    if ids is not None:
        wanted = _ids(ids)
        if not wanted:
            return set()
        stmt = stmt.where(NETWORKS.c.id.in_(wanted))
    return set(conn.scalars(stmt.union(hidden_by_sources(conn, user, ids, query=True))))


def hidden_by_sources(conn, user: Principal, ids=None, query: bool = False):
    """Ids (among ``ids``; all when None) of networks made from a network ``user`` may not read (someone
    else's private one; network_sources records every network each was made from, through others too):
    they are as unreadable as it. ``query``: the SELECT, to join into another."""
    ns, n = NetworkSource.__table__, Network.__table__.alias("source_network")  # (not an outer query's)
    stmt = select(ns.c.network_id).join(n, n.c.id == ns.c.source_id).where(n.c.visibility == "private",
                                                                             n.c.owner != user.name)
    if ids is not None:
        stmt = stmt.where(ns.c.network_id.in_(_ids(ids)))
    if query:
        return stmt
    if user.is_admin or (ids is not None and not _ids(ids)):
        return set()
    return set(conn.scalars(stmt))


def source_hidden(network_id, user: Principal):
    """A SQL condition: the network ``network_id`` (a column or an id) was made from one ``user`` may not read."""
    ns, n = NetworkSource.__table__, Network.__table__.alias("source_network")
    return select(ns.c.network_id).join(n, n.c.id == ns.c.source_id).where(
        ns.c.network_id == network_id, n.c.visibility == "private", n.c.owner != user.name).exists()


def missing_or_unreadable(conn: Connection, user: Principal, ids: Iterable[Any]) -> set[int]:
    """Ids among ``ids`` of networks that no longer exist or that ``user`` may not read."""
    wanted = _ids(ids)
    if not wanted:
        return set()
    found = set(conn.scalars(select(NETWORKS.c.id).where(NETWORKS.c.id.in_(wanted))))
    return (set(wanted) - found) | unreadable_networks(conn, user, found)


def job_networks(kind: str, inputs: Iterable[Any] | None, result: Any = None) -> list[Any]:
    """The networks a job names: its inputs, and those its result names."""
    return list(inputs or []) + result_networks(kind, result)


def job_readable(conn: Connection, user: Principal, job: Any, result: Any = None) -> bool:
    """Whether ``user`` may read ``job`` (an ORM object or a row of the jobs table) and, when given, its
    result's data."""
    return user.can_read(job) and not unreadable_networks(conn, user, job_networks(job.kind, job.inputs, result))


def result_readable(conn: Connection, user: Principal, kind: str, data: Any, inputs: list[list[Any]]) -> bool:
    """Whether a result of ``kind`` with ``data``, reached through readable jobs with these ``inputs`` (one
    list per job), is readable: no network the result names is hidden, and some job's inputs are all
    readable."""
    named = result_networks(kind, data)
    hidden = unreadable_networks(conn, user, [n for i in inputs for n in i] + named)
    return not hidden.intersection(named) and not all(hidden.intersection(i) for i in inputs)


def cached_result_valid(conn: Connection, user: Principal, kind: str, data: Any) -> bool:
    """A finished result may answer a new job only while every network it names still exists and ``user``
    may read it (a deleted bend midpoint or trained network makes the job compute again)."""
    return not missing_or_unreadable(conn, user, result_networks(kind, data))
