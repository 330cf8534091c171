"""Many requests at once against `toroid serve`: every one is answered. A request holds a pooled
database connection only inside one worker thread (backend.db.in_session / read); a design where a
request kept its connection while waiting for a thread deadlocked here with more requests in flight
than the pool has connections."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx

from backend.client import Client

from .helpers import SPEC, random_state


def test_a_burst_of_writes_and_reads_is_all_answered(server):
    client = Client(server["url"])
    a = client.upload(random_state(seed=31), name="burst-a", architecture=SPEC)["id"]
    b = client.upload(random_state(seed=32), name="burst-b", architecture=SPEC)["id"]
    path = {"a": a, "b": b, "points": 3}
    assert client.wait(client.submit("path", **path), timeout=180)["status"] == "succeeded"

    async def burst():
        async with httpx.AsyncClient(base_url=server["url"], timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as http:
            requests = []
            for i in range(40):  # 160 requests in flight, well over the pool's connections
                requests += [http.post("/api/jobs", json={"kind": "path", "params": path}),
                             http.patch(f"/api/networks/{a}", json={"tags": [f"burst-{i}"]}),
                             http.get(f"/api/networks/{b}"),
                             http.get("/api/networks", params={"q": "burst"})]
            return await asyncio.wait_for(asyncio.gather(*requests), timeout=120)

    with ThreadPoolExecutor(1) as pool:  # its own event loop (a browser test may hold this thread's)
        answers = pool.submit(asyncio.run, burst()).result()
    assert [r.status_code for r in answers] == [202, 200, 200, 200] * 40
    submits = [r.json() for r in answers[::4]]
    assert all(j["cached"] and j["status"] == "succeeded" for j in submits)
    assert all(sorted(n["name"] for n in r.json()) == ["burst-a", "burst-b"] for r in answers[3::4])
    assert client.network(a)["tags"][0].startswith("burst-")
