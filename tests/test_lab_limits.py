"""A shared lab server under races and greedy users (issue 12 items 5, 7, 10, 11, 12): quotas hold under
parallel submits, equal jobs are computed once, a fanned-out job fans out once, costs are refused over
the limit, workers are shared fairly, and shapes are checked before the database is asked."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, func, select

from backend import jobs, lifecycle, networks
from backend.auth import Principal
from backend.db import get_engine, new_session
from backend.models import Job, Network, Result

from .conftest import close_stack, make_stack, start_worker, stop
from .helpers import SPEC, random_state, upload


def person(name: str, jobs_limit: int = 20, bytes_limit: int = 10**12) -> Principal:
    return Principal(name, False, jobs_limit, bytes_limit)


@pytest.fixture(params=["embedded", "services"])
def quiet(request):
    """A stack without a worker (nothing runs unless a test runs it), once per backend."""
    s = make_stack(f"limits{request.param[0]}", with_worker=False, backend=request.param, reconcile=False,
                   extra={"TOROID_MAX_JOB_COST": "1e12"})
    yield s
    stop(s.worker)
    close_stack(s)


def together(n: int, fn) -> list:
    """Call ``fn(k)`` for k < n from n threads released at once; the answers (or exceptions) in order."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(k: int) -> None:
        barrier.wait()
        try:
            out[k] = fn(k)
        except Exception as exc:  # noqa: BLE001
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_parallel_submits_never_pass_the_job_quota(quiet):
    net = upload(quiet.client, name="quota").json()["id"]
    carol = person("carol", jobs_limit=8)

    def submit(k: int) -> int:
        with new_session() as s:
            return jobs.submit(s, "flatness", {"network": net, "seed": k, "draws": 1}, user=carol).id

    answers = together(30, submit)
    refused = [a for a in answers if isinstance(a, jobs.JobError)]
    assert all(a.status == 429 for a in refused) and not [a for a in answers if isinstance(a, Exception)
                                                           and not isinstance(a, jobs.JobError)]
    with new_session() as s:
        assert lifecycle.unfinished(s, "carol") == 8 == 30 - len(refused)


def test_parallel_stores_never_pass_the_byte_quota(quiet):
    from backend import store

    state = random_state(SPEC, seed=9)
    h, size = store.put(state)

    def create(k: int) -> int:
        with new_session() as s:
            net = networks.create_network(s, max_stored_bytes=5 * size, name=f"race-{k}", owner="dave", architecture=SPEC,
                                          dataset="digits", dataset_options={}, source={}, tags=[], history=[],
                                          weights_hash=h, weights_bytes=size, n_params=1)
            s.commit()
            return net.id

    answers = together(12, create)
    assert sum(isinstance(a, int) for a in answers) == 5
    assert all(isinstance(a, networks.QuotaError) for a in answers if not isinstance(a, int))
    with new_session() as s:
        assert networks.stored_bytes(s, "dave") == 5 * size


def test_equal_jobs_submitted_together_are_computed_once(quiet):
    from .test_registry import run_queued

    net = upload(quiet.client, name="single-flight").json()["id"]
    run_queued(quiet)
    users = [person("erin"), person("frank")]

    def submit(k: int) -> int:
        with new_session() as s:
            params = {"network": net, "sigmas": [0.0, 0.2], "draws": 2} if k % 2 else {"network": net, "draws": 2,
                                                                                          "sigmas": [0.0, 0.2], "seed": 0}
            return jobs.submit(s, "flatness", params, user=users[k % 2]).id

    ids = together(10, submit)
    assert all(isinstance(i, int) for i in ids), ids
    with new_session() as s:
        rows = s.scalars(select(Job).where(Job.id.in_(ids))).all()
        leaders = [j for j in rows if j.attached_to is None]
        assert len(leaders) == 1 and all(j.attached_to == leaders[0].id for j in rows if j is not leaders[0])
        results_before = s.scalar(select(func.count(Result.id)))
    run_queued(quiet)
    with new_session() as s:
        rows = s.scalars(select(Job).where(Job.id.in_(ids))).all()
        assert {j.status for j in rows} == {"succeeded"} and len({j.result_id for j in rows}) == 1
        assert s.scalar(select(func.count(Result.id))) == results_before + 1
    # trains: one network for five equal submissions; a cancelled leader hands over to a follower
    train = {"architecture": {"kind": "mlp", "hidden": [4]}, "epochs": 1, "name": "once"}
    def submit_train(k: int) -> int:
        with new_session() as s:
            return jobs.submit(s, "train", dict(train), user=users[0]).id

    ids = together(5, submit_train)
    with new_session() as s:
        first = min(ids)
        assert lifecycle.cancel(s, first)
        heir = s.scalars(select(Job).where(Job.id.in_(ids), Job.attached_to.is_(None), Job.status == "queued")).all()
        assert len(heir) == 1
    run_queued(quiet)
    with new_session() as s:
        done = s.scalars(select(Job).where(Job.id.in_(ids))).all()
        assert sorted(j.status for j in done) == ["cancelled"] + ["succeeded"] * 4
        assert s.scalar(select(func.count(Network.id)).where(Network.name == "once")) == 1


