"""The job-kind registry (workers/landscape/kinds.py) is what the API accepts, what the worker runs and
what the catalogue says: a walk over every kind and parameter, and the defects of issue 13."""
from __future__ import annotations

import math

import pytest

from workers.landscape import bend, kinds, nets, train

from .helpers import SPEC, random_state, upload

TINY = {"kind": "mlp", "hidden": [6]}


def _networks(client, n: int = 3, spec=TINY, prefix: str = "walk") -> list[int]:
    return [upload(client, random_state(spec, seed=100 + k), spec=spec, name=f"{prefix}-{k}").json()["id"]
            for k in range(n)]


def _ids(kind: kinds.Kind, nets_: list[int]) -> dict[str, list[int]]:
    out, k = {}, 0
    for key, rule in kind.inputs.items():
        n = rule.get("count") or rule.get("min")
        out[key] = nets_[k : k + n] if rule.get("count") != 1 else [nets_[k]]
        k += 0 if key == "a" else n  # a path's a and b may be one network
    return out


def example(name: str, nets_: list[int]) -> dict:
    """A job of kind ``name`` from its declared defaults (train: a tiny network, the only required value)."""
    if name == "train":
        return {"architecture": TINY, "epochs": 2}
    return kinds.example(name, _ids(kinds.KINDS[name], nets_))


def _outside(p: dict) -> list:
    """Values just outside entry ``p``'s bounds (or of the wrong type)."""
    kind, out = p["type"], []
    item = kind[5:-1] if kind.startswith("list[") else kind
    wrap = (lambda v: [v]) if kind.startswith("list[") else (lambda v: v)
    if item in ("int", "float"):
        step = 1 if item == "int" else 1e-9 * max(1.0, abs(p.get("max") or p.get("min") or 1.0))
        if p.get("min") is not None:
            out.append(wrap(p["min"] - step))
        if p.get("max") is not None:
            out.append(wrap(p["max"] + step))
        out.append(wrap("many"))
    if item == "str" and "choices" in p:
        out.append(wrap("no-such-choice"))
    if item == "str" and "max_length" in p:
        out.append(wrap("x" * (p["max_length"] + 1)))
    if kind == "object":
        out.append("not-an-object")
    if item == "bool":
        out.append(wrap("yes"))
    if kind.startswith("list[") and p.get("max_items"):
        out.append([p.get("min") or 0] * (p["max_items"] + 1))
    if kind.startswith("list[") and p.get("min_items", 1) >= 1:
        out.append([])
    return out


def _enable(kind: kinds.Kind, key: str, params: dict) -> dict:
    """``params`` with the values that make parameter ``key`` apply (its ``when``)."""
    when = kind.params[key].get("when") or {}
    return {**params, **{other: values[0] for other, values in when.items()}}


def test_every_parameter_just_outside_its_bounds_is_a_400(api):
    ids = _networks(api)
    before = len(api.get("/api/jobs?limit=1000").json())
    tried = 0
    for name, kind in kinds.KINDS.items():
        table = dict(kind.params)
        if name == "train":  # the sampler's own parameters sit beside the job's
            table = {**table, **train.OPTIMIZERS["sgd"]["params"]}
        for key, p in table.items():
            for bad in _outside(p):
                params = {**(_enable(kind, key, example(name, ids)) if key in kind.params else example(name, ids)),
                          key: bad}
                r = api.post("/api/jobs", json={"kind": name, "params": params})
                assert r.status_code == 400, (name, key, bad, r.text)
                assert key in r.json()["detail"], (name, key, r.text)
                tried += 1
    assert tried > 60
    assert len(api.get("/api/jobs?limit=1000").json()) == before  # nothing was created


def test_the_catalogue_is_the_registry(api):
    served = {k["kind"]: k for k in api.get("/api/job-kinds").json()}
    assert set(served) == set(kinds.KINDS)
    path = served["path"]
    assert path["inputs"] == {"a": {"count": 1}, "b": {"count": 1}} and path["queue"] == "interactive"
    assert path["params"]["points"] == {**kinds.PATH_PARAMS["points"]}
    assert path["params"]["variant"]["when"] == {"type": ["bend"]}
    assert path["params"]["variant"]["choices"] == list(bend.VARIANTS)
    assert served["matrix"]["inputs"] == {"networks": {"min": 2, "max": 64}}
    assert served["plane"]["inputs"] == {"networks": {"count": 3}} and served["plane"]["queue"] == "batch"
    for entry in served.values():
        for p in entry["params"].values():
            assert p["type"] in ("int", "float", "bool", "str", "list[int]", "list[float]", "list[str]", "object")
            assert "default" in p and p["help"]
    # the old listing stays as an alias for one release
    assert {t["type"] for t in api.get("/api/path-types").json()} == set(path["params"]["type"]["choices"])


