"""`make test` touches only the Redis database TOROID_TEST_REDIS_URL names, and in it only its stacks'
own key prefixes (issue 25): keys of another database, and other keys of the same one, survive a services
stack that ran a job end to end with a real worker.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from .conftest import broker_keys, close_stack, make_stack, missing_service
from .helpers import upload


@pytest.mark.services
def test_a_services_stack_leaves_other_databases_and_keys_alone():
    url = os.environ.get("TOROID_TEST_REDIS_URL")
    if not url or not os.environ.get("TOROID_TEST_DATABASE_URL"):
        missing_service("TOROID_TEST_DATABASE_URL and TOROID_TEST_REDIS_URL are not set (PostgreSQL / Redis tests)")
    import redis

    base, _, tail = url.rpartition("/")
    given = int(tail) if tail.isdigit() else 0
    mine = redis.Redis.from_url(url)
    others = {db: redis.Redis.from_url(f"{base}/{db}") for db in ((given + 10) % 16, (given + 1) % 16)
              if db != given}
    marker = f"someone-else:{uuid.uuid4().hex}"
    try:
        for db, r in others.items():
            r.set(marker, f"db {db}")
        mine.set(marker, "the given database, another prefix")
        s = make_stack("scope", with_worker=True, backend="services")
        try:
            net = upload(s.client, name="scope").json()
            evaluated = s.wait([j for j in s.client.get("/api/jobs").json() if j["params"].get("network") == net["id"]][0])
            assert evaluated["status"] == "succeeded"
            prefix = s.env["TOROID_BROKER_PREFIX"]
            assert s.env["TOROID_BROKER_URL"] == url and prefix.startswith("toroid-test:")
            assert broker_keys(url, prefix)  # the broker did write, under its prefix
            assert not [k for k in mine.scan_iter(count=1000) if k.startswith(b"_kombu") or k in (b"interactive", b"batch")]
        finally:
            close_stack(s)
        assert not broker_keys(url, prefix)  # its own keys went with it
        for db, r in others.items():
            assert r.get(marker) == f"db {db}".encode(), f"database {db} was touched"
        assert mine.get(marker) == b"the given database, another prefix"
    finally:
        for r in [mine, *others.values()]:
            r.delete(marker)


def test_a_stack_whose_services_are_missing_leaves_no_folder(monkeypatch):
    """A services stack skipped for want of PostgreSQL / Redis removes the home it had made (the suite
    left a dozen empty toroid-* folders in the temporary directory, one per skipped stack)."""
    monkeypatch.delenv("TOROID_TEST_REDIS_URL", raising=False)
    monkeypatch.delenv("TOROID_TEST_DATABASE_URL", raising=False)
    name = f"skipcheck{uuid.uuid4().hex[:8]}"
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)):  # skipped; failed under CI=true
        make_stack(name, with_worker=False, backend="services")
    assert not list(Path(tempfile.gettempdir()).glob(f"toroid-{name}-*"))