def test_the_cost_of_a_job_is_estimated_and_refused_over_the_limit(quiet):
    net = upload(quiet.client, name="costly").json()["id"]
    r = quiet.client.post("/api/jobs", json={"kind": "flatness", "params": {"network": net, "draws": 10000,
                                                                            "sigmas": [0.1] * 100}})
    assert r.status_code == 400 and "TOROID_MAX_JOB_COST" in r.json()["detail"]
    assert "1e+12" in r.json()["detail"] and "cost about" in r.json()["detail"]
    r = quiet.client.post("/api/jobs", json={"kind": "train", "params": {"architecture": {"kind": "mlp", "hidden": [256]},
                                                                         "epochs": 100000}})
    assert r.status_code == 400 and "TOROID_MAX_JOB_COST" in r.json()["detail"]
    ok = quiet.submit("flatness", network=net)  # the defaults fit
    with new_session() as s:
        job = s.get(Job, ok["id"])
        assert 0 < job.cost < 1e12 and job.queue == "interactive"


def test_a_worker_takes_the_oldest_job_of_the_user_with_fewest_running(quiet):
    net = upload(quiet.client, name="fair").json()["id"]
    from .test_registry import run_queued

    run_queued(quiet)
    with new_session() as s:
        greedy = [jobs.submit(s, "flatness", {"network": net, "seed": k, "draws": 1}, user=person("greedy")).id
                  for k in range(3)]
        modest = jobs.submit(s, "flatness", {"network": net, "seed": 99, "draws": 1}, user=person("modest")).id
    assert lifecycle.claim(greedy[0])[0] == greedy[0]  # nobody runs anything: the oldest
    assert lifecycle.claim(greedy[1])[0] == modest  # greedy has one running, modest none
    assert lifecycle.claim(greedy[2])[0] == greedy[1]
    assert lifecycle.claim(modest)[0] == greedy[2]
    assert lifecycle.claim(modest) is None  # nothing left: the message is dropped


def test_shapes_and_lengths_are_checked_before_the_database_is_asked(quiet):
    net = upload(quiet.client, name="shapes").json()["id"]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if "networks" in statement:
            statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        r = quiet.client.post("/api/jobs", json={"kind": "matrix", "params": {"networks": list(range(1, 100_001))}})
        assert r.status_code == 400  # (the request's own limit on JSON values answers first)
        for params, words in (({"networks": list(range(1, 9_001))}, "2 to 64"),
                              ({"networks": [net, net]}, "distinct"),
                              ({"networks": [net, "x"], "points": 3, "barriers": True}, "network id"),
                              ({"networks": [net, net + 1], "barriers": "yes"}, "barriers")):
            r = quiet.client.post("/api/jobs", json={"kind": "matrix", "params": params})
            assert r.status_code == 400 and words in r.json()["detail"], r.text
        r = quiet.client.post("/api/jobs", json={"kind": "plane", "params": {"networks": [net, net + 1], "grid": 0}})
        assert r.status_code == 400 and "three" in r.json()["detail"]
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _waiting(stack, queue: str) -> int:
    """Messages waiting in ``queue`` of the stack's broker (Redis list, or files of the embedded broker)."""
    if stack.env.get("TOROID_BROKER_URL", "").startswith("redis"):
        import redis

        return int(redis.Redis.from_url(stack.env["TOROID_BROKER_URL"]).llen(stack.env["TOROID_BROKER_PREFIX"] + queue))
    return sum(1 for f in (stack.home / "broker" / "queue").iterdir() if f.name.endswith(f".{queue}.msg"))


@pytest.mark.parametrize("backend", ["embedded", "services"])
def test_a_fanned_out_job_waiting_in_the_queue_is_not_lost_and_fans_out_once(backend):
    """Its chunks wait behind other work (here: no worker at all); the reconciler leaves it alone, a second
    fan-out of the same attempt is refused, and a worker started later finishes it once."""
    from workers.glue import tasks

    s = make_stack(f"fanwait{backend[0]}", with_worker=False, backend=backend, reconcile=False,
                   extra={"TOROID_FANOUT_PAIRS": "1", "TOROID_HEARTBEAT_TIMEOUT": "1", "TOROID_RESEND_AFTER": "1"})
    try:
        ids = [upload(s.client, random_state(SPEC, seed=k), name=f"fan-{k}").json()["id"] for k in range(3)]
        job = s.submit("matrix", networks=ids)
        with new_session() as session:
            queue = session.get(Job, job["id"]).queue
        assert tasks.execute(job["id"]) == "fanned out"
        waiting = _waiting(s, queue)
        assert waiting >= 4  # three chunks and the job's own message (and, embedded, the chord's unlock task)
        time.sleep(2.5)  # the job's heartbeat is old now, and so is every message
        with new_session() as session:
            assert jobs.reconcile(session)["requeued"] == []
            row = session.get(Job, job["id"])
            assert row.status == "running" and row.fanout == 3
            assert not lifecycle.fanned_out(session, job["id"], row.attempts, 3)
        assert _waiting(s, queue) == waiting  # nothing sent again
        s.worker = start_worker(s.env, s.home / "worker.log", "late")
        done = s.wait(job, timeout=120)
        assert done["status"] == "succeeded" and done["result"]["chunks"] == 3
        with new_session() as session:
            assert session.get(Job, job["id"]).attempts == 1
    finally:
        stop(s.worker)
        close_stack(s)