def test_example_jobs_from_the_defaults_run_and_defaults_spelled_out_are_cached(live):
    """Each kind's example job (declared defaults) succeeds through the worker, its params are the declared
    defaults (what the worker used), and the same job with every default spelled out is answered from the cache."""
    ids = _networks(live.client, prefix=f"example-{live.name}")
    for job in live.client.get("/api/jobs?limit=1000").json():
        if job["status"] in ("queued", "running"):
            live.wait(job)
    for name, kind in kinds.KINDS.items():
        params = example(name, ids)
        first = live.run(name, **params)
        normal = first["params"]
        for key, p in kind.params.items():
            applies = all(normal.get(o) in v for o, v in (p.get("when") or {}).items())
            assert (key in normal) == applies, (name, key)
            if applies and p["default"] is not None:
                assert normal[key] == p["default"], (name, key)
        spelled = live.run(name, **normal)
        assert spelled["cached"] and spelled["result_id"] == first["result_id"], (name, spelled)


def test_bounds_agree_with_the_science_what_is_accepted_runs(live):
    """Plane grid 2 and margin 5 were refused by the API though the science runs them; a flatness job on a
    binary network asking for flipped fractions above 1 was accepted and failed in the worker."""
    ids = _networks(live.client, prefix=f"bounds-{live.name}")
    r = live.run("plane", networks=ids, grid=2, margin=5.0, mode="raw")["result"]
    assert len(r["x"]) >= 2 and r["margin"] == 5.0
    binary_spec = {"kind": "binary_mlp", "hidden": [8]}
    binary = upload(live.client, random_state(binary_spec, seed=3), spec=binary_spec, name="flips").json()["id"]
    resp = live.client.post("/api/jobs", json={"kind": "flatness", "params": {"network": binary, "sigmas": [0.0, 2.0]}})
    assert resp.status_code == 400 and "sigmas" in resp.json()["detail"] and "binary" in resp.json()["detail"]
    assert live.run("flatness", network=binary, sigmas=[0.0, 1.0], draws=2)["result"]["sigma"] == [0.0, 1.0]
    # the bend's bounds are the bend's own table
    assert kinds.PATH_PARAMS["epochs"]["max"] == bend.PARAMS["epochs"]["max"]
    with pytest.raises(ValueError, match="epochs"):
        bend.bend_result(TINY, None, {}, {}, epochs=bend.PARAMS["epochs"]["max"] + 1)


def test_defaults_enter_the_cache_key_flatness_and_bend(live):
    net = _networks(live.client, n=2, prefix=f"keys-{live.name}")
    first = live.run("flatness", network=net[0], sigmas=[0.0, 0.1], seed=5)
    again = live.run("flatness", network=net[0], sigmas=[0.0, 0.1], seed=5, draws=20)  # the default
    assert again["cached"] and again["cached_from"] == first["id"]
    bent = live.run("path", a=net[0], b=net[1], type="bend", points=3, epochs=2)
    same = live.run("path", a=net[0], b=net[1], type="bend", points=3, epochs=2, lr=0.02, variant="geodesic", seed=0)
    assert same["cached"] and same["cached_from"] == bent["id"]


def test_identical_weights_uploaded_again_get_their_errors(live):
    state = random_state(SPEC, seed=77)
    first = upload(live.client, state, name=f"original-{live.name}").json()
    for job in live.client.get("/api/jobs?limit=1000").json():
        if job["status"] in ("queued", "running"):
            live.wait(job)
    copy = upload(live.client, state, name=f"copy-{live.name}").json()
    evaluate = [j for j in live.client.get("/api/jobs?limit=1000").json()
                if j["kind"] == "evaluate" and j["params"]["network"] == copy["id"]][0]
    assert live.wait(evaluate)["cached"]  # answered from the original's evaluation...
    original = live.client.get(f"/api/networks/{first['id']}").json()
    again = live.client.get(f"/api/networks/{copy['id']}").json()
    assert original["train_error"] is not None  # ...and the copy shows the errors all the same
    assert again["train_error"] == original["train_error"] and again["test_loss"] == original["test_loss"]


