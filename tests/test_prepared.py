"""The prepared network (issue 21, item 1): one geodesic path job normalises its architecture once and
derives its unit groups once, however many science functions it calls; the science still takes plain specs."""
from __future__ import annotations

import math
import sys

import pytest

from workers.landscape import groups, nets, paths, symmetry

from .helpers import SPEC, random_state, upload
from .test_registry import bare, run_queued  # noqa: F401  (the fixture and the in-process worker)

COUNTED = {"normalize_spec": nets, "unit_groups": groups, "canonical_form": symmetry, "check_path_type": paths,
           "positions": paths}


def count_calls(monkeypatch) -> dict[str, int]:
    """Counters around every name under which the science reaches these functions."""
    counts = dict.fromkeys(COUNTED, 0)
    for name, home in COUNTED.items():
        original = getattr(home, name)

        def wrapped(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        for module in list(sys.modules.values()):
            if (module is not None and (module.__name__ or "").startswith(("workers.", "backend."))
                    and getattr(module, name, None) is original):
                monkeypatch.setattr(module, name, wrapped)
    return counts


def test_a_geodesic_path_job_normalises_its_spec_and_derives_its_groups_once(monkeypatch, bare):  # noqa: F811
    from workers.glue import tasks

    a, b = (upload(bare.client, random_state(SPEC, seed=s), spec=SPEC, name=f"prep-{s}").json()["id"] for s in (51, 52))
    run_queued(bare)
    job = bare.submit("path", a=a, b=b, type="geodesic", points=5)
    counts = count_calls(monkeypatch)
    assert tasks.execute(job["id"]) == "succeeded"
    done = bare.client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and math.isfinite(done["result"]["distances"]["geodesic"])
    print("calls in one geodesic path job:", counts)
    assert counts["normalize_spec"] <= 1 and counts["unit_groups"] <= 1, counts
    assert counts["check_path_type"] == 1 and counts["positions"] == 1, counts  # the type and the points: once each


def test_the_science_modules_tables_are_their_kinds_tables():
    from workers.landscape import bend, kinds, paths
    from workers.landscape import slice as slices

    assert kinds.KINDS["slice"].params is slices.PARAMS
    path = kinds.KINDS["path"].params
    assert all(path[k] == v for k, v in paths.PARAMS.items() if k != "type")
    assert all(path[k]["max"] == v["max"] for k, v in bend.PARAMS.items() if "max" in v)
    assert set(path["type"]["choices"]) == set(paths.PARAMS["type"]["choices"]) | {"bend"}


@pytest.mark.parametrize("key,outside,inside", [
    ("span", 0.005, 0.01), ("span", 10.5, 10.0), ("seed", 2**31, 2**31 - 1), ("points", 2, 3),
])
def test_what_the_slice_kind_refuses_the_slice_refuses_and_back(key, outside, inside):
    """Before: span 0.005 and seed 2**31 were refused by the API but run by slice_result (its own bounds)."""
    from workers.landscape import kinds
    from workers.landscape import slice as slices

    args = {"dims": 1, "points": 5, "span": 1.0, "mode": "filter", "bn": "recompute", "seed": 0}
    for value, ok in ((outside, False), (inside, True)):
        api_ok = True
        try:
            kinds.shape("slice", {"network": 1, **args, key: value})
        except kinds.KindError:
            api_ok = False
        science_ok = True
        try:
            slices.check(SPEC, **{**args, key: value})
        except slices.SliceError:
            science_ok = False
        assert api_ok == science_ok == ok, (key, value)


@pytest.mark.parametrize("key,outside,inside", [("points", 202, 201), ("orders", 101, 100), ("seed", 2**31, 0)])
def test_what_the_path_kind_refuses_the_path_refuses(key, outside, inside):
    from workers.landscape import data, kinds, paths

    kinds.shape("path", {"a": 1, "b": 2, "type": "hamming", key: inside})
    with pytest.raises(kinds.KindError):
        kinds.shape("path", {"a": 1, "b": 2, "type": "hamming", key: outside})
    binary = {"kind": "binary_mlp", "hidden": [4]}
    digits = data.load_dataset("digits", {"n_train": 32, "n_test": 16})
    state = nets.build(binary, digits.input_shape, digits.n_classes).state_dict()
    args = {"type": "hamming", "points": 3, "orders": 1, "seed": 0}
    with pytest.raises(paths.PathError, match=f"'?{key}'?|points"):
        paths.path_result(binary, digits, state, state, **{**args, key: outside})
