"""Big jobs fan out: matrix and flatness jobs split into chunks (a Celery chord) on two workers, reassembled."""
from __future__ import annotations

import pytest
from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import flatness, nets, paths

from .conftest import close_stack, make_stack, start_worker, stop


def test_matrix_in_chunks_on_two_workers_equals_the_direct_computation():
    s = make_stack("fanout", with_worker=True, backend="embedded",
                   extra={"TOROID_FANOUT_PAIRS": "2", "TOROID_FANOUT_POINTS": "8", "TOROID_FANOUT_PATH_POINTS": "3"})
    second = start_worker(s.env, s.home / "worker2.log", "second")
    try:
        spec = nets.normalize_spec({"kind": "mlp", "hidden": [12]})
        ids = [s.run("train", architecture=spec, dataset="digits", optimizer="sgd", epochs=3, seed=k,
                     name=f"fan-{k}")["result"]["network_id"] for k in range(4)]
        job = s.run("matrix", networks=ids, barriers=True, points=3)
        r = job["result"]
        assert r["chunks"] == 3  # 6 pairs, 2 per chunk
        states = [load(s.client.get(f"/api/networks/{i}/weights").content) for i in ids]
        for i in range(4):
            for j in range(i + 1, 4):
                direct = paths.distances(spec, states[i], states[j])
                for key in ("raw", "aligned", "normalized", "normalized_aligned", "geodesic"):
                    assert abs(r["distances"][key][i][j] - direct[key]) < 1e-9
                    assert r["distances"][key][j][i] == r["distances"][key][i][j]
        for i in range(4):
            assert r["barriers"][i][i] == 0 and all(0 <= b <= 1 for b in r["barriers"][i])
        logs = (s.home / "worker.log").read_text() + (s.home / "worker2.log").read_text()
        assert logs.count("toroid.chunk[") >= 3 * 2  # each chunk: received + succeeded
        assert "toroid.assemble[" in logs
        # flatness: 5 noise levels x 4 draws at 8 points per chunk -> 3 chunks, same numbers as unsplit
        sigmas = [0.0, 0.1, 0.2, 0.3, 0.5]
        f = s.run("flatness", network=ids[0], sigmas=sigmas, draws=4, seed=3)["result"]
        assert f["chunks"] == 3 and f["sigma"] == sigmas
        direct = flatness.flatness_result(spec, datasets.load_dataset("digits"), states[0], sigmas=sigmas, draws=4,
                                          seed=3)
        assert f["delta_mean"] == direct["delta_mean"]  # the same draws: the same error counts
        for key in ("delta_std", "delta_sem"):  # reductions over other shapes: equal to the last bit or two
            assert f[key] == pytest.approx(direct[key], rel=1e-12, abs=1e-15), key
        assert f["base_train_error"] == direct["base_train_error"]
        # a long geodesic path: 7 positions at 3 per chunk -> 3 chunks, joined exactly
        g = s.run("path", a=ids[0], b=ids[1], type="geodesic", points=7)["result"]
        assert g["chunks"] == 3
        whole = paths.path_result(spec, datasets.load_dataset("digits"), states[0], states[1], type="geodesic", points=7)
        assert g["t"] == whole["t"] and g["train_error"] == whole["train_error"] and g["test_error"] == whole["test_error"]
        assert g["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-9)
        assert g["barrier"] == whole["barrier"] and g["barrier_excess"] == whole["barrier_excess"]
        # cancel while a fanned-out job waits: nothing is finished afterwards
        later = s.submit("matrix", networks=ids[::-1], barriers=True, points=5)
        s.client.delete(f"/api/jobs/{later['id']}")
        assert s.wait(later)["status"] == "cancelled"
    finally:
        stop(second)
        close_stack(s)
