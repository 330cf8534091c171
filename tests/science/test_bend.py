"""Single-bend paths: the ends are the networks, the midpoint is trained, both variants, BatchNorm, errors."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import bend, paths

from .test_flatness import digits_nets  # noqa: F401  (a fixture)
from .test_nets import plain_error, trained_pair


@pytest.mark.parametrize("variant", ["geodesic", "garipov"])
def test_bend_path_ends_at_the_networks_and_its_midpoint_is_trained(variant):
    spec, ds, (a, b, _) = digits_nets()
    ref_a, ref_b = plain_error(spec, ds, a), plain_error(spec, ds, b)
    res, mid = bend.bend_result(spec, ds, a, b, points=5, variant=variant, epochs=15, lr=0.05, dtype=torch.float64)
    assert res["type"] == "bend" and res["variant"] == variant and res["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert res["train_error"][0] == ref_a and res["train_error"][-1] == ref_b
    assert res["test_error"][0] == plain_error(spec, ds, a, "test") and res["test_error"][-1] == plain_error(spec, ds, b, "test")
    assert all(len(res[k]) == 5 for k in ("train_error", "test_error", "train_loss", "test_loss"))
    assert res["barrier"] == max(res["train_error"])
    assert res["barrier_excess"] == pytest.approx(res["barrier"] - (ref_a + ref_b) / 2)
    assert res["midpoint_train_error"] == plain_error(spec, ds, mid) <= 0.05  # low: trained
    assert res["train_error"][2] == res["midpoint_train_error"]  # t = 1/2 is the midpoint (aligned or not)
    assert res["midpoint_distances"]["a"] > 0.1 and res["midpoint_distances"]["b"] > 0.1
    assert res["distances"]["geodesic"] == pytest.approx(paths.distances(spec, a, b)["geodesic"])
    assert 1 <= res["epochs"] <= 15 and res["bn"] is None


def test_the_geodesic_bend_beats_the_mean_of_the_ends():
    """The midpoint starts at the mean of the aligned canonical ends; training must lower its error."""
    spec, ds, (a, b, _) = digits_nets()
    a_n, b_n = paths._geodesic_ends(spec, a, b)
    start = plain_error(spec, ds, bend._mean(a_n, b_n))
    res, _ = bend.bend_result(spec, ds, a, b, points=3, epochs=15, lr=0.05, dtype=torch.float64)
    assert res["midpoint_train_error"] < start


def test_bend_with_batchnorm_and_even_points():
    spec, ds, (a, b) = digits_nets(count=2, batchnorm=True)
    res, mid = bend.bend_result(spec, ds, a, b, points=4, epochs=4, lr=0.05, dtype=torch.float64, seed=1)
    assert res["t"] == [0.0, 1 / 3, 0.5, 2 / 3, 1.0] and res["bn"] == "recompute"
    assert res["train_error"][0] == plain_error(spec, ds, a) and res["train_error"][-1] == plain_error(spec, ds, b)
    assert res["midpoint_train_error"] == plain_error(spec, ds, mid)
    assert abs(res["train_error"][2] - res["midpoint_train_error"]) <= 1 / len(ds.y_train) + 1e-12
    assert set(mid) == set(a)
    interp, _ = bend.bend_result(spec, ds, a, b, points=3, variant="garipov", epochs=2, bn="interpolate",
                                  dtype=torch.float64)
    assert interp["bn"] == "interpolate" and interp["train_error"][0] == plain_error(spec, ds, a)


def test_bend_progress_and_errors():
    spec, data, a, b = trained_pair("mlp")
    seen = []
    res, _ = bend.bend_result(spec, data, a, b, points=3, epochs=2, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and all(x <= y + 1e-12 for x, y in zip(seen, seen[1:])) and len(res["t"]) == 3
    bspec, bdata, ba, bb = trained_pair("binary_mlp")
    with pytest.raises(paths.PathError, match="real-valued"):
        bend.bend_result(bspec, bdata, ba, bb)
    for bad in ({"variant": "curved"}, {"epochs": 0}, {"lr": -1.0}, {"bn": "stale"}, {"points": 1}):
        with pytest.raises(paths.PathError):
            bend.bend_result(spec, data, a, b, **bad)
