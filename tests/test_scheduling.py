"""Interactive work never waits behind batch work (issue 16): `toroid serve` runs one worker per queue,
so a path job submitted while a long train runs starts and finishes while the train is still running.
Queued jobs say their place in the queue, running ones their ETA; a long train reports every epoch.
"""
from __future__ import annotations

import time

import pytest

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
        # the next one starts when the running train ends (one batch worker, busy with it)
        now_eta = client.job(train["id"])["eta_seconds"]
        start = client.job(later[0]["id"])["starts_in_seconds"]
        assert start is not None and abs(start - now_eta) <= max(5.0, 0.25 * now_eta), (start, now_eta)
        listed = {j["id"]: j for j in client.jobs(kind="train", limit=50)}
        assert [listed[j["id"]]["queue_position"] for j in later] == [1, 2]

        # the Jobs view shows both: the place of each queued train, the ETA of the running one
        page.goto(f"{server['url']}/#/jobs?kind=train")
        first = page.wait_for_selector(f"#jobs-table tr[data-job='{later[0]['id']}'] .queue-position[data-position='1']")
        assert float(first.get_attribute("data-starts")) > 0 and "starts in about" in first.inner_text()
        page.wait_for_selector(f"#jobs-table tr[data-job='{later[1]['id']}'] .queue-position[data-position='2']")
        eta = page.wait_for_selector(f"#jobs-table tr[data-job='{train['id']}'] .eta")
        assert float(eta.get_attribute("data-eta")) > 0 and "left" in eta.inner_text()
        assert "next in its queue" in page.inner_text(f"#jobs-table tr[data-job='{later[0]['id']}']")
        # a running train's epoch line is readable: its cell is wide enough for a few words a line (before: about
        # 90 px at 1280 px, one word a line) and the table fits its frame (before: the actions ran past it)
        cell = page.eval_on_selector(f"#jobs-table tr[data-job='{train['id']}'] td.message", "e => e.getBoundingClientRect().width")
        wrap = page.eval_on_selector("#jobs-table", "e => [e.parentElement.scrollWidth, e.parentElement.clientWidth]")
        assert cell >= 220 and wrap[0] <= wrap[1], (cell, wrap)  # no column hidden to the right
        shot(page, "jobs-queue")

        # the running train's live curve: a point per reported epoch, growing while it runs
        page.click(f"#jobs-table tr[data-job='{train['id']}'] a[data-live]")
        page.wait_for_function("() => location.hash.startsWith('#/network?job=')")
        page.wait_for_function("() => { const d = document.getElementById('history-plot'); return d && d.data && d.data[0].x.length >= 2; }",
                               timeout=90_000)
        seen = page.evaluate("() => document.getElementById('history-plot').data[0].x.length")
        page.wait_for_function(f"() => document.getElementById('history-plot').data[0].x.length > {seen}", timeout=90_000)
        curve = page.evaluate("() => document.getElementById('history-plot').data.map(t => ({name: t.name, x: t.x, y: t.y}))")
        assert [t["name"] for t in curve] == ["train error", "test error", "train loss", "test loss"]
        assert curve[0]["x"] == sorted(curve[0]["x"]) and all(1 <= e <= 400 for e in curve[0]["x"])
        assert all(0 <= v <= 100 for v in curve[0]["y"] + curve[1]["y"])
        # the losses too (before: errors only), on their own axis, shown when clicked in the legend
        assert curve[2]["x"] == curve[0]["x"] and all(v is not None and v > 0 for v in curve[2]["y"] + curve[3]["y"])
        page.locator("#history-plot g.traces", has_text="train loss").locator("rect.legendtoggle").click()
        page.wait_for_function("() => document.getElementById('history-plot').data[2].visible === true")
        n = len(curve[0]["x"])
        page.wait_for_function(f"() => document.getElementById('history-plot').data[0].x.length > {n}", timeout=90_000)
        assert page.evaluate("() => document.getElementById('history-plot').data[2].visible") is True  # stays on
        assert "Training sched-long" in page.inner_text("#network-title")
        shot(page, "network-live")

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


@pytest.fixture
def own_db():
    """A database of its own (embedded, no worker): nothing else queued in it."""
    from .conftest import close_stack, make_stack

    stack = make_stack("sched", with_worker=False)
    yield stack
    close_stack(stack)