def test_train_on_an_unavailable_data_set_is_refused_at_submission(api):
    r = api.post("/api/jobs", json={"kind": "train", "params": {"architecture": SPEC, "dataset": "mnist"}})
    assert r.status_code == 400 and "not available" in r.json()["detail"] and "TOROID_DATA_ROOT" in r.json()["detail"]
    listed = {d["name"]: d for d in api.get("/api/datasets").json()}
    assert not listed["mnist"]["available"] and listed["mnist"]["reason"] in r.json()["detail"]


@pytest.fixture
def bare():
    """An embedded stack of its own without a worker: tests run the worker's code in this process."""
    from .conftest import close_stack, make_stack

    s = make_stack("bare", with_worker=False, backend="embedded", reconcile=False)
    yield s
    close_stack(s)


def run_queued(stack) -> None:
    """Run every queued job in this process, as a worker would."""
    from backend.db import new_session
    from backend.models import Job
    from workers.glue import tasks

    stack.activate()
    with new_session() as s:
        while (queued := s.query(Job).filter(Job.status == "queued", Job.attached_to.is_(None)).first()) is not None:
            tasks.execute(queued.id)
            s.expire_all()


def test_a_path_job_builds_its_model_once_and_aligns_once(monkeypatch, bare):
    """In process: the worker's code for one path job, counting the expensive steps (before: the model
    was built 3 times, the weights checked 4 times, an aligned pair aligned twice)."""
    from workers.glue import tasks
    from workers.landscape import symmetry

    a, b = _networks(bare.client, n=2, spec=SPEC, prefix="once")
    run_queued(bare)
    counts = {"build": 0, "check": 0, "align": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(nets, "build", counting("build", nets.build))
    monkeypatch.setattr(nets, "check_state_dict", counting("check", nets.check_state_dict))
    monkeypatch.setattr(symmetry, "align", counting("align", symmetry.align))
    for kind, aligns in (("linear_aligned", 1), ("geodesic", 1), ("linear", 1)):
        job = bare.submit("path", a=a, b=b, type=kind, points=5)
        for key in counts:
            counts[key] = 0
        assert tasks.execute(job["id"]) == "succeeded"
        done = bare.client.get(f"/api/jobs/{job['id']}").json()
        assert done["status"] == "succeeded" and math.isfinite(done["result"]["distances"]["aligned"])
        assert counts == {"build": 1, "check": 2, "align": aligns}, (kind, counts)


def test_adding_a_kind_is_a_declaration_and_a_runner():
    from workers.glue.runners import RUNNERS

    assert set(RUNNERS) == set(kinds.KINDS)
    for kind in kinds.KINDS.values():
        assert kind.queue in kinds.QUEUES and callable(kind.cost)
        assert set(kind.inputs) <= {"a", "b", "network", "networks"}



def test_toroid_job_kind_help_is_read_from_the_registry(capsys, monkeypatch):
    from backend import cli

    for name, kind in kinds.KINDS.items():
        assert cli.main(["job", name, "--help"]) == 0
        out = capsys.readouterr().out
        assert kind.description in out
        for key, p in kind.params.items():
            assert f"  {key}: {p['type']}" in out and p["help"][:40] in out, (name, key)
            if p.get("max") is not None:
                assert str(p["max"]) in out
    sent = []
    monkeypatch.setattr(cli, "_run_job", lambda args, kind, params: sent.append((kind, params)) or 0)
    assert cli.main(["job", "path", '{"bn": "interpolate"}', "--a", "3", "--b", "4", "--points", "21",
                     "--type", "geodesic", "--no-wait"]) == 0
    assert cli.main(["job", "matrix", "--networks", "1", "2", "3", "--barriers", "true"]) == 0
    assert cli.main(["job", "train", '{"architecture": {"kind": "mlp"}}', "--epochs", "3", "--lr", "0.1"]) == 0
    assert sent == [("path", {"bn": "interpolate", "a": 3, "b": 4, "points": 21, "type": "geodesic"}),
                    ("matrix", {"networks": [1, 2, 3], "barriers": True}),
                    ("train", {"architecture": {"kind": "mlp"}, "epochs": 3, "lr": 0.1})]
    assert cli.main(["job", "teleport"]) == 2 and "unknown job kind" in capsys.readouterr().err


def test_the_client_side_only_talks_http():
    import subprocess
    import sys

    code = ("import sys, backend.client, backend.client.reproduce; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'torch', 'sqlalchemy', 'fastapi') "
            "or m.startswith('backend.') and not m.startswith('backend.client')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
