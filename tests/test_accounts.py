"""Accounts on a shared server: tokens, isolation between users, quotas, authentication off loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend import auth
from backend.app import create_app
from backend.db import new_session
from backend.models import User

from .conftest import ROOT, free_port, stop
from .helpers import random_state


@pytest.fixture
def lab(api_stack):
    """An app that requires tokens, on the api stack's database, with users alice, bob and an admin."""
    api_stack.activate()
    client = TestClient(create_app(require_auth=True, reconcile=False))
    tokens = {}
    with new_session() as s:
        for name, admin in (("alice", False), ("bob", False), ("boss", True)):
            existing = s.query(User).filter_by(name=name).first()
            tokens[name] = auth.new_token(s, name) if existing else auth.create_user(s, name, admin)[1]
    headers = {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
    return client, headers


def test_token_is_required_and_only_its_hash_is_stored(lab):
    client, h = lab
    r = client.get("/api/networks")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert client.get("/api/networks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/networks", headers=h["alice"]).status_code == 200
    assert client.get("/api/health").status_code == 200  # monitoring needs no token
    assert client.get("/").status_code == 200  # the page loads, then asks for a token
    token = h["alice"]["Authorization"].split()[1]
    with new_session() as s:
        row = s.query(User).filter_by(name="alice").one()
        assert row.token_hash == auth.hash_token(token) and token not in row.token_hash


def test_private_things_are_invisible_to_others(lab):
    client, h = lab
    r = client.post("/api/networks", headers=h["alice"], files={"file": ("w.safetensors", _blob(1))},
                    data={"meta": '{"name": "alice-secret", "architecture": {"kind": "mlp", "hidden": [16]}, "visibility": "private"}'})
    assert r.status_code == 201, r.text
    secret = r.json()
    assert secret["owner"] == "alice" and secret["visibility"] == "private"
    shared = client.post("/api/networks", headers=h["alice"], files={"file": ("w.safetensors", _blob(2))},
                         data={"meta": '{"name": "alice-shared", "architecture": {"kind": "mlp", "hidden": [16]}}'}).json()
    # bob: the private network does not exist for him, in every way he could reach it
    assert secret["id"] not in [n["id"] for n in client.get("/api/networks", headers=h["bob"]).json()]
    assert shared["id"] in [n["id"] for n in client.get("/api/networks", headers=h["bob"]).json()]
    for method, path in (("GET", f"/api/networks/{secret['id']}"), ("GET", f"/api/networks/{secret['id']}/weights"),
                         ("DELETE", f"/api/networks/{secret['id']}"), ("PATCH", f"/api/networks/{secret['id']}")):
        r = client.request(method, path, headers=h["bob"], json={"name": "mine"} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.status_code)
    r = client.post("/api/jobs", headers=h["bob"], json={"kind": "distance", "params": {"a": secret["id"], "b": shared["id"]}})
    assert r.status_code == 404 and f"network {secret['id']}" in r.json()["detail"]
    # alice's job on her private network is private too, with its result
    job = client.post("/api/jobs", headers=h["alice"], json={"kind": "distance", "params": {"a": secret["id"], "b": shared["id"]}}).json()
    assert job["visibility"] == "private"
    assert client.get(f"/api/jobs/{job['id']}", headers=h["bob"]).status_code == 404
    assert job["id"] not in [j["id"] for j in client.get("/api/jobs", headers=h["bob"]).json()]
    assert client.delete(f"/api/jobs/{job['id']}", headers=h["bob"]).status_code == 404
    # a lab network is readable by bob but only its owner or an admin may change or delete it
    assert client.get(f"/api/networks/{shared['id']}", headers=h["bob"]).status_code == 200
    r = client.patch(f"/api/networks/{shared['id']}", headers=h["bob"], json={"name": "bobs"})
    assert r.status_code == 403 and "alice" in r.json()["detail"]
    assert client.delete(f"/api/networks/{shared['id']}", headers=h["bob"]).status_code == 403
    # the admin sees and may do everything
    assert client.get(f"/api/networks/{secret['id']}", headers=h["boss"]).status_code == 200
    assert client.get(f"/api/jobs/{job['id']}", headers=h["boss"]).status_code == 200
    assert client.delete(f"/api/jobs/{job['id']}", headers=h["boss"]).json()["status"] == "cancelled"
    for j in client.get("/api/jobs", headers=h["boss"]).json():
        if set(j["inputs"]) & {secret["id"], shared["id"]} and j["status"] == "queued":
            client.delete(f"/api/jobs/{j['id']}", headers=h["boss"])
    assert client.delete(f"/api/networks/{secret['id']}", headers=h["boss"]).status_code == 204


def test_results_follow_their_jobs_visibility(stack):
    """A finished private job's result is readable by its owner and not by another user."""
    stack.activate()
    client = TestClient(create_app(require_auth=True, reconcile=False))
    with new_session() as s:
        t_carol = auth.create_user(s, f"carol{stack.name}")[1]
        t_dave = auth.create_user(s, f"dave{stack.name}")[1]
    carol, dave = ({"Authorization": f"Bearer {t}"} for t in (t_carol, t_dave))
    net = client.post("/api/networks", headers=carol, files={"file": ("w.safetensors", _blob(3))},
                      data={"meta": '{"name": "c", "architecture": {"kind": "mlp", "hidden": [16]}, "visibility": "private"}'}).json()
    job = client.post("/api/jobs", headers=carol, json={"kind": "path", "params": {"a": net["id"], "b": net["id"], "points": 2}}).json()
    deadline = time.monotonic() + 120
    while (j := client.get(f"/api/jobs/{job['id']}", headers=carol).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert j["status"] == "succeeded"
    assert client.get(f"/api/results/{j['result_id']}", headers=carol).status_code == 200
    assert client.get(f"/api/results/{j['result_id']}", headers=dave).status_code == 404
    # dave asking for the same computation on a network he cannot read gets 404, not carol's cached result
    r = client.post("/api/jobs", headers=dave, json={"kind": "path", "params": {"a": net["id"], "b": net["id"], "points": 2}})
    assert r.status_code == 404


def test_quotas_on_unfinished_jobs_and_stored_bytes(lab):
    client, h = lab
    with new_session() as s:
        user = s.query(User).filter_by(name="bob").one()
        user.max_running_jobs, user.max_stored_bytes = 2, 10_000
        s.commit()
    try:
        ids = []
        for seed in (1, 2):
            r = client.post("/api/networks", headers=h["bob"], files={"file": ("w.safetensors", _blob(10 + seed))},
                            data={"meta": '{"name": "bob-net", "architecture": {"kind": "mlp", "hidden": [16]}}'})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        # two weights files of ~5 kB: a third goes over 10 kB
        r = client.post("/api/networks", headers=h["bob"], files={"file": ("w.safetensors", _blob(13))},
                        data={"meta": '{"name": "bob-net", "architecture": {"kind": "mlp", "hidden": [16]}}'})
        assert r.status_code == 413 and "storage quota" in r.json()["detail"]
        # the uploads queued evaluate jobs (no worker runs here): bob has 2 unfinished jobs, his limit
        r = client.post("/api/jobs", headers=h["bob"], json={"kind": "distance", "params": {"a": ids[0], "b": ids[1]}})
        assert r.status_code == 429 and "limit" in r.json()["detail"]
        # alice is not affected by bob's limits
        r = client.post("/api/jobs", headers=h["alice"], json={"kind": "distance", "params": {"a": ids[0], "b": ids[1]}})
        assert r.status_code == 202
    finally:
        with new_session() as s:
            user = s.query(User).filter_by(name="bob").one()
            user.max_running_jobs = user.max_stored_bytes = None
            s.commit()


def test_serving_beyond_loopback_requires_a_token(tmp_path):
    port = free_port()
    env = {**os.environ, "TOROID_HOME": str(tmp_path)}
    for key in ("TOROID_DATABASE_URL", "TOROID_BROKER_URL", "TOROID_AUTH"):
        env.pop(key, None)
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "toroid"), "serve", "--host", "0.0.0.0",
                             "--port", str(port), "--no-worker"], cwd=ROOT, env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{url}/api/networks", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.3)
        assert r.status_code == 401
        assert "authentication is required" in log.read_text()
        token = subprocess.run([str(Path(sys.executable).parent / "toroid"), "user", "add", "eve"], env=env,
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        assert httpx.get(f"{url}/api/networks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        stop(proc)


def _blob(seed: int) -> bytes:
    from safetensors.torch import save

    return save(random_state(seed=seed))


def test_who_am_i_and_stale_tokens_on_an_open_server(lab, api):
    client, h = lab
    assert client.get("/api/me", headers=h["alice"]).json()["name"] == "alice"
    assert client.get("/api/me", headers=h["boss"]).json()["is_admin"] is True
    # the open single-user server: no token, or a stale one from a browser, acts as the local admin
    me = api.get("/api/me").json()
    assert me == {**me, "name": "local", "is_admin": True, "auth_required": False}
    assert api.get("/api/me", headers={"Authorization": "Bearer stale"}).json()["name"] == "local"
    # a valid token still names its user there
    assert api.get("/api/me", headers=h["bob"]).json()["name"] == "bob"


def test_networks_made_from_a_network_follow_it_when_it_becomes_private(stack):
    """Before: a canonical form or a bend's midpoint made (by anyone) from a lab network stayed lab-visible,
    weights and all, after the network's owner made it private. Now a network made from others records them
    (network_sources): making one private makes what was made from it private too, and reading a network
    made from others requires reading them (its maker loses it as well; the admin keeps it)."""
    stack.activate()
    client = TestClient(create_app(require_auth=True, reconcile=False))
    with new_session() as s:
        tokens = {n: auth.create_user(s, f"{n}{stack.name}", n == "root")[1] for n in ("erin", "frank", "gina", "root")}
    erin, frank, gina, root = ({"Authorization": f"Bearer {tokens[n]}"} for n in ("erin", "frank", "gina", "root"))
    def upload(headers, name, seed):
        r = client.post("/api/networks", headers=headers, files={"file": ("w.safetensors", _blob(seed))},
                        data={"meta": json.dumps({"name": name, "architecture": {"kind": "mlp", "hidden": [16]}})})
        assert r.status_code == 201, r.text
        return r.json()

    a, b = upload(erin, "erin-a", 41), upload(frank, "frank-b", 42)

    def run(headers, kind, params):
        job = client.post("/api/jobs", headers=headers, json={"kind": kind, "params": params})
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 180
        while (j := client.get(f"/api/jobs/{job.json()['id']}", headers=headers).json())["status"] not in (
                "succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert j["status"] == "succeeded", j
        return j["result"]

    canonical = run(frank, "canonicalize", {"network": a["id"]})["network_id"]
    midpoint = run(frank, "path", {"a": a["id"], "b": b["id"], "type": "bend", "points": 3, "epochs": 1})["midpoint_network_id"]
    again = run(frank, "canonicalize", {"network": canonical})["network_id"]  # made from A through another
    derived = (canonical, midpoint, again)
    for n in derived:
        net = client.get(f"/api/networks/{n}", headers=gina).json()
        assert net["owner"] == f"frank{stack.name}" and net["visibility"] == "lab"
        assert client.get(f"/api/networks/{n}/weights", headers=gina).status_code == 200
    assert client.patch(f"/api/networks/{a['id']}", headers=erin, json={"visibility": "private"}).status_code == 200
    listed = {n["id"] for n in client.get("/api/networks", headers=gina, params={"limit": 5000}).json()}
    mine = {n["id"] for n in client.get("/api/networks", headers=frank, params={"limit": 5000}).json()}
    for n in derived:
        assert client.get(f"/api/networks/{n}", headers=root).json()["visibility"] == "private"
        for who in (gina, frank):  # another lab member, and the one who made it
            got = client.get(f"/api/networks/{n}", headers=who)
            assert got.status_code == 404, got.text
            assert client.get(f"/api/networks/{n}/weights", headers=who).status_code == 404
            r = client.post("/api/jobs", headers=who, json={"kind": "flatness", "params": {"network": n}})
            assert r.status_code == 404, r.text
        assert n not in listed and n not in mine
        assert client.get(f"/api/networks/{n}/weights", headers=root).status_code == 200
    assert client.get(f"/api/networks/{b['id']}", headers=gina).status_code == 200  # the other source is untouched
    # a network made from a private one afterwards is private from the start
    later = run(erin, "canonicalize", {"network": a["id"]})["network_id"]
    assert client.get(f"/api/networks/{later}", headers=gina).status_code == 404
