"""The embedded broker (kombu's filesystem transport through workers/glue/broker.py) never hands out half a message.

kombu's own writer opens a message file under its final name and then writes into it; a reader looking in
between parsed the partial file and the worker died with "Unrecoverable error: JSONDecodeError". These tests
write such a partial file the way kombu's writer does (final name, flock held, half the JSON) and check the
reader waits for it, and that many concurrent producers and consumers lose and duplicate nothing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from queue import Empty

import pytest

from workers.glue import broker

from .conftest import close_stack, configure, make_stack
from .helpers import random_state, upload

QUEUE = "interactive"


@pytest.fixture
def home():
    """The embedded configuration under a fresh TOROID_HOME; the previous settings come back afterwards."""
    saved = {k: os.environ[k] for k in os.environ if k.startswith("TOROID_")}
    path = Path(tempfile.mkdtemp(prefix="toroid-broker-"))
    configure({"TOROID_HOME": str(path)})
    yield path
    configure(saved)
    shutil.rmtree(path, ignore_errors=True)


def connection():
    from workers.glue.app import get_celery

    return get_celery().connection_for_write()


def envelope(body: dict) -> dict:
    """A message the way kombu's virtual transport stores it (what ``_get`` returns)."""
    return {"body": json.dumps(body), "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {}, "properties": {"delivery_tag": str(uuid.uuid4()), "delivery_info": {}}}


def kombu_style_partial(queue_dir: Path, payload: bytes, cut: int):
    """Begin writing a message exactly as kombu's stock ``_put`` does and stop after ``cut`` bytes."""
    name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{QUEUE}.msg"
    f = open(queue_dir / name, "wb", buffering=0)
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    f.write(payload[:cut])
    return f


def test_the_embedded_app_uses_the_atomic_transport(home):
    with connection() as conn:
        assert isinstance(conn.default_channel, broker.Channel)


def test_a_half_written_message_is_not_read_until_it_is_whole(home):
    """Fails on kombu's stock reader: it parses the half file and raises JSONDecodeError."""
    queue_dir = home / "broker" / "queue"
    payload = json.dumps(envelope({"n": 7, "blob": "x" * 10_000})).encode()
    with connection() as conn:
        channel = conn.default_channel
        writer = kombu_style_partial(queue_dir, payload, cut=len(payload) // 2)
        try:
            for _ in range(3):  # polled again and again while the writer is still writing: nothing, no crash
                with pytest.raises(Empty):
                    channel._get(QUEUE)
            assert len([n for n in os.listdir(queue_dir) if n.endswith(f".{QUEUE}.msg")]) == 1  # put back
            writer.write(payload[len(payload) // 2:])
        finally:
            fcntl.flock(writer.fileno(), fcntl.LOCK_UN)
            writer.close()
        message = channel._get(QUEUE)
        assert json.loads(message["body"]) == {"n": 7, "blob": "x" * 10_000}
        with pytest.raises(Empty):
            channel._get(QUEUE)
    assert os.listdir(queue_dir) == [] and os.listdir(home / "broker" / "processed") == []


def test_the_writer_never_shows_a_partial_message_under_a_readable_name(home, monkeypatch):
    """While ``_put`` writes, no file the reader would take exists yet (kombu's writer fails this)."""
    queue_dir = home / "broker" / "queue"
    seen_during_write: list[list[str]] = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            seen_during_write.append([n for n in os.listdir(queue_dir) if n.partition(".")[2] == f"{QUEUE}.msg"])
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr("builtins.open", lambda *a, **k: Spy(real_open(*a, **k)))
    with connection() as conn:
        conn.default_channel._put(QUEUE, envelope({"n": 1}))
    monkeypatch.undo()
    assert seen_during_write and all(names == [] for names in seen_during_write)
    names = os.listdir(queue_dir)
    assert len(names) == 1 and names[0].endswith(f".{QUEUE}.msg")  # renamed into place, no .part left


def _produce(home: str, worker: int, count: int, size: int) -> None:
    configure({"TOROID_HOME": home})
    with connection() as conn:
        q = conn.SimpleQueue(QUEUE)
        for i in range(count):
            blob = hashlib.sha256(f"{worker}-{i}".encode()).hexdigest() * (size // 64)
            q.put({"worker": worker, "i": i, "blob": blob, "sha": hashlib.sha256(blob.encode()).hexdigest()})
        q.close()


def test_concurrent_producers_and_consumers_get_every_message_whole_exactly_once(home):
    producers, count, size = 4, 40, 200_000  # 160 messages of ~200 kB: writes take long enough to be caught
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_produce, args=(str(home), w, count, size)) for w in range(producers)]
    received: list[dict] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def consume():
        try:
            with connection() as conn:
                q = conn.SimpleQueue(QUEUE)
                while not (done.is_set() and q.qsize() == 0):
                    try:
                        message = q.get(block=True, timeout=0.05)
                    except Empty:
                        continue
                    received.append(message.payload)
                    message.ack()
                q.close()
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in consumers:
        t.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    done.set()
    for t in consumers:
        t.join(timeout=120)
    assert not errors, errors
    keys = [(m["worker"], m["i"]) for m in received]
    assert sorted(keys) == [(w, i) for w in range(producers) for i in range(count)]  # each once, none lost
    assert all(hashlib.sha256(m["blob"].encode()).hexdigest() == m["sha"] for m in received)  # each whole
    assert os.listdir(home / "broker" / "queue") == []
    assert os.listdir(home / "broker" / "processed") == []  # the processed folder does not grow


def test_a_file_that_never_parses_is_set_aside_and_the_queue_goes_on(home, caplog):
    queue_dir = home / "broker" / "queue"
    with connection() as conn:
        channel = conn.default_channel
        bad = queue_dir / f"{int(round(time.monotonic() * 1000)) - 10}_{uuid.uuid4()}.{QUEUE}.msg"
        bad.write_bytes(b'{"body": "trunc')
        old = time.time() - broker.CORRUPT_AFTER_S - 5
        os.utime(bad, (old, old))
        channel._put(QUEUE, envelope({"n": 2}))
        assert json.loads(channel._get(QUEUE)["body"]) == {"n": 2}  # the good message after the bad one
        with pytest.raises(Empty):
            channel._get(QUEUE)
    assert (home / "broker" / "processed" / "rejected" / bad.name).read_bytes() == b'{"body": "trunc'
    assert "unreadable" in caplog.text and bad.name in caplog.text


def test_a_real_worker_survives_a_half_written_message_and_keeps_working():
    """On kombu's stock transport this worker dies with "Unrecoverable error: JSONDecodeError"."""
    stack = make_stack("brokerfs", with_worker=True, backend="embedded")
    writer = None
    try:
        queue_dir = stack.home / "broker" / "queue"
        payload = json.dumps(envelope({"n": 3})).encode()
        writer = kombu_style_partial(queue_dir, payload, cut=20)
        time.sleep(1.5)  # several polls of the worker while the file is half written
        assert stack.worker.poll() is None, (stack.home / "worker.log").read_text(errors="replace")[-3000:]
        net = upload(stack.client, random_state(seed=5), name="after-partial").json()
        job = [j for j in stack.client.get("/api/jobs").json() if j["kind"] == "evaluate" and net["id"] in j["inputs"]]
        assert stack.wait(job[0]["id"], timeout=90)["status"] == "succeeded"
        assert stack.worker.poll() is None
        print("broker folders:", {d.name: sorted(os.listdir(d)) for d in (stack.home / "broker").iterdir()})
        assert os.listdir(stack.home / "broker" / "processed") == []  # read messages are not kept
        log = (stack.home / "worker.log").read_text(errors="replace")
        assert "Unrecoverable error" not in log and "JSONDecodeError" not in log
    finally:
        if writer is not None:
            fcntl.flock(writer.fileno(), fcntl.LOCK_UN)
            writer.close()
        close_stack(stack)


def test_the_embedded_result_backend_forgets_expired_chunk_results(home):
    """Chunk results of fanned-out jobs wait in SQLite for their chord; before, nothing ever deleted them
    (Celery's beat would, and none runs). The reconciler's cleanup removes expired ones and keeps fresh ones."""
    import datetime

    from celery.backends.database.models import Task
    from workers.glue.app import clean_results, get_celery

    app = get_celery()
    assert app.backend.url.startswith("sqlite:///") and str(home) in app.backend.url
    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    for task_id in (old, fresh):
        app.backend.store_result(task_id, {"train_error": [0.1] * 100}, "SUCCESS")
    session = app.backend.ResultSession()
    try:
        row = session.query(Task).filter(Task.task_id == old).one()
        row.date_done = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(
            seconds=app.conf.result_expires + 60)
        session.commit()
    finally:
        session.close()
    clean_results()
    session = app.backend.ResultSession()
    try:
        left = {t.task_id for t in session.query(Task).all()}
    finally:
        session.close()
    assert fresh in left and old not in left
