"""Jobs end to end through a real Celery worker process, on each backend (embedded; PostgreSQL + Redis)."""
from __future__ import annotations

import csv
import io
import time

from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import nets

from .helpers import SPEC, plain_error, random_state, upload

TRAIN = {"architecture": {"kind": "mlp", "hidden": [24]}, "dataset": "digits", "optimizer": "sgd",
         "epochs": 15, "seed": 0}


def test_train_job_stores_a_network_with_its_errors(live):
    job = live.run("train", **TRAIN, name="trained-0")
    assert 0.0 < job["progress"] <= 1.0 and job["result"]["network_id"]
    net = live.client.get(f"/api/networks/{job['result']['network_id']}").json()
    assert net["name"] == "trained-0" and net["source"]["optimizer"] == "sgd"
    assert len(net["history"]) == 15
    # the stored errors agree with an independent evaluation of the stored weights
    d = datasets.load_dataset("digits", net["dataset_options"])
    state = load(live.client.get(f"/api/networks/{net['id']}/weights").content)
    assert abs(net["train_error"] - plain_error(net["architecture"], state, d.x_train, d.y_train)) <= 1 / len(d.y_train)
    assert abs(net["test_error"] - plain_error(net["architecture"], state, d.x_test, d.y_test)) <= 1 / len(d.y_test)
    assert net["train_error"] < 0.2  # it learned something (chance is 0.9)


def test_upload_is_evaluated_by_the_worker(live):
    state = random_state(seed=11)
    net = upload(live.client, state, name="uploaded").json()
    evaluation = [j for j in live.client.get("/api/jobs").json() if j["kind"] == "evaluate" and net["id"] in j["inputs"]]
    assert len(evaluation) == 1
    live.wait(evaluation[0]["id"])
    net = live.client.get(f"/api/networks/{net['id']}").json()
    d = datasets.load_dataset("digits")
    assert net["train_error"] == plain_error(SPEC, state, d.x_train, d.y_train)
    assert net["test_error"] == plain_error(SPEC, state, d.x_test, d.y_test)


def test_linear_path_matches_plain_pytorch_and_is_cached(live):
    ids = [live.run("train", **{**TRAIN, "seed": s}, name=f"p{s}")["result"]["network_id"] for s in (1, 2)]
    job = live.run("path", a=ids[0], b=ids[1], type="linear", points=5)
    r = job["result"]
    assert r["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    d = datasets.load_dataset("digits")
    spec = nets.normalize_spec(TRAIN["architecture"])
    sa, sb = (load(live.client.get(f"/api/networks/{i}/weights").content) for i in ids)
    # ends equal the networks' own errors; the midpoint equals an independently interpolated network
    for t, k in ((0.0, 0), (0.5, 2), (1.0, 4)):
        mid = {n: (1 - t) * sa[n] + t * sb[n] for n in sa}
        assert abs(r["train_error"][k] - plain_error(spec, mid, d.x_train, d.y_train)) <= 1 / len(d.y_train)
        assert abs(r["test_error"][k] - plain_error(spec, mid, d.x_test, d.y_test)) <= 1 / len(d.y_test)
    assert r["barrier"] == max(r["train_error"])
    assert abs(r["barrier_excess"] - (r["barrier"] - (r["train_error"][0] + r["train_error"][-1]) / 2)) < 1e-12
    # the same request again is answered at once from the cache, with the same result
    again = live.submit("path", a=ids[0], b=ids[1], type="linear", points=5)
    assert again["status"] == "succeeded" and again["cached"] and again["cached_from"] == job["id"]
    assert again["result"] == r
    # the result is also readable as CSV
    rows = list(csv.reader(io.StringIO(live.client.get(f"/api/results/{job['result_id']}?format=csv").text)))
    header = rows[0]
    assert header[0] == "t" and {"train_error", "test_error", "train_loss", "test_loss"} <= set(header) and len(rows) == 6
    row = dict(zip(header, rows[3]))
    assert float(row["t"]) == 0.5 and float(row["train_error"]) == r["train_error"][2]


def test_cancel_a_running_job(live):
    job = live.submit("train", **{**TRAIN, "epochs": 400, "seed": 7}, name="to-cancel")
    deadline = time.monotonic() + 60
    while live.client.get(f"/api/jobs/{job['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    networks_before = len(live.client.get("/api/networks").json())
    r = live.client.delete(f"/api/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    time.sleep(2.0)  # the worker notices at its next progress report and stores nothing
    assert live.client.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert len(live.client.get("/api/networks").json()) == networks_before
    assert not [n for n in live.client.get("/api/networks").json() if n["name"] == "to-cancel"]
    assert live.client.delete(f"/api/jobs/{job['id']}").status_code == 409
    # the worker is free again
    some = live.client.get("/api/networks").json()[0]["id"]
    live.run("path", a=some, b=some, points=2)


def test_a_failing_job_reports_why(live):
    net = upload(live.client, random_state(seed=5), name="will-vanish").json()
    for job in live.client.get("/api/jobs").json():
        if net["id"] in job["inputs"]:
            live.wait(job)
    # remove the weights file behind the service's back: the job must fail with a message, not hang
    (live.home / "store" / net["weights_hash"][:2] / f"{net['weights_hash']}.safetensors").unlink()
    done = live.wait(live.submit("path", a=net["id"], b=net["id"], points=3))
    assert done["status"] == "failed"
    assert f"weights of network {net['id']}" in done["error"] and "missing" in done["error"]


def test_prometheus_metrics_count_jobs_by_state(live):
    some = upload(live.client, random_state(seed=41), name="metrics").json()["id"]
    live.run("path", a=some, b=some, points=3)
    for job in live.client.get("/api/jobs?limit=1000").json():  # let every job end: stable counts
        if job["status"] in ("queued", "running"):
            live.wait(job)
    text = live.client.get("/metrics").text
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
    jobs = live.client.get("/api/jobs?limit=1000").json()
    succeeded = sum(j["status"] == "succeeded" for j in jobs)
    assert lines['toroid_jobs{state="succeeded"}'] == succeeded
    assert lines['toroid_jobs{state="queued"}'] == sum(j["status"] == "queued" for j in jobs)
    assert lines['toroid_job_duration_seconds_count{kind="path"}'] >= 1
    assert lines["toroid_networks"] == len(live.client.get("/api/networks").json())
    assert 'toroid_queue_depth{queue="batch"}' in lines and 'toroid_queue_depth{queue="interactive"}' in lines
