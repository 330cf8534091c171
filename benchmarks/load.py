"""Load run: many concurrent clients against `toroid serve` on PostgreSQL + Redis.

Clients list networks, read a network, read a result and submit a job that the cache answers, in a
loop, for a fixed time. Prints throughput, p50/p99 latency per operation and the error count.
Goal on a 2-core machine: 0 errors, p99 under 100 ms for reads.

    python benchmarks/load.py [--clients 50] [--seconds 20] [--repeat 3] [--auth] [--database-url ...]

Each operation runs ``--repeat`` times for ``--seconds / 5`` seconds, interleaved; the table shows the
median rate, p50 and p99 over the repeats, the worst p99, and each rate against a baseline measured in
the same run: an endpoint that does no database work (``/api/me``), the ceiling of the web stack.

With Debian's `wrk` installed (apt-get install wrk) each operation is driven by wrk, a C load
generator, so that the client does not eat the cores the server is measured on; without it (or with
--client python) an asyncio httpx client is used, which itself costs a core at ~200 requests/s.
Only loopback addresses are used; the run is bounded in time and stops by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def prepare_database(url: str, schema: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    from urllib.parse import quote

    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"


def seed(url: str, n_networks: int, token: str | None = None) -> dict:
    from backend.client import Client

    sys.path.insert(0, str(ROOT))
    from tests.helpers import random_state

    c = Client(url, token=token)
    ids = [c.upload(random_state(seed=i), name=f"load-{i}", architecture={"kind": "mlp", "hidden": [16]})["id"]
           for i in range(n_networks)]
    job = c.wait(c.submit("path", a=ids[0], b=ids[1], points=5), timeout=300)
    # each upload queued an evaluation: let the worker finish them, so that it does not compete
    for _ in tqdm(range(600), desc="evaluations", unit="poll", leave=False):
        if not any(c.jobs(status=state, limit=1) for state in ("queued", "running")):
            break
        time.sleep(0.5)
    return {"ids": ids, "result_id": job["result_id"], "path": {"a": ids[0], "b": ids[1], "points": 5}}


async def client_loop(url: str, ctx: dict, until: float, samples: dict, errors: list, k: int,
                      token: str | None = None) -> None:
    ops = operations(ctx)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
        i = k
        while time.monotonic() < until:
            name, method, path, body = ops[i % len(ops)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await http.request(method, path, json=body)
                ok = r.status_code < 400 and (name != "submit cached job" or r.json().get("cached"))
            except httpx.HTTPError as exc:
                ok, r = False, exc
            samples.setdefault(name, []).append(time.perf_counter() - t0)
            if not ok:
                errors.append(f"{name}: {getattr(r, 'status_code', r)}")


def operations(ctx: dict) -> list[tuple[str, str, str, dict | None]]:
    return [
        ("baseline (no db)", "GET", "/api/me", None),
        ("list networks", "GET", "/api/networks", None),
        ("read network", "GET", f"/api/networks/{ctx['ids'][len(ctx['ids']) // 2]}", None),
        ("read result", "GET", f"/api/results/{ctx['result_id']}", None),
        ("submit cached job", "POST", "/api/jobs", {"kind": "path", "params": ctx["path"]}),
    ]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, ctx: dict, clients: int, seconds: float, home: Path, token: str | None,
            repeat: int) -> tuple[list, int]:
    """wrk runs per operation (``repeat`` times, interleaved); returns rows
    (name, requests/s, p50, median p99, worst p99) and the error count."""
    per_op: dict[str, list[tuple[float, float, float]]] = {}
    errors = 0
    ops = operations(ctx)
    for _ in range(repeat):
        for name, method, path, body in ops:
            script = home / "op.lua"
            lines = [f'wrk.method = "{method}"']
            if body is not None:
                lines += [f"wrk.body = {json.dumps(json.dumps(body))}", 'wrk.headers["Content-Type"] = "application/json"']
            if token:
                lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
            script.write_text("\n".join(lines) + "\n")
            out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--latency", "-s", str(script),
                                  url + path], capture_output=True, text=True, check=True).stdout
            p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
            p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            errors += (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            per_op.setdefault(name, []).append((rate, p50, p99))
    rows = []
    for name, runs in per_op.items():
        rows.append((name, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                     statistics.median(r[2] for r in runs), max(r[2] for r in runs)))
    return rows, errors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--networks", type=int, default=200)
    p.add_argument("--api-workers", type=int, default=2, help="API processes (toroid serve --api-workers)")
    p.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per operation (interleaved); medians are shown")
    p.add_argument("--auth", action="store_true", help="require API tokens (as a lab server does) and send one")
    p.add_argument("--database-url", default=os.environ.get("TOROID_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--broker-url", default=os.environ.get("TOROID_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"))
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="toroid-load-"))
    env = {**os.environ, "TOROID_HOME": str(home), "TOROID_BROKER_URL": args.broker_url,
           "TOROID_DATABASE_URL": prepare_database(args.database_url, "toroid_load"),
           "TOROID_MAX_RUNNING_JOBS": "1000000", "TOROID_AUTH": "on" if args.auth else "off"}
    import redis

    redis.Redis.from_url(args.broker_url).flushdb()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    token = None
    if args.auth:  # a user whose token every client sends
        added = subprocess.run([str(Path(sys.executable).parent / "toroid"), "user", "add", "bench", "--admin"], cwd=ROOT,
                               env=env, check=True, capture_output=True, text=True).stdout
        token = added.strip().splitlines()[-1]
    server = start([str(bin_dir / "toroid"), "serve", "--port", str(port), "--no-worker",
                    "--api-workers", str(args.api_workers)], env, home / "api.log")
    worker = start([str(bin_dir / "toroid"), "worker"], env, home / "worker.log")
    try:
        from backend.client import Client

        try:
            Client(url).wait_ready(timeout=60, alive=lambda: server.poll() is None)
        except TimeoutError:
            print((home / "api.log").read_text()[-2000:])
            return 1
        print(f"seeding {args.networks} networks and one finished path job ...", flush=True)
        ctx = seed(url, args.networks, token)
        use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
        if use_wrk:
            seconds = max(args.seconds / 5, 2)
            print(f"wrk: {args.clients} connections, each operation {args.repeat} x {seconds:.0f} s, against {url} "
                  f"(PostgreSQL + Redis, {args.api_workers} API processes, tokens {'on' if token else 'off'}) ...",
                  flush=True)
            rows, n_errors = run_wrk(url, ctx, args.clients, seconds, home, token, args.repeat)
            base = rows[0][1]
            print(f"{'operation':<20} {'req/s':>8} {'vs base':>8} {'p50 ms':>8} {'p99 ms':>8} {'worst p99':>10}")
            for name, rate, p50, p99, worst in rows:
                print(f"{name:<20} {rate:>8.0f} {rate / base:>8.2f} {p50:>8.1f} {p99:>8.1f} {worst:>10.1f}")
            read_p99 = max(p99 for name, _, _, p99, _ in rows if name.startswith(("list", "read")))
            print(f"summary: {n_errors} errors; reads run at {min(r[1] for r in rows[1:4]) / base:.2f}x-"
                  f"{max(r[1] for r in rows[1:4]) / base:.2f}x the no-database baseline; worst median read p99 "
                  f"{read_p99:.1f} ms (goal: 0 errors, p99 < 100 ms)")
            return 0 if not n_errors else 1
        samples: dict[str, list[float]] = {}
        errors: list[str] = []
        print(f"{args.clients} clients for {args.seconds:.0f} s against {url} (PostgreSQL + Redis) ...", flush=True)
        t0 = time.monotonic()

        async def run_all():
            until = time.monotonic() + args.seconds
            await asyncio.gather(*(client_loop(url, ctx, until, samples, errors, k, token) for k in range(args.clients)))

        asyncio.run(run_all())
        elapsed = time.monotonic() - t0
        total = sum(len(v) for v in samples.values())
        print(f"{'operation':<20} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
        worst_read_p99 = 0.0
        for name, values in samples.items():
            q = statistics.quantiles(values, n=100)
            p50, p99 = 1000 * statistics.median(values), 1000 * q[98]
            if name.startswith(("list", "read")):
                worst_read_p99 = max(worst_read_p99, p99)
            print(f"{name:<20} {len(values):>9} {p50:>8.1f} {p99:>8.1f}")
        if errors:
            print("first errors:", errors[:5])
        print(f"summary: {total / elapsed:.0f} requests/s, {len(errors)} errors, worst read p99 {worst_read_p99:.1f} ms "
              f"(goal: 0 errors, p99 < 100 ms)")
        return 0 if not errors else 1
    finally:
        for proc in (server, worker):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
