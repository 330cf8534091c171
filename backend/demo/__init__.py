"""The demo: a small, reproducible set of minimizers shipped with the package (issue 14 item 4).

Nine MLPs (64, 64) on the bundled digits: RSGD, SGD and ADV, three independent initialisations each,
trained with the paper's protocol (docs/science.md section 5: cross-entropy, batch 128, cosine-annealed
learning rate, no weight decay, the samplers' defaults) for ``EPOCHS`` epochs, which takes every one of
them below 1% training error (the paper's stopping rule; the manifest records each one's errors).
``python -m backend.demo.make`` trains them with the service's own training (``train.initial_model`` and
``train.train``, exactly what a train job runs, on the parameters a train job would be given: ``RUNS``)
and writes ``networks/*.safetensors`` and ``manifest.json`` (provenance: the train parameters, the
initial seed, the data set's fingerprint, the training curve, torch and science versions).

``toroid serve --demo`` calls ``load_demo``: the shipped weights are put in the weight store and their
networks recorded, in about a second, training nothing; ``toroid serve --demo train`` submits the same
``RUNS`` as ordinary train jobs instead (the networks then appear as the jobs finish).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEMO_TAG = "demo"
HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
NETWORKS = HERE / "networks"
ARCHITECTURE = {"kind": "mlp", "hidden": [64, 64]}
EPOCHS = 200
SAMPLERS = ("rsgd", "sgd", "adv")
SEEDS = (0, 1, 2)


class DemoError(RuntimeError):
    """The shipped demo files are missing or do not match their manifest."""


def run_params(optimizer: str, seed: int) -> dict[str, Any]:
    """The train job parameters of one demo network (its init seed is derived from seed and the sampler)."""
    return {"architecture": dict(ARCHITECTURE), "dataset": "digits", "optimizer": optimizer, "epochs": EPOCHS,
            "seed": seed, "name": f"demo-{optimizer}-{seed}", "tags": [DEMO_TAG, optimizer]}


RUNS = [run_params(optimizer, seed) for optimizer in SAMPLERS for seed in SEEDS]


def history_columns(history: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A training curve column by column, floats to 4 significant digits (keeps the manifest small);
    a value an epoch lacks is None."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    short = lambda v: float(f"{v:.4g}") if isinstance(v, float) else v  # noqa: E731
    return {k: [short(h.get(k)) for h in history] for k in keys}


def history_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    n = len(next(iter(columns.values()), []))
    return [{k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(n)]


def read_manifest() -> dict[str, Any]:
    if not MANIFEST.exists():
        raise DemoError(f"the demo's manifest {MANIFEST} is missing; rebuild it with `python -m backend.demo.make`")
    return json.loads(MANIFEST.read_text())


def load_demo(owner: str = "local") -> list[int]:
    """Record the shipped demo networks (weights into the store, one Network row each), unless networks
    tagged "demo" exist already; returns the new networks' ids. Every file is checked against the
    SHA-256 in the manifest first, so a damaged package loads nothing."""
    from safetensors.torch import load
    from sqlalchemy import select

    from backend.db import new_session
    from backend.models import Network
    from backend.networks import store_state

    manifest = read_manifest()
    entries = manifest["networks"]
    blobs = []
    for entry in entries:
        path = NETWORKS / entry["file"]
        data = path.read_bytes() if path.exists() else b""
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DemoError(f"demo file {path} is missing or damaged (its SHA-256 is not the manifest's); "
                            "reinstall the package or rebuild with `python -m backend.demo.make`")
        blobs.append(data)
    with new_session() as s:
        if any(DEMO_TAG in (tags or []) for tags in s.scalars(select(Network.tags))):
            return []
        ids = []
        for entry, data in zip(entries, blobs):
            state = load(data)
            net = store_state(s, state, name=entry["name"], owner=owner, visibility="lab",
                              architecture=entry["architecture"], dataset=entry["dataset"],
                              dataset_options=entry["dataset_options"],
                              source={**entry["source"], "demo": {"file": entry["file"], "made": manifest["made"]}},
                              tags=entry["tags"], train_error=entry["train_error"], test_error=entry["test_error"],
                              train_loss=entry["train_loss"], test_loss=entry["test_loss"],
                              history=history_rows(entry["history"]), n_params=entry["n_params"])
            ids.append(net.id)
        s.commit()
    return ids


def submit_training() -> list[int]:
    """``--demo train``: the demo's runs as ordinary train jobs, unless train jobs exist already."""
    from sqlalchemy import select

    from backend import jobs
    from backend.db import new_session
    from backend.models import Job

    with new_session() as s:
        if s.scalars(select(Job).where(Job.kind == "train")).first() is not None:
            return []
        return [jobs.submit(s, "train", dict(params)).id for params in RUNS]