def test_queue_places_follow_the_workers_fair_rule_and_eta_from_cost(own_db):
    """Places are the claim rule played forward (backend/fairness.py): the owner whose jobs hold or did the
    least work in the window first, the oldest of theirs; a job attached to an equal one has no place. A running job too young for a progress rate
    gets its ETA from its cost and the seconds per cost unit of finished jobs of its kind."""
    from datetime import timedelta

    from backend.db import new_session, read_connection
    from backend.models import Job, utcnow
    from backend.routes.jobs import add_queue_positions, job_dict

    now = utcnow()
    with new_session() as s:
        mk = lambda **kw: Job(kind=kw.pop("kind", "path"), params={}, inputs=[], cache_key=str(kw.pop("key")), **kw)  # noqa: E731
        running = mk(key=0, owner="ann", status="running", queue="batch", started_at=now - timedelta(seconds=4),
                     progress=0.0, cost=2000.0, kind="train")
        # bob's finished work ended before the fair-share window (an hour): it no longer counts for him
        done = [mk(key=10 + k, owner="bob", status="succeeded", queue="batch", kind="train", cost=1000.0,
                   started_at=now - timedelta(seconds=4000), finished_at=now - timedelta(seconds=4000 - sec))
                for k, sec in enumerate((9, 10, 30))]  # 9, 10 and 30 s for cost 1000: median 0.01 s per unit
        a1 = mk(key=1, owner="ann", status="queued", queue="batch", kind="train", cost=1000.0)
        a2 = mk(key=2, owner="ann", status="queued", queue="batch", cost=300.0)  # a path: no finished one to time
        b1 = mk(key=3, owner="bob", status="queued", queue="batch", kind="train", cost=500.0)
        i1 = mk(key=4, owner="ann", status="queued", queue="interactive")
        twin = mk(key=5, owner="bob", status="queued", queue="batch")
        a3 = mk(key=6, owner="ann", status="queued", queue="batch", kind="train", cost=100.0)
        s.add_all([running, *done, a1, a2, b1, i1])
        s.flush()
        s.add(a3)
        s.flush()
        twin.attached_to = b1.id
        s.add(twin)
        s.commit()
        ids = {n: j.id for n, j in (("run", running), ("a1", a1), ("a2", a2), ("b1", b1), ("i1", i1), ("twin", twin),
                                    ("a3", a3))}
    with read_connection() as conn:
        with new_session() as s:
            rows = {n: job_dict(s.get(Job, i)) for n, i in ids.items()}
        before = utcnow()
        out = {n: j for n, j in zip(rows, add_queue_positions(conn, list(rows.values())))}
        after = utcnow()
    # ann has a job running (cost 2000), bob nothing in the window: bob's job goes first although it is younger
    # (then bob has 500 running, less than ann's 2000, but nothing else queued); then ann's, oldest first
    assert out["b1"]["queue_position"] == 1 and out["a1"]["queue_position"] == 2 and out["a2"]["queue_position"] == 3
    assert out["i1"]["queue_position"] == 1  # a queue of its own
    assert out["twin"]["queue_position"] is None and out["run"]["queue_position"] is None
    # cost 2000 x 0.01 s per unit = 20 s, less the time it has run (4 s when inserted)
    started = now - timedelta(seconds=4)
    assert 20 - (after - started).total_seconds() - 1e-6 <= out["run"]["eta_seconds"] <= 20 - (before - started).total_seconds() + 1e-6
    # when queued jobs start (before: queued jobs had a place, no time): the one busy batch worker is free after
    # the running train's ETA; then b1 (cost 500: 5 s), a1 (1000: 10 s), a2 (a path: no rate known), a3
    assert out["a3"]["queue_position"] == 4
    free = out["run"]["eta_seconds"]
    slack = (after - before).total_seconds() + 1e-6
    assert out["b1"]["starts_in_seconds"] == pytest.approx(free, abs=slack)
    assert out["a1"]["starts_in_seconds"] == pytest.approx(free + 5, abs=slack)
    assert out["a2"]["starts_in_seconds"] == pytest.approx(free + 15, abs=slack)
    assert out["a3"]["starts_in_seconds"] is None  # behind a job of unknown duration
    assert out["i1"]["starts_in_seconds"] is None  # nothing runs in its queue: no worker known to serve it
    assert out["run"]["starts_in_seconds"] is None and out["twin"]["starts_in_seconds"] is None
