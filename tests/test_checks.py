"""Expensive checks off the API's threads (issue 26 item 4): a layer graph's trace and sizes run in the
checks' own pool, at most TOROID_CHECKS_PER_USER of one user's at once (one more: 429 at once), and the
database step after it finds the work done; cheap bounds refuse an over-long graph before any trace.
(The latency of /api/health under 16 concurrent submits is measured in benchmarks/checks.py.)"""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from safetensors.torch import save

from backend import auth, checks
from backend.db import new_session
from workers.landscape import groups, nets

from .conftest import close_stack, make_stack
from .helpers import DIGITS_CLASSES, DIGITS_SHAPE


def graph(pairs: int, width: int = 8) -> dict:
    """A layer graph of ``pairs`` (conv, relu) pairs: 2 x pairs + 4 layers; ``width`` makes it distinct."""
    layers = []
    for k in range(pairs):
        layers += [{"type": "conv", "out": width if k == 0 else 8, "kernel": 3, "padding": 1}, {"type": "relu"}]
    return {"kind": "graph", "layers": layers + [{"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "dropout"},
                                              {"type": "linear"}]}


def make_lab(processes: str):
    """Check processes 2 (the default) or 0 (the heavy check in the check threads); alice and bob."""
    s = make_stack("checks", with_worker=False, require_auth=True, reconcile=False,
                   extra={"TOROID_CHECKS_PER_USER": "1", "TOROID_MAX_RUNNING_JOBS": "100",
                          "TOROID_CHECK_PROCESSES": processes})
    s.processes = int(processes)
    with new_session() as ses:
        s.headers = {n: {"Authorization": f"Bearer {auth.create_user(ses, n)[1]}"} for n in ("alice", "bob")}
    return s


@pytest.fixture(params=["2", "0"])
def lab(request):
    s = make_lab(request.param)
    yield s
    close_stack(s)


@pytest.fixture
def lab0():
    s = make_lab("0")
    yield s
    close_stack(s)


def hold_a_check(user: str):
    """Occupy one of ``user``'s check slots until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def body():
        async def main():
            await checks.run(user, lambda: (started.set(), release.wait(60)))
        asyncio.run(main())

    t = threading.Thread(target=body, daemon=True)
    t.start()
    assert started.wait(10)
    return release, t


def test_a_users_second_heavy_check_is_refused_while_the_first_runs_and_others_go_on(lab, monkeypatch):
    blob = save({k: v.contiguous() for k, v in nets.build(graph(3, 10), DIGITS_SHAPE, DIGITS_CLASSES).state_dict().items()})
    meta = {"name": "g", "architecture": graph(3, 10), "dataset": "digits"}
    nets._normalized.clear()  # what this process remembers of specs (the build above): forgotten
    traced: list[str] = []
    real = groups.check
    monkeypatch.setattr(groups, "check", lambda spec: (traced.append(threading.current_thread().name), real(spec))[1])
    train = {"dataset": "digits", "optimizer": "sgd", "epochs": 1}
    release, holder = hold_a_check("alice")
    try:
        r = lab.client.post("/api/jobs", json={"kind": "train", "params": {**train, "architecture": graph(197, 9)}},
                            headers=lab.headers["alice"])
        # before: traced on an API thread, as many at once as the API has threads, for every user
        assert r.status_code == 429 and "TOROID_CHECKS_PER_USER" in r.json()["detail"], r.text
        up = lab.client.post("/api/networks", files={"file": ("w.safetensors", blob)}, data={"meta": json.dumps(meta)},
                             headers=lab.headers["alice"])
        assert up.status_code == 429, up.text
        assert traced == []  # nothing of hers was traced meanwhile
        # another user is not held up by alice's checks
        r = lab.client.post("/api/jobs", json={"kind": "train", "params": {**train, "architecture": graph(197, 11)}},
                            headers=lab.headers["bob"])
        assert r.status_code == 202, r.text
    finally:
        release.set()
        holder.join(10)
    # bob's 398-layer graph (197 pairs + 4) was traced once, in a check process (nothing traced in the API
    # process) or in a check thread (not on an API thread), and the database step that followed found it done
    assert traced == [] if lab.processes else len(traced) == 1 and traced[0].startswith("toroid-check"), traced
    assert checks.in_flight("alice") == 0
    r = lab.client.post("/api/jobs", json={"kind": "train", "params": {**train, "architecture": graph(197, 9)}},
                        headers=lab.headers["alice"])
    assert r.status_code == 202 and r.json()["queue_position"] is not None, r.text
    up = lab.client.post("/api/networks", files={"file": ("w.safetensors", blob)}, data={"meta": json.dumps(meta)},
                         headers=lab.headers["alice"])
    assert up.status_code == 201, up.text
    assert traced == [] if lab.processes else len(traced) == 3 and all(n.startswith("toroid-check") for n in traced), traced
    with new_session() as ses:  # the job holds the normal form the check process worked out
        from backend.models import Job

        job = ses.get(Job, r.json()["id"])
        assert job.params["architecture"] == nets.normalize_spec(graph(197, 9))


def test_a_graph_over_the_layer_bound_is_refused_before_any_trace(lab0, monkeypatch):
    lab = lab0
    traced = []
    monkeypatch.setattr(groups, "check", lambda spec: traced.append(spec))
    r = lab.client.post("/api/jobs", json={"kind": "train", "params": {"architecture": graph(199), "epochs": 1}},
                        headers=lab.headers["alice"])
    assert r.status_code == 400 and "at most 400 layers" in r.json()["detail"], r.text
    assert traced == []
    # the project's own architectures pass the cheap bounds: ResNet-56, resnet34, VGG16
    for spec in ({"kind": "resnet", "depth": 56}, {"kind": "resnet34"}, {"kind": "vgg16_bn"}):
        assert nets.normalize_spec(spec)["kind"] == spec["kind"]


def test_a_killed_check_process_costs_one_check_its_pool_not_every_later_one(monkeypatch):
    """A check process that dies (killed, out of memory) breaks its pool; the check is done in a thread
    and the next one gets a fresh pool (before the fresh pool: every later check would fail)."""
    import os
    import signal

    s = make_lab("2")
    try:
        train = {"dataset": "digits", "optimizer": "sgd", "epochs": 1}
        r = s.client.post("/api/jobs", json={"kind": "train", "params": {**train, "architecture": graph(20, 12)}},
                          headers=s.headers["bob"])
        assert r.status_code == 202, r.text
        pool = checks._processes(2)
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        for width in (13, 14):
            r = s.client.post("/api/jobs", json={"kind": "train", "params": {**train, "architecture": graph(20, width)}},
                              headers=s.headers["bob"])
            assert r.status_code == 202, r.text
        assert checks._processes(2) is not pool
    finally:
        close_stack(s)
