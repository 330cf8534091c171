"""/api/health while many users submit expensive specs at once (issue 26 item 4).

Starts the API alone (uvicorn, embedded SQLite and broker, tokens on, no worker: jobs stay queued) in a
fresh home, makes ``--users`` users, measures /api/health's latency idle, then while each user submits
train jobs with distinct layer graphs of ``--layers`` layers (every one needs its trace and its meta
sizes) as fast as answers come, for ``--seconds``. Prints p50 / p95 / max of health idle and under load,
their ratios (load / idle), and what the submits were answered (202 accepted, 429 a user's checks limit).

    python benchmarks/checks.py [--users 16] [--layers 398] [--seconds 20] [--one-user]

Run it against another checkout (e.g. the code before the change) with PYTHONPATH=that/checkout.
Only loopback addresses are used; the run stops by itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graph(layers: int, variant: int) -> dict:
    """``layers`` layers: (conv, relu) pairs, then pooling, flatten, dropout, the output layer; the first
    conv's width ``8 + variant`` makes every spec distinct (nothing remembered helps)."""
    pairs = (layers - 4) // 2
    out = []
    for k in range(pairs):
        out += [{"type": "conv", "out": 8 + variant if k == 0 else 8, "kernel": 3, "padding": 1}, {"type": "relu"}]
    return {"kind": "graph", "layers": out + [{"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "dropout"},
                                              {"type": "linear"}]}


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(int(0.95 * len(xs)), len(xs) - 1)], xs[-1]


def health_times(url: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    out, end = [], time.monotonic() + seconds
    with httpx.Client(timeout=60) as c:
        while time.monotonic() < end and not (stop and stop.is_set()):
            t = time.perf_counter()
            c.get(f"{url}/api/health").raise_for_status()
            out.append(time.perf_counter() - t)
            time.sleep(0.05)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--layers", type=int, default=398)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--one-user", action="store_true", help="every client is the same user (an attacker's burst)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="toroid-bench-checks-"))
    port = free_port()
    # the code under test: PYTHONPATH's checkout if given, else this one (the processes run in the fresh home,
    # so that the current folder never decides which code they import)
    code_root = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": code_root, "TOROID_HOME": str(home), "TOROID_AUTH": "on", "TOROID_MAX_RUNNING_JOBS": "100000",
           "OMP_NUM_THREADS": "1"}
    for key in ("TOROID_DATABASE_URL", "TOROID_BROKER_URL"):
        env.pop(key, None)
    code = [sys.executable, "-c", "import sys; from backend.config import get_settings; from backend.db import "
            "upgrade_database, new_session; from backend import auth; get_settings().ensure_dirs(); upgrade_database(); "
            "s = new_session(); print(' '.join(auth.create_user(s, f'user{k}')[1] for k in range(int(sys.argv[1]))))",
            str(args.users)]
    tokens = subprocess.run(code, env=env, cwd=home, check=True, capture_output=True, text=True).stdout.split()
    log = open(home / "api.log", "wb")
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "backend.app:create_app", "--port", str(port),
                            "--log-level", "warning"], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit(f"the API did not come up:\n{(home / 'api.log').read_text()[-2000:]}")
            time.sleep(0.3)
        idle = health_times(url, min(args.seconds / 2, 10))

        answers: Counter[int] = Counter()
        first_error: dict[int, str] = {}
        submit_times: list[float] = []
        stop = threading.Event()
        counter = iter(range(10**9))
        lock = threading.Lock()

        def client(token: str) -> None:
            with httpx.Client(timeout=300, headers={"Authorization": f"Bearer {token}"}) as c:
                while not stop.is_set():
                    with lock:
                        variant = next(counter)
                    body = {"kind": "train", "params": {"architecture": graph(args.layers, variant), "epochs": 1}}
                    t = time.perf_counter()
                    r = c.post(f"{url}/api/jobs", json=body)
                    with lock:
                        answers[r.status_code] += 1
                        submit_times.append(time.perf_counter() - t)
                        if r.status_code != 202 and r.status_code not in first_error:
                            first_error[r.status_code] = r.text[:300]
                    if r.status_code == 429:
                        time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(tokens[0] if args.one_user else tok,), daemon=True)
                   for tok in tokens]
        for t in threads:
            t.start()
        time.sleep(1.0)  # every client has a submit in flight
        loaded = health_times(url, args.seconds)
        stop.set()
        for t in threads:
            t.join(300)
    finally:
        api.terminate()
        try:
            api.wait(20)
        except subprocess.TimeoutExpired:
            api.kill()
        shutil.rmtree(home, ignore_errors=True)

    (i50, i95, imax), (l50, l95, lmax) = quantiles(idle), quantiles(loaded)
    s50, s95, smax = quantiles(submit_times) if submit_times else (0.0, 0.0, 0.0)
    print(f"code: {code_root}")
    print(f"{args.users} {'clients of one user' if args.one_user else 'users'} submitting train jobs with distinct {args.layers}-layer graphs for {args.seconds:g} s")
    print(f"health idle      p50 {i50 * 1e3:8.1f} ms  p95 {i95 * 1e3:8.1f} ms  max {imax * 1e3:8.1f} ms  ({len(idle)} requests)")
    print(f"health with load p50 {l50 * 1e3:8.1f} ms  p95 {l95 * 1e3:8.1f} ms  max {lmax * 1e3:8.1f} ms  ({len(loaded)} requests)")
    print(f"submits: {dict(sorted(answers.items()))}; latency p50 {s50:.2f} s  p95 {s95:.2f} s  max {smax:.2f} s")
    for status, text in sorted(first_error.items()):
        print(f"first {status} answer: {text}")
    print(json.dumps({"health_p50_ratio": round(l50 / i50, 1), "health_p95_ratio": round(l95 / i95, 1),
                      "health_max_ratio": round(lmax / imax, 1), "submits": dict(answers)}))


if __name__ == "__main__":
    main()
