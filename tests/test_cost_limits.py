"""What a job costs, known before it runs (issue 26 items 1, 2 and 5): costs in FLOPs from the traced spec,
the padded-graph attack refused at upload and as a train job, a train batch that does not fit the worker's
memory refused, and a dry run that answers the estimate and creates nothing."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from backend.db import new_session
from backend.models import Job, Network
from workers.landscape import cost, kinds

from .conftest import close_stack, make_stack
from .helpers import SPEC, random_state, upload


def padded_graph(n: int) -> dict:
    """n x (1x1 conv, 8 channels, padding 5; relu), average pool, linear: the image grows 10 px a layer."""
    body = [x for _ in range(n) for x in ({"type": "conv", "out": 8, "kernel": 1, "padding": 5}, {"type": "relu"})]
    return {"kind": "graph", "layers": [*body, {"type": "adaptive_avgpool", "size": 1}, {"type": "flatten"},
                                        {"type": "linear"}]}


@pytest.fixture(params=["embedded", "services"])
def quiet(request):
    """A stack without a worker, with a 2 GiB worker budget, once per backend."""
    s = make_stack(f"cost{request.param[0]}", with_worker=False, backend=request.param, reconcile=False,
                   extra={"TOROID_WORKER_MEMORY": str(2 * 2**30)})
    yield s
    close_stack(s)


def _count(model) -> int:
    with new_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_the_padded_graph_is_refused_at_upload_naming_its_bytes(quiet):
    spec = padded_graph(30)
    assert sum(t.numel() for t in random_state(spec).values()) == 2194
    before = _count(Network)
    r = upload(quiet.client, random_state(spec), spec=spec, name="padded")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    p = cost.profile(spec, (1, 8, 8), 10)
    assert f"{p.train_bytes:,} bytes" in detail and "TOROID_MAX_ACTIVATION_BYTES" in detail
    assert f"{32 * 2**20:,}" in detail and f"{p.flops:,} FLOPs" in detail
    assert _count(Network) == before and _count(Job) == 0  # nothing stored, no evaluate job


def test_the_padded_graph_is_refused_as_a_train_job(quiet):
    spec = padded_graph(198)
    r = quiet.client.post("/api/jobs", json={"kind": "train", "params": {"architecture": spec, "batch_size": 1}})
    assert r.status_code == 400, r.text
    p = cost.profile(spec, (1, 8, 8), 10)
    assert p.train_bytes > 8 * 2**30  # ~8.7 GB for one sample
    assert f"{p.train_bytes:,} bytes" in r.json()["detail"] and "TOROID_MAX_ACTIVATION_BYTES" in r.json()["detail"]
    assert _count(Job) == 0


def test_a_train_batch_that_does_not_fit_the_worker_is_refused(quiet):
    """Under the activation limit per sample, but 4096 samples of it are more than the 2 GiB worker budget."""
    spec = padded_graph(8)
    p = cost.profile(spec, (1, 8, 8), 10)
    assert p.train_bytes < 32 * 2**20 and 4096 * p.train_bytes > 2 * 2**30
    r = quiet.client.post("/api/jobs", json={"kind": "train", "params": {"architecture": spec, "batch_size": 4096}})
    assert r.status_code == 400, r.text
    assert "one batch of 4096 samples" in r.json()["detail"] and "TOROID_WORKER_MEMORY" in r.json()["detail"]
    ok = quiet.client.post("/api/jobs", json={"kind": "train", "params": {"architecture": spec, "batch_size": 16,
                                                                         "epochs": 1}})
    assert ok.status_code == 202, ok.text


def test_costs_are_flops_of_the_traced_graph(quiet):
    net = upload(quiet.client, name="small").json()["id"]
    p = cost.profile(SPEC, (1, 8, 8), 10)
    assert p.flops == 2 * (64 * 16 + 16 * 10)
    job = quiet.submit("flatness", network=net, draws=3, sigmas=[0.0, 0.1, 0.2])
    with new_session() as s:
        row = s.get(Job, job["id"])
        n_train, _ = kinds.data.split_sizes("digits", {})
        points = 1 + 3 * 2
        assert row.cost == points * (n_train * p.flops + kinds.PARAM_FLOPS * p.params)
        assert row.queue == "interactive"
    # a conv net of as many parameters costs far more than the MLP: its cost follows its activations
    conv = {"kind": "graph", "layers": [{"type": "conv", "out": 16, "kernel": 3, "padding": 1}, {"type": "relu"},
                                        {"type": "adaptive_avgpool", "size": 1}, {"type": "flatten"}, {"type": "linear"}]}
    assert cost.profile(conv, (1, 8, 8), 10).flops > 5 * cost.profile({"kind": "mlp", "hidden": [2]}, (1, 8, 8), 10).flops


def test_dry_run_answers_the_estimate_and_creates_nothing(quiet):
    net = upload(quiet.client, name="dry").json()["id"]
    jobs_before = _count(Job)
    r = quiet.client.post("/api/jobs?dry_run=true", json={"kind": "flatness", "params": {"network": net, "draws": 5}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dry_run"] is True and out["queue"] == "interactive" and out["kind"] == "flatness"
    assert out["params"]["draws"] == 5 and len(out["params"]["sigmas"]) == 11  # normalised: defaults filled in
    assert out["cost_flops"] > 0 and out["memory_bytes"] > 0
    p = cost.profile(SPEC, (1, 8, 8), 10)
    assert out["per_sample"] == {"flops": p.flops, "forward_bytes": p.forward_bytes, "train_bytes": p.train_bytes,
                                 "parameters": p.params}
    assert out["estimated_seconds"] is None and out["flops_per_second"] is None  # nothing finished yet
    assert _count(Job) == jobs_before  # no row
    # nothing enqueued and no quota used: a user at one unfinished job short of the limit still submits
    bad = quiet.client.post("/api/jobs?dry_run=true", json={"kind": "flatness", "params": {"network": net, "draws": 0}})
    assert bad.status_code == 400 and "draws" in bad.json()["detail"]
    train = quiet.client.post("/api/jobs?dry_run=true", json={"kind": "train", "params": {"architecture": SPEC}})
    assert train.status_code == 200 and train.json()["queue"] == "batch"
    assert train.json()["params"]["optimizer"] == "sgd" and train.json()["params"]["batch_size"] == 128


def test_dry_run_estimates_seconds_from_the_queue_throughput(quiet):
    from datetime import timedelta

    from backend.models import utcnow

    net = upload(quiet.client, name="timed").json()["id"]
    now = utcnow()
    with new_session() as s:  # two finished jobs of the interactive queue: 1e9 and 3e9 FLOPs/s
        for k, rate in enumerate((1e9, 3e9, 2e9)):
            s.add(Job(kind="evaluate", params={"network": net, "k": k}, inputs=[net], owner="local", visibility="lab",
                      cache_key=f"timed{k}", queue="interactive", cost=rate * 10, status="succeeded", progress=1.0,
                      created_at=now, started_at=now - timedelta(seconds=10), finished_at=now))
        s.commit()
    n = _count(Job)
    out = quiet.client.post("/api/jobs?dry_run=true", json={"kind": "flatness", "params": {"network": net}}).json()
    assert out["flops_per_second"] == pytest.approx(2e9)  # the median (the upload's evaluate job never ran)
    assert out["estimated_seconds"] == pytest.approx(out["cost_flops"] / 2e9)
    assert _count(Job) == n


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


WORKER_BUDGET = 900 * 2**20


@pytest.fixture(params=["embedded", "services"])
def budgeted(request):
    """A stack with a real Celery worker whose memory budget is 900 MiB, its baseline included."""
    s = make_stack(f"budget{request.param[0]}", with_worker=True, backend=request.param,
                   extra={"TOROID_WORKER_MEMORY": str(WORKER_BUDGET)})
    yield s
    close_stack(s)


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="needs Linux /proc to find the worker's pool process")
def test_a_worker_runs_many_draws_within_its_budget(budgeted):
    """Issue 26: flatness memory grew as ~256 B x draws^2. A real worker with TOROID_WORKER_MEMORY = 900 MiB runs
    3,000 draws x 2 noise levels (three chunks of 3,001 points; the old code held 6,001 x 3,001 x 16 float64
    coefficients per piece, 2.3 GB) and its pool process's peak resident memory stays under the budget."""
    net = upload(budgeted.client, name="drawn").json()["id"]
    budgeted.run("flatness", network=net, draws=2, sigmas=[0.0, 0.1, 0.3])  # warm: the worker's baseline
    (pool,) = _children(budgeted.worker.pid)
    baseline = _status(pool, "VmRSS")
    assert baseline < WORKER_BUDGET
    with open(f"/proc/{pool}/clear_refs", "w") as f:
        f.write("5")  # the high-water mark restarts from the baseline
    job = budgeted.run("flatness", network=net, draws=3000, sigmas=[0.0, 0.1, 0.3])
    assert job["result"]["draws"] == 3000 and job["result"]["chunks"] == 3
    peak = _status(pool, "VmHWM")
    assert _children(budgeted.worker.pid) == [pool]  # the same process did the work
    print(f"worker pool process: baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    assert peak <= WORKER_BUDGET, (baseline / 2**20, peak / 2**20)


def test_a_dry_run_at_the_job_limit_is_answered_and_uses_no_quota():
    s = make_stack("costq", with_worker=False, backend="embedded", reconcile=False,
                   extra={"TOROID_MAX_RUNNING_JOBS": "1"})
    try:
        net = upload(s.client, name="limit").json()["id"]  # its evaluate job: one unfinished job, the limit
        r = s.client.post("/api/jobs?dry_run=true", json={"kind": "flatness", "params": {"network": net}})
        assert r.status_code == 200, r.text
        n = _count(Job)
        again = s.client.post("/api/jobs?dry_run=true", json={"kind": "flatness", "params": {"network": net}})
        assert again.status_code == 200 and _count(Job) == n
        real = s.client.post("/api/jobs", json={"kind": "flatness", "params": {"network": net}})
        assert real.status_code == 429  # the real submission is refused: the dry runs counted nothing
    finally:
        close_stack(s)
