"""A small Python client of the REST API, for scripts and notebooks (plain dicts and lists; tables,
figures and torch modules for notebooks come from backend.client.notebook: ``frame``, ``figure``, ``model``).
This package (with ``reproduce/``, `toroid reproduce`) only talks HTTP: it imports nothing of the server.

    from backend.client import Client
    c = Client("http://127.0.0.1:8000")
    a = c.upload(model.state_dict(), name="run-1", architecture={"kind": "mlp", "hidden": [64, 64]})
    job = c.wait(c.submit("path", a=a["id"], b=b["id"], type="linear", points=11))
    print(job["result"]["barrier"])
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Callable

import httpx

from .notebook import NotebookMixin, progress_bar


ORDER_KEY = "toroid.order"  # the service's store.ORDER_KEY: a safetensors file's tensor order, in its metadata


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: Any, body: Any = None):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail
        self.body = body if isinstance(body, dict) else {}  # the whole answer (e.g. an upload's 'proposed' names)


class Client(NotebookMixin):
    RETRIES = 3
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("TOROID_URL") or "http://127.0.0.1:8000").rstrip("/")
        headers = {}
        token = token or os.environ.get("TOROID_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, idempotent: bool = False, **kw) -> Any:
        """One API call. ``idempotent`` writes carry an ``Idempotency-Key`` (one per call, the same on its
        retries) and are tried again, up to ``RETRIES`` times, when the connection fails or the server
        answers 502/503/504: the server does them once and answers a repeat with the first answer."""
        if idempotent:
            kw["headers"] = {**kw.get("headers", {}), "Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(self.RETRIES + 1 if idempotent else 1):
            try:
                r = self.http.request(method, "/api" + path, **kw)
            except httpx.TransportError:
                if attempt == self.RETRIES or not idempotent:
                    raise
                time.sleep(0.5 * 2**attempt)
                continue
            if r.status_code not in (502, 503, 504) or attempt == self.RETRIES or not idempotent:
                break
            time.sleep(0.5 * 2**attempt)
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail", r.text) if isinstance(body, dict) else r.text
            except ValueError:
                body, detail = None, r.text
            raise ApiError(r.status_code, detail, body)
        if r.status_code == 204:
            return None
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.content

    # networks
    def networks(self, **filters) -> list[dict]:
        return self._call("GET", "/networks", params=filters)

    def network(self, network_id: int) -> dict:
        return self._call("GET", f"/networks/{network_id}")

    def upload(self, weights, name: str, architecture: dict, dataset: str = "digits", *,
               dataset_options: dict | None = None, tags: list[str] | None = None, filename: str | None = None,
               rename: dict[str, str] | None = None, keys: dict[str, str] | None = None,
               accept_proposed: bool = False) -> dict:
        """Upload a state dict (tensors are sent as safetensors, their order kept in its metadata) or the bytes /
        path of a weights file. ``rename``: substrings replaced in every tensor name (``{"shortcut.":
        "downsample.", "linear.": "fc."}``), ``keys``: exact names, both before the names are checked.
        ``accept_proposed``: when the names do not fit but the service proposes a mapping (the file's shapes
        fit the architecture's one to one in order), upload again with it; the answer's ``source.renamed``
        says what was renamed. Otherwise a refusal raises ``ApiError`` (its ``body["proposed"]``: the mapping)."""
        if isinstance(weights, dict):
            from safetensors.torch import save

            tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
            blob, filename = save(tensors, metadata={ORDER_KEY: json.dumps(list(tensors))}), "weights.safetensors"
        elif isinstance(weights, (str, os.PathLike)):
            filename = filename or os.path.basename(str(weights))
            with open(weights, "rb") as f:
                blob = f.read()
        else:
            blob = bytes(weights)
            filename = filename or "weights.safetensors"
        meta = {"name": name, "architecture": architecture, "dataset": dataset,
                "dataset_options": dataset_options or {}, "tags": tags or [], "rename": rename or {}, "keys": keys or {}}
        try:
            return self._call("POST", "/networks", idempotent=True, files={"file": (filename, blob)},
                              data={"meta": json.dumps(meta)})
        except ApiError as exc:
            proposed = exc.body.get("proposed")
            if not (accept_proposed and exc.status == 400 and isinstance(proposed, dict)):
                raise
        meta.update(rename=proposed.get("rename", {}), keys=proposed.get("keys", {}))
        return self._call("POST", "/networks", idempotent=True, files={"file": (filename, blob)},
                          data={"meta": json.dumps(meta)})

    def weights(self, network_id: int) -> dict:
        from safetensors.torch import load

        return load(self._call("GET", f"/networks/{network_id}/weights"))

    def delete(self, network_id: int) -> None:
        self._call("DELETE", f"/networks/{network_id}")

    # jobs
    def submit(self, kind: str, **params) -> dict:
        return self._call("POST", "/jobs", idempotent=True, json={"kind": kind, "params": params})

    def estimate(self, kind: str, **params) -> dict:
        """A dry run: the normalised params, queue, ``cost_flops``, ``memory_bytes``, ``estimated_seconds``
        (None while the server has no measured throughput); nothing is submitted."""
        return self._call("POST", "/jobs", params={"dry_run": "true"}, json={"kind": kind, "params": params})

    def job(self, job_id: int) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def jobs(self, **filters) -> list[dict]:
        return self._call("GET", "/jobs", params=filters)

    def cancel(self, job_id: int) -> dict:
        return self._call("DELETE", f"/jobs/{job_id}")

    def wait_ready(self, timeout: float = 60, alive: Callable[[], bool] | None = None) -> None:
        """Wait until the service answers its health check (a server just started). ``alive`` says
        whether it is still worth waiting (e.g. the server process has not exited); TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.http.get("/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if (alive is not None and not alive()) or time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} did not answer its health check")
            time.sleep(0.3)

    def wait(self, job: dict | int, timeout: float = 3600, poll: float = 0.3,
             on_progress: Callable[[dict], None] | None = None, progress: bool | None = None) -> dict:
        """Wait for a job to end; returns it (with its result). Raises ApiError if it failed. A progress
        bar shows while it waits when ``progress`` is True (None: in a terminal or a notebook, unless
        ``on_progress`` is given)."""
        job_id = job if isinstance(job, int) else job["id"]
        if on_progress is None:
            first = self.job(job_id) if isinstance(job, int) else job
            show, close = progress_bar(first, progress)
            try:
                return self.wait(job_id, timeout, poll, on_progress=show)
            finally:
                close()
        deadline = time.monotonic() + timeout
        while True:
            current = self.job(job_id)
            if on_progress:
                on_progress(current)
            if current["status"] in ("succeeded", "failed", "cancelled"):
                if current["status"] == "failed":
                    raise ApiError(422, f"job {job_id} failed: {current['error']}")
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {current['status']} after {timeout} s")
            time.sleep(poll)

    def result(self, result_id: int) -> dict:
        return self._call("GET", f"/results/{result_id}")
