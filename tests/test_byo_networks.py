"""Bring your own network (issue 15) through the API and the worker: a state_dict made by torchvision's own
constructor uploads as it is, ResNets and layer graphs train and every geometry job runs on them."""
from __future__ import annotations

import io

import pytest
import torch
import torchvision
from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import nets, symmetry

from .helpers import upload

RESNET = nets.normalize_spec({"kind": "resnet", "depth": 8, "width": 0.25})
GRAPH = nets.normalize_spec({"kind": "graph", "layers": [
    {"type": "conv", "out": 4, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "add", "branch": [{"type": "conv", "out": 6, "kernel": 3, "stride": 2, "padding": 1},
                               {"type": "batchnorm"}, {"type": "relu"},
                               {"type": "conv", "out": 6, "kernel": 3, "padding": 1}, {"type": "batchnorm"}],
     "shortcut": "conv_bn", "stride": 2},
    {"type": "relu"}, {"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "linear"}]})


def torchvision_resnet18() -> torch.nn.Module:
    """torchvision's own resnet18 for the digits (1 channel, 10 classes), in eval mode with non-trivial statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    digits = datasets.load_dataset("digits")
    model.train()
    with torch.no_grad():
        model(digits.x_train[:256])  # running statistics move away from (0, 1)
    return model.eval()


def test_a_torchvision_resnet18_state_dict_uploads_as_is_and_its_geometry_runs(live):
    model = torchvision_resnet18()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    r = upload(live.client, blob=buf.getvalue(), filename="resnet18.pt", spec={"kind": "resnet18"}, name="tv-resnet18")
    assert r.status_code == 201, r.text
    net = r.json()
    assert net["architecture"] == {"kind": "resnet18", "width": 1.0}
    assert net["n_params"] == sum(p.numel() for p in model.parameters())
    digits = datasets.load_dataset("digits")
    with torch.no_grad():
        own = float((model(digits.x_test).argmax(1) != digits.y_test).float().mean())
    for job in [j for j in live.client.get("/api/jobs").json() if net["id"] in j["inputs"]]:
        live.wait(job)  # the evaluate job the upload queued
    assert abs(live.client.get(f"/api/networks/{net['id']}").json()["test_error"] - own) <= 1 / len(digits.y_test)

    state = load(live.client.get(f"/api/networks/{net['id']}/weights").content)
    twin = upload(live.client, symmetry.random_symmetry({"kind": "resnet18"}, state, seed=4),
                  spec={"kind": "resnet18"}, name="tv-resnet18-twin").json()
    d = live.run("distance", a=net["id"], b=twin["id"])["result"]
    assert d["geodesic"] < 1e-4 and d["normalized_aligned"] < 1e-6 and d["normalized"] > 1e-3
    canon = live.run("canonicalize", network=net["id"])["result"]
    w = load(live.client.get(f"/api/networks/{canon['network_id']}/weights").content)
    assert torch.equal(w["bn1.weight"].abs(), w["bn1.weight"]) and torch.allclose(
        w["conv1.weight"].flatten(1).norm(dim=1), torch.ones(64), atol=1e-5)
    r = live.run("path", a=net["id"], b=twin["id"], type="geodesic", points=3, bn="interpolate")["result"]
    assert max(r["test_error"]) - min(r["test_error"]) <= 1 / len(digits.y_test)


def test_resnets_and_layer_graphs_train_and_every_geometry_job_runs(live):
    for spec, tag in ((RESNET, "resnet8"), (GRAPH, "graph")):
        ids = [live.run("train", architecture=spec, dataset="digits", optimizer="sgd", epochs=1, seed=s,
                        name=f"byo-{tag}-{s}")["result"]["network_id"] for s in (1, 2, 3)]
        nets_ = [live.client.get(f"/api/networks/{i}").json() for i in ids]
        assert all(n["architecture"] == spec and n["train_error"] < 0.9 for n in nets_)
        path = live.run("path", a=ids[0], b=ids[1], type="geodesic", points=3, bn="interpolate")["result"]
        assert abs(path["train_error"][0] - nets_[0]["train_error"]) <= 1 / 1347  # canonical(a): a's function
        assert abs(path["train_error"][-1] - nets_[1]["train_error"]) <= 1 / 1347
        bend = live.run("path", a=ids[0], b=ids[1], type="bend", points=3, epochs=1)["result"]
        assert bend["type"] == "bend" and len(bend["t"]) == 3
        flat = live.run("flatness", network=ids[0], sigmas=[0.0, 0.05], draws=2)["result"]
        assert flat["delta_mean"][0] == 0.0
        plane = live.run("plane", networks=ids, grid=3)["result"]
        assert len(plane["train_error"]) >= 3
        matrix = live.run("matrix", networks=ids, barriers=True, points=3)["result"]
        assert all(matrix["distances"]["geodesic"][i][j] > 0 for i in range(3) for j in range(3) if i != j)
        for mode in ("canonical", "filter"):  # canonical: failed on these networks before (no per-layer spheres)
            sl = live.run("slice", network=ids[0], dims=1, points=3, span=0.5, mode=mode, bn="keep")["result"]
            assert sl["center"]["train_error"] == pytest.approx(nets_[0]["train_error"], abs=1 / 1347)
        canon = live.run("canonicalize", network=ids[0])["result"]
        d = live.run("distance", a=ids[0], b=canon["network_id"])["result"]
        assert d["geodesic"] < 1e-4 and d["normalized_aligned"] < 1e-5


def test_layer_graphs_with_unhandled_symmetries_get_a_400_that_says_why(api):
    tanh = {"kind": "graph", "layers": [{"type": "flatten"}, {"type": "linear", "out": 8}, {"type": "tanh"},
                                        {"type": "linear"}]}
    no_bn_stream = {"kind": "graph", "layers": [
        {"type": "conv", "out": 4, "padding": 1}, {"type": "relu"},
        {"type": "add", "branch": [{"type": "conv", "out": 4, "padding": 1}, {"type": "relu"},
                                   {"type": "conv", "out": 4, "padding": 1}]},
        {"type": "relu"}, {"type": "flatten"}, {"type": "linear"}]}
    for spec, words in ((tanh, "tanh"), (no_bn_stream, "BatchNorm")):
        r = api.post("/api/jobs", json={"kind": "train", "params": {"architecture": spec, "dataset": "digits"}})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
        r = upload(api, blob=b"\x00" * 8, filename="w.safetensors", spec=spec, name="refused")
        assert r.status_code == 400 and words in r.json()["detail"], r.text
    kinds = {a["kind"]: a for a in api.get("/api/architectures").json()}
    assert {"resnet", "resnet18", "resnet34", "vgg11_bn", "vgg16_bn", "graph"} <= set(kinds)
    assert kinds["resnet"]["params"]["depth"]["choices"][:3] == [8, 14, 20]
    assert kinds["graph"]["params"]["layers"]["type"] == "json"
