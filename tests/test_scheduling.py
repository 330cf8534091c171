"""Interactive work never waits behind batch work (issue 16): `toroid serve` runs one worker per queue,
so a path job submitted while a long train runs starts and finishes while the train is still running.
Queued jobs say their place in the queue, running ones their ETA; a long train reports every epoch.
"""
from __future__ import annotations

import time

from .helpers import SPEC, random_state
from .test_dashboard_support import shot, wait_until


def test_path_job_finishes_while_a_long_train_runs(server, page):
    from backend.client import Client

    client = Client(server["url"])
    a = client.upload(random_state(SPEC, seed=501), name="sched-a", architecture=SPEC, dataset="digits")["id"]
    b = client.upload(random_state(SPEC, seed=502), name="sched-b", architecture=SPEC, dataset="digits")["id"]
    long = dict(architecture={"kind": "mlp", "hidden": [64, 64]}, dataset="digits", optimizer="sgd", epochs=400,
                batch_size=16, name="sched-long")
    train = client.submit("train", seed=11, **long)
    later = [client.submit("train", seed=12 + k, **long) for k in range(2)]  # behind it in the batch queue
    try:
        running = wait_until(lambda: (j := client.job(train["id"]))["status"] == "running" and j["progress"] > 0 and j,
                             timeout=120, what="the long train running")
        # a 400-epoch train reports per epoch (not 0% for minutes), and says when it will end
        running = wait_until(lambda: (j := client.job(train["id"]))["eta_seconds"] is not None and j, timeout=60,
                             what="an ETA")
        assert "/400" in running["message"] and running["eta_seconds"] > 0
        # the trains behind it know their place in the batch queue; running jobs have no place
        queued = [client.job(j["id"]) for j in later]
        assert [j["status"] for j in queued] == ["queued", "queued"]
        assert [j["queue_position"] for j in queued] == [1, 2]
        assert running["queue_position"] is None and queued[0]["eta_seconds"] is None
        listed = {j["id"]: j for j in client.jobs(kind="train", limit=50)}
        assert [listed[j["id"]]["queue_position"] for j in later] == [1, 2]

        # the Jobs view shows both: the place of each queued train, the ETA of the running one
        page.goto(f"{server['url']}/#/jobs?kind=train")
        page.wait_for_selector(f"#jobs-table tr[data-job='{later[0]['id']}'] .queue-position[data-position='1']")
        page.wait_for_selector(f"#jobs-table tr[data-job='{later[1]['id']}'] .queue-position[data-position='2']")
        eta = page.wait_for_selector(f"#jobs-table tr[data-job='{train['id']}'] .eta")
        assert float(eta.get_attribute("data-eta")) > 0 and "left" in eta.inner_text()
        assert "next in its queue" in page.inner_text(f"#jobs-table tr[data-job='{later[0]['id']}']")
        shot(page, "jobs-queue")

        # the interactive path job does not wait for any of them
        path = client.submit("path", a=a, b=b, type="linear", points=5)
        done = client.wait(path, timeout=120)
        assert done["status"] == "succeeded" and len(done["result"]["t"]) == 5
        still = client.job(train["id"])
        assert still["status"] == "running", "the path job waited for the train to end"
        assert [client.job(j["id"])["status"] for j in later] == ["queued", "queued"]
        # progress grows epoch by epoch
        first = still["progress"]
        grown = wait_until(lambda: (j := client.job(train["id"]))["progress"] > first and j, timeout=60,
                           what="the train's progress growing")
        assert grown["status"] == "running"
    finally:
        for j in (train, *later):
            try:
                client.cancel(j["id"])
            except Exception:  # noqa: BLE001 - it may have ended
                pass
    wait_until(lambda: client.job(train["id"])["status"] == "cancelled", timeout=30, what="the cancel")
    time.sleep(0.5)
