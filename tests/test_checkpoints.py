"""A lab's checkpoint as it is (issue 23): an option-A CIFAR ResNet written here in plain PyTorch (not the
service's builder) uploads, its permuted and rescaled copy, made here too, sits at canonical distance 0 with
no barrier, and two of them give a path."""
from __future__ import annotations

import copy
import io
import json

import torch
import torch.nn.functional as F
from functools import lru_cache

from safetensors.torch import load
from torch import nn

from workers.landscape import data as datasets

from .helpers import upload

EPS = 1e-5


class OptionA(nn.Module):
    """The public CIFAR code's LambdaLayer shortcut, written out."""

    def __init__(self, planes: int):
        super().__init__()
        self.p = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.p, self.p), "constant", 0)


class Block(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int, option: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != planes:
            self.shortcut = OptionA(planes) if option == "A" else nn.Sequential(
                nn.Conv2d(c_in, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetA(nn.Module):
    """ResNet-20 of the public CIFAR code (option A, or B: a 1x1 conv + BatchNorm ``shortcut``), with its names
    (``linear``, ``layer2.0.shortcut.0``), which are not the service's (``fc``, ``downsample``)."""

    def __init__(self, widths=(4, 8, 16), blocks=3, c_in=1, classes=10, option="A"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        prev = widths[0]
        for s, w in enumerate(widths):
            layer = []
            for i in range(blocks):
                layer.append(Block(prev, w, 2 if s > 0 and i == 0 else 1, option))
                prev = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.linear = nn.Linear(prev, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.size()[3]).flatten(1))


SPEC = {"kind": "resnet", "depth": 20, "width": 0.25, "shortcut": "A"}
RENAME = {"linear.": "fc."}  # the public code's classifier name -> the service's


def upload_a(client, state, name):
    """An option-A ResNet-20 of this file, its own names mapped by a rename map."""
    blob = io.BytesIO()
    torch.save(state, blob)
    meta = {"name": name, "architecture": SPEC, "dataset": "digits", "rename": RENAME}
    return upload(client, blob=blob.getvalue(), filename=f"{name}.pt", meta=meta)


@lru_cache(maxsize=None)
def _trained(seed: int, option: str) -> ResNetA:
    torch.manual_seed(seed)
    model = ResNetA(option=option)
    digits = datasets.load_dataset("digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for epoch in range(3):
        order = torch.randperm(len(digits.y_train))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(digits.x_train[idx]), digits.y_train[idx]).backward()
            opt.step()
    return model.eval()


def trained(seed: int, option: str = "A") -> ResNetA:
    """A few epochs of SGD on the digits, in plain PyTorch (a copy: callers may change it)."""
    return copy.deepcopy(_trained(seed, option))


def permuted_and_rescaled(model: ResNetA, seed: int, float64: bool = False) -> dict[str, torch.Tensor]:
    """The same function by this file's own bookkeeping: every block's inner units permuted and rescaled (pre-BN
    and post-BN), every stream channel permuted and rescaled, the zero channels of each padded stage permuted
    among themselves (across both sides) with their own scales while the old stream's channels keep its
    permutation and scale in the middle, the classifier scaled by 2 (logits times 2)."""
    gen = torch.Generator().manual_seed(seed)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    sd = {k: v.detach().clone().double() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}

    def pos(n):
        return torch.exp((2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) * 0.7)

    def pre_bn(conv, bn, d):  # rows of a conv before a BatchNorm scaled by d > 0 (the BatchNorm undoes it)
        sd[f"{conv}.weight"] *= d.view(-1, 1, 1, 1)
        sd[f"{bn}.running_mean"] *= d
        sd[f"{bn}.running_var"] = (sd[f"{bn}.running_var"] + EPS) * d**2 - EPS

    def unit(conv, bn, perm, scale):  # new channel k = old channel perm[k]; gamma and beta times scale[k]
        sd[f"{conv}.weight"] = sd[f"{conv}.weight"][perm]
        for t in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{bn}.{t}"] = sd[f"{bn}.{t}"][perm]
        sd[f"{bn}.weight"] *= scale
        sd[f"{bn}.bias"] *= scale

    def read(name, perm, scale):  # a layer reading those channels: input columns permuted and divided
        w = sd[name]
        sd[name] = w[:, perm] / scale.view(1, -1, *[1] * (w.dim() - 2))

    widths = (4, 8, 16)
    streams = []  # per stage: (perm, scale per old channel) of the stream's channels
    streams.append((torch.randperm(widths[0], generator=gen), pos(widths[0])))
    for c_new in widths[1:]:
        old_perm, old_scale = streams[-1]
        c_old, p = len(old_perm), c_new // 4
        pads = torch.tensor(list(range(p)) + list(range(p + c_old, c_new)))
        new_perm = torch.arange(c_new)
        new_perm[p : p + c_old] = old_perm + p  # the old stream's channels keep its permutation
        new_perm[pads] = pads[torch.randperm(len(pads), generator=gen)]  # zero channels: free among themselves
        scale = torch.ones(c_new, dtype=torch.float64)
        scale[p : p + c_old] = old_scale  # ... and its scales
        scale[pads] = pos(len(pads))
        streams.append((new_perm, scale))
    per_new = [(perm, scale[perm]) for perm, scale in streams]  # the scale of each new channel
    pre_bn("conv1", "bn1", pos(widths[0]))
    unit("conv1", "bn1", *per_new[0])
    for s in range(3):
        for i in range(3):
            b = f"layer{s + 1}.{i}"
            read(f"{b}.conv1.weight", *per_new[s - 1 if s > 0 and i == 0 else s])
            pre_bn(f"{b}.conv1", f"{b}.bn1", pos(widths[s]))
            inner = (torch.randperm(widths[s], generator=gen), pos(widths[s]))
            unit(f"{b}.conv1", f"{b}.bn1", *inner)
            read(f"{b}.conv2.weight", *inner)
            pre_bn(f"{b}.conv2", f"{b}.bn2", pos(widths[s]))
            unit(f"{b}.conv2", f"{b}.bn2", *per_new[s])
    read("linear.weight", *per_new[2])
    sd["linear.weight"] *= 2
    sd["linear.bias"] *= 2
    return sd if float64 else {k: v.to(dtypes[k]) for k, v in sd.items()}  # float64: no rounding to the model's dtype


def test_permuted_copy_of_the_test_module_is_the_same_function():
    """The copy's bookkeeping is right (plain PyTorch, float64): same logits times 2."""
    model = trained(0)
    copy = ResNetA().double().eval()
    copy.load_state_dict({k: v.double() if v.is_floating_point() else v
                          for k, v in permuted_and_rescaled(model, 1, float64=True).items()})
    x = datasets.load_dataset("digits").x_test[:200].double()
    with torch.no_grad():
        torch.testing.assert_close(copy(x), 2 * model.double()(x), rtol=1e-6, atol=1e-6)


def test_an_option_a_resnet20_written_here_uploads_and_its_symmetric_copy_is_at_distance_zero(live):
    model = trained(0)
    r = upload_a(live.client, model.state_dict(), "resnet20-option-a")
    assert r.status_code == 201, r.text
    net = r.json()
    assert net["architecture"] == {"kind": "resnet", "depth": 20, "width": 0.25, "shortcut": "A"}
    assert net["n_params"] == sum(p.numel() for p in model.parameters())
    digits = datasets.load_dataset("digits")
    with torch.no_grad():
        own = float((model(digits.x_test).argmax(1) != digits.y_test).float().mean())
    for job in [j for j in live.client.get("/api/jobs").json() if net["id"] in j["inputs"]]:
        live.wait(job)
    assert abs(live.client.get(f"/api/networks/{net['id']}").json()["test_error"] - own) <= 1 / len(digits.y_test)

    twin = upload_a(live.client, permuted_and_rescaled(model, 1), "resnet20-option-a-twin").json()
    d = live.run("distance", a=net["id"], b=twin["id"])["result"]
    assert d["geodesic"] < 1e-5 and d["normalized_aligned"] < 1e-6 and d["normalized"] > 1e-3
    path = live.run("path", a=net["id"], b=twin["id"], type="linear_aligned", points=5)["result"]
    assert path["barrier_excess"] < 0.005  # < 0.5 points
    raw = live.run("path", a=net["id"], b=twin["id"], type="linear", points=5)["result"]
    assert raw["barrier_excess"] > path["barrier_excess"]  # the raw line is not on the orbit
    canon = live.run("canonicalize", network=net["id"])["result"]
    w = load(live.client.get(f"/api/networks/{canon['network_id']}/weights").content)
    assert torch.equal(w["bn1.weight"].abs(), w["bn1.weight"])

    other = upload_a(live.client, trained(5).state_dict(), "resnet20-option-a-seed5").json()
    geo = live.run("path", a=net["id"], b=other["id"], type="geodesic", points=5)["result"]
    assert len(geo["t"]) == 5 and len(geo["train_error"]) == 5 and geo["distances"]["geodesic"] > 0.1


def test_torchvision_models_by_name_upload_as_they_are_and_the_others_are_refused_naming_the_operation(live):
    """``{"kind": "torchvision", "name": ...}``: resnet50 (torchvision's own constructor, bottlenecks, full width;
    its first conv set for the digits' one channel) uploads as it is and its errors are a plain evaluation's;
    mobilenet_v2 is refused with a 400 that names ReLU6."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    digits = datasets.load_dataset("digits")
    model.train()
    with torch.no_grad():
        model(digits.x_train[:256])
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    r = upload(live.client, blob=buf.getvalue(), filename="resnet50.pt", spec={"kind": "torchvision", "name": "resnet50"},
               name="tv-resnet50")
    assert r.status_code == 201, r.text
    net = r.json()
    assert net["architecture"] == {"kind": "resnet50", "width": 1.0}
    assert net["n_params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        own_train = float((model(digits.x_train).argmax(1) != digits.y_train).float().mean())
        own_test = float((model(digits.x_test).argmax(1) != digits.y_test).float().mean())
    for job in [j for j in live.client.get("/api/jobs").json() if net["id"] in j["inputs"]]:
        live.wait(job)
    got = live.client.get(f"/api/networks/{net['id']}").json()
    assert abs(got["train_error"] - own_train) <= 1 / len(digits.y_train)
    assert abs(got["test_error"] - own_test) <= 1 / len(digits.y_test)

    r = upload(live.client, model.state_dict(), spec={"kind": "torchvision", "name": "mobilenet_v2"}, name="mnv2")
    assert r.status_code == 400 and "ReLU6" in r.json()["detail"] and "mobilenet_v2" in r.json()["detail"], r.text


class Digits(nn.Module):
    """A plain MLP with the names of the service's {"kind": "mlp", "hidden": [32]}."""

    def __init__(self):
        super().__init__()
        self.fc1, self.out = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.out(F.relu(self.fc1(x.flatten(1))))


def own_digits(mean: float, std: float):
    """The digits split as the service documents it (scikit-learn's stratified split, seed 0, a quarter held
    out), values / 16, then (x - mean) / std: computed here, not by the service."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=0.25, random_state=0,
                                              stratify=bunch.target)
    prep = lambda x: torch.tensor((x / 16 - mean) / std, dtype=torch.float32)  # noqa: E731
    return prep(x_tr), torch.tensor(y_tr), prep(x_te), torch.tensor(y_te)


def test_datasets_state_their_preprocessing_and_a_network_uploaded_with_its_own_gets_its_owners_errors(live):
    listed = {d["name"]: d for d in live.client.get("/api/datasets").json()}
    assert "per-pixel" in listed["digits"]["preprocessing"]["default"]
    assert listed["cifar10"]["preprocessing"]["per"] == "channel"
    assert listed["cifar10"]["preprocessing"]["normalize"]["presets"]["torchvision"]["mean"] == [0.485, 0.456, 0.406]
    assert listed["hmm"]["preprocessing"]["normalize"] is None

    mean, std = 0.3, 0.4
    x_tr, y_tr, x_te, y_te = own_digits(mean, std)
    torch.manual_seed(0)
    model = Digits()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):  # a half-trained network: its errors depend on the preprocessing
        opt.zero_grad()
        F.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()
    with torch.no_grad():
        own_train = int((model(x_tr).argmax(1) != y_tr).sum()) / len(y_tr)
        own_test = int((model(x_te).argmax(1) != y_te).sum()) / len(y_te)
    spec = {"kind": "mlp", "hidden": [32]}
    options = {"normalize": {"mean": [mean], "std": [std]}}
    meta = {"name": "own-preprocessing", "architecture": spec, "dataset": "digits", "dataset_options": options}
    net = upload(live.client, model.state_dict(), meta=meta).json()
    assert net["dataset_options"]["normalize"] == {"mean": [0.3], "std": [0.4]}
    plain = upload(live.client, model.state_dict(), spec=spec, name="default-preprocessing").json()
    assert "normalize" not in plain["dataset_options"]  # absent = today's options, today's cache keys
    for job in [j for j in live.client.get("/api/jobs").json() if {net["id"], plain["id"]} & set(j["inputs"])]:
        live.wait(job)
    got = live.client.get(f"/api/networks/{net['id']}").json()
    assert abs(got["train_error"] - own_train) < 0.5 / len(y_tr) and abs(got["test_error"] - own_test) < 0.5 / len(y_te)
    other = live.client.get(f"/api/networks/{plain['id']}").json()
    assert abs(other["train_error"] - own_train) > 2 / len(y_tr)  # the default standardisation is another input

    bad = dict(meta, dataset_options={"normalize": "torchvision"})  # three channels for a one-channel data set
    r = upload(live.client, model.state_dict(), meta=bad)
    assert r.status_code == 400 and "3 channels" in r.json()["detail"], r.text


def test_a_path_carries_both_ends_errors_as_stored_equal_to_the_networks_own(live):
    """With BatchNorm statistics recomputed along the path (the default) t = 0 is not the stored network; the
    result's ``ends`` are (its own statistics), and equal the errors the Networks table shows."""
    models = [trained(0), trained(5)]
    with torch.no_grad():
        for m in models[0].modules():  # stored statistics far from those of the training data
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean += 0.5
    ids = [upload_a(live.client, m.state_dict(), f"ends-{i}").json()["id"] for i, m in enumerate(models)]
    for job in [j for j in live.client.get("/api/jobs").json() if set(ids) & set(j["inputs"])]:
        live.wait(job)
    own = [live.client.get(f"/api/networks/{i}").json() for i in ids]
    path = live.run("path", a=ids[0], b=ids[1], type="linear", points=3)["result"]
    assert path["bn"] == "recompute"
    for end, net in zip("ab", own):
        assert path["ends"][end]["train_error"] == net["train_error"]
        assert path["ends"][end]["test_error"] == net["test_error"]
    assert abs(path["train_error"][0] - path["ends"]["a"]["train_error"]) > 0.05  # the stale statistics' cost
    kept = live.run("path", a=ids[0], b=ids[1], type="linear", points=3, bn="interpolate")["result"]
    assert kept["train_error"][0] == kept["ends"]["a"]["train_error"]  # interpolated statistics: the network itself


def test_an_option_b_resnet20_with_its_own_names_uploads_with_a_rename_map_and_the_refusal_proposes_it(live):
    model = trained(0, option="B")
    state = model.state_dict()
    assert "layer2.0.shortcut.0.weight" in state and "linear.weight" in state
    blob = io.BytesIO()
    torch.save(state, blob)
    spec = {"kind": "resnet", "depth": 20, "width": 0.25}
    meta = {"name": "resnet20-b-own-names", "architecture": spec, "dataset": "digits"}
    r = upload(live.client, blob=blob.getvalue(), filename="r20b.pt", meta=meta)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["proposed"] == {"rename": {"shortcut.": "downsample.", "linear.": "fc."}}
    assert "missing tensors" in body["detail"] and "--accept-proposed-names" in body["detail"]
    assert not [n for n in live.client.get("/api/networks").json() if n["name"] == meta["name"]]  # nothing stored

    r = upload(live.client, blob=blob.getvalue(), filename="r20b.pt", meta=dict(meta, rename=body["proposed"]["rename"]))
    assert r.status_code == 201, r.text
    net = r.json()
    assert net["source"]["renamed"]["layer2.0.shortcut.0.weight"] == "layer2.0.downsample.0.weight"
    assert net["source"]["renamed"]["linear.bias"] == "fc.bias" and len(net["source"]["renamed"]) == 14  # 2 shortcuts x 6, linear x 2
    digits = datasets.load_dataset("digits")
    with torch.no_grad():
        own = float((model(digits.x_train).argmax(1) != digits.y_train).float().mean())
    for job in [j for j in live.client.get("/api/jobs").json() if net["id"] in j["inputs"]]:
        live.wait(job)
    assert abs(live.client.get(f"/api/networks/{net['id']}").json()["train_error"] - own) < 0.5 / len(digits.y_train)

    bad = dict(meta, rename={"bn1.": "bn2."})  # two tensors would get one name
    r = upload(live.client, blob=blob.getvalue(), filename="r20b.pt", meta=bad)
    assert r.status_code == 400 and "two tensors the name" in r.json()["detail"], r.text
    shuffled = {k: state[k] for k in reversed(list(state))}  # the shapes no longer fit in order: no proposal
    r = upload(live.client, shuffled, spec=spec, filename="w.safetensors", name="r20b-shuffled")
    assert r.status_code == 400 and "proposed" not in r.json(), r.text


def test_the_client_and_the_cli_accept_the_proposed_names_with_one_flag(server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from backend.client import ApiError, Client

    state = trained(1, option="B").state_dict()
    spec = {"kind": "resnet", "depth": 20, "width": 0.25}
    c = Client(server["url"])
    try:
        c.upload(state, name="r20b-client", architecture=spec)
        raise AssertionError("the upload should be refused")
    except ApiError as exc:  # a state dict is sent as safetensors with its order: the proposal is made
        assert exc.status == 400 and exc.body["proposed"] == {"rename": {"shortcut.": "downsample.", "linear.": "fc."}}
    net = c.upload(state, name="r20b-client", architecture=spec, accept_proposed=True)
    assert net["source"]["renamed"]["linear.weight"] == "fc.weight"

    path = tmp_path / "r20b.pt"
    torch.save(state, path)
    toroid = str(Path(sys.executable).parent / "toroid")
    args = [toroid, "upload", str(path), "--arch", json.dumps(spec), "--name", "r20b-cli", "--url", server["url"]]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "--accept-proposed-names" in refused.stderr, refused.stderr
    done = subprocess.run(args + ["--accept-proposed-names"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "renamed 14 tensors" in done.stderr and "r20b-cli" in done.stdout


def test_the_upload_form_states_the_preprocessing_and_accepts_proposed_names(server, page, tmp_path):
    from backend.client import Client

    torch.manual_seed(3)
    own = {"hidden.weight": torch.randn(16, 64), "hidden.bias": torch.randn(16),
           "head.weight": torch.randn(10, 16), "head.bias": torch.randn(10)}  # an MLP (64 -> 16 -> 10), own names
    path = tmp_path / "own-names.pt"
    torch.save(own, path)
    page.goto(server["url"])
    page.wait_for_selector("#upload-normalize")
    page.select_option("#upload-dataset", "digits")
    assert "per-pixel" in page.inner_text("#upload-dataset-help") and "normalize" in page.inner_text("#upload-dataset-help")
    page.set_input_files("#upload-file", str(path))
    page.fill("#upload-name", "form-own-names")
    page.select_option("#upload-kind", "mlp")
    page.fill("#upload-arch-hidden", "16")
    page.fill("#upload-normalize", "none")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-accept-names")  # refused: the names differ, the shapes fit in order
    assert "missing tensors" in page.inner_text("#upload-error")
    page.click("#upload-accept-names")
    page.wait_for_selector("#upload-done a", timeout=30_000)
    net = next(n for n in Client(server["url"]).networks() if n["name"] == "form-own-names")
    assert net["source"]["renamed"] == {"hidden.weight": "fc1.weight", "hidden.bias": "fc1.bias",
                                        "head.weight": "out.weight", "head.bias": "out.bias"}
    assert net["dataset_options"]["normalize"] == "none"
