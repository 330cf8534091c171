"""The network listing: summaries, filters and pages, and its per-process cache, which must follow every
change of the networks table, whoever makes it (API, worker, another process), on both databases."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, update

from backend.cache import table_version
from backend.db import get_engine, read_connection, session_scope
from backend.models import Network
from backend.routes.networks import LISTINGS

from .conftest import close_stack, make_stack
from .helpers import SPEC, upload

NETWORKS = Network.__table__


@pytest.fixture(scope="module", params=["embedded", "services"])
def db_stack(request):
    s = make_stack(f"listing{request.param}", with_worker=False, backend=request.param, reconcile=False)
    yield s
    close_stack(s)


@pytest.fixture
def api(db_stack):
    db_stack.activate()
    return db_stack.client


def names(api, **params) -> list[str]:
    r = api.get("/api/networks", params=params)
    assert r.status_code == 200, r.text
    return [n["name"] for n in r.json()]


def version() -> int:
    with read_connection() as conn:
        return table_version(conn, "networks")


def test_the_database_counts_every_change_of_networks(api):
    v0 = version()
    net = upload(api, name="counted").json()
    v1 = version()
    assert v1 > v0
    with session_scope() as s:
        s.execute(update(Network).where(Network.id == net["id"]).values(test_error=0.5))
    v2 = version()
    assert v2 > v1
    with get_engine().begin() as conn:
        conn.execute(delete(NETWORKS).where(NETWORKS.c.id == -1))  # touches no row: nothing changed
    assert version() == v2


def test_listing_is_a_summary_and_single_reads_carry_the_history(api):
    net = upload(api, name="summary").json()
    listed = next(n for n in api.get("/api/networks").json() if n["id"] == net["id"])
    assert "history" not in listed and listed["weights_hash"] == net["weights_hash"]
    assert api.get(f"/api/networks/{net['id']}").json()["history"] == []


def test_cached_listing_follows_changes_from_anywhere(api):
    net = upload(api, name="before").json()
    assert "before" in names(api)
    hits = LISTINGS.hits
    assert "before" in names(api)
    assert LISTINGS.hits == hits + 1  # the second listing came from the cache

    assert api.patch(f"/api/networks/{net['id']}", json={"name": "renamed"}).status_code == 200
    assert "renamed" in names(api) and "before" not in names(api)

    with session_scope() as s:  # as a worker writes an evaluation
        s.execute(update(Network).where(Network.id == net["id"]).values(test_error=0.125))
    listed = next(n for n in api.get("/api/networks").json() if n["id"] == net["id"])
    assert listed["test_error"] == 0.125

    row = {k: v for k, v in api.get(f"/api/networks/{net['id']}").json().items()
           if k not in ("id", "created_at") and k in NETWORKS.c}  # (the API's derived fields are no columns)
    with get_engine().begin() as conn:  # another process adds and removes rows with plain SQL
        new_id = conn.execute(insert(NETWORKS).values(**{**row, "name": "inserted"}).returning(NETWORKS.c.id)).scalar()
    assert "inserted" in names(api)
    with get_engine().begin() as conn:
        conn.execute(delete(NETWORKS).where(NETWORKS.c.id == new_id))
    assert "inserted" not in names(api)


def test_uncommitted_changes_are_not_listed_nor_cached(api):
    net = upload(api, name="committed").json()
    assert "committed" in names(api)
    conn = get_engine().connect()
    trans = conn.begin()
    conn.execute(update(NETWORKS).where(NETWORKS.c.id == net["id"]).values(name="uncommitted"))
    assert "committed" in names(api) and "uncommitted" not in names(api)
    trans.commit()
    conn.close()
    assert "uncommitted" in names(api) and "committed" not in names(api)


def test_filters_and_pages(api):
    ids = [upload(api, name=f"page-{i}", meta={"name": f"page_{i}%", "architecture": SPEC,
                                               "tags": ["paged"] + (["odd"] if i % 2 else [])}).json()["id"]
           for i in range(6)]
    paged = [n["id"] for n in api.get("/api/networks", params={"tag": "paged"}).json()]
    assert paged == ids
    odd = [n["id"] for n in api.get("/api/networks", params={"tag": "odd", "limit": 2, "offset": 1}).json()]
    assert odd == [ids[3], ids[5]]  # the tag filter applies before the page, not after
    page = [n["id"] for n in api.get("/api/networks", params={"tag": "paged", "limit": 2, "offset": 2}).json()]
    assert page == ids[2:4]
    assert names(api, q="_3%") == ["page_3%"]  # % and _ are plain characters in a name search
    assert names(api, q="pag_") == [] and names(api, q="%") == [f"page_{i}%" for i in range(6)]
    assert all(n["architecture"]["kind"] == "mlp" for n in api.get("/api/networks", params={"kind": "mlp"}).json())
    assert api.get("/api/networks", params={"kind": "lenet", "tag": "paged"}).json() == []
    assert api.get("/api/networks", params={"offset": -1}).status_code == 422

