"""Data sets: bundled digits, synthetic HMM, and MNIST / Fashion-MNIST / CIFAR read from a local folder
(tiny fake files written here in the exact torchvision layouts; nothing is downloaded)."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.landscape import data as D
from workers.landscape import nets, train as T
from workers.landscape.evaluate import error_and_loss


# ---------------------------------------------------------------------------------------------
# Fake data folders in torchvision's layouts

def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx ubyte format: big-endian magic (0x0803 images, 0x0801 labels) and sizes, then bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def fake_mnist(root: Path, sub: str = "MNIST", n_train: int = 60, n_test: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(root / sub / "raw", prefix, x, y)
        arrays[prefix] = (x, y)
    return arrays


def fake_cifar(root: Path, hundred: bool = False, per_batch: int = 8, seed: int = 0):
    """CIFAR 'python version' batches: pickled dicts with 'data' (n, 3072) uint8 rows (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    out = {}
    for f in files[0] + files[1]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 100 if hundred else 10, size=per_batch)]
        entry = {"data": x, "filenames": [f"img{i}.png" for i in range(per_batch)], "batch_label": f}
        entry.update({"fine_labels": y, "coarse_labels": [v // 5 for v in y]} if hundred else {"labels": y})
        (folder / f).write_bytes(pickle.dumps(entry, protocol=2))
        out[f] = (x, y)
    return out


# ---------------------------------------------------------------------------------------------

def test_listing_and_option_defaults():
    names = {d["name"]: d for d in D.list_datasets(root="/nonexistent/toroid-data")}
    assert set(names) == {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "hmm"}
    assert names["digits"]["available"] and names["hmm"]["available"]
    assert not names["mnist"]["available"] and "/nonexistent/toroid-data/MNIST/raw" in names["mnist"]["reason"]
    opts = D.normalize_options("mnist", {"n_train": 100.0})
    assert opts == {"n_train": 100, "n_test": None, "seed": 0, "labels": "class"}
    assert D.normalize_options("hmm", None) == {"D": 501, "N": 501, "n_train": 1503, "n_test": 10000, "seed": 0}
    for name, bad, word in [("nope", {}, "unknown data set"), ("digits", {"colour": 1}, "colour"),
                            ("digits", {"n_train": 0}, "n_train"), ("mnist", {"labels": "odd"}, "labels"),
                            ("digits", {"test_fraction": 2.0}, "test_fraction"), ("hmm", {"N": True}, "'N'"),
                            ("hmm", {"N": 20000, "n_train": 1_000_000}, "2e8")]:
        with pytest.raises(D.DatasetError, match=word):
            D.normalize_options(name, bad)


def test_missing_folder_names_folder_and_files(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(D.DatasetError) as err:
        D.load_dataset("mnist", root=root)
    msg = str(err.value)
    assert str(tmp_path / "data" / "MNIST" / "raw") in msg
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f in msg
    assert "TOROID_DATA_ROOT" in msg and "never downloads" in msg
    with pytest.raises(D.DatasetError, match=r"cifar-10-batches-py.*data_batch_1.*test_batch"):
        D.load_dataset("cifar10", root=root)
    # one file missing: only that one is named as missing
    fake_mnist(tmp_path / "data", "FashionMNIST")
    (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(D.DatasetError, match=r"missing: t10k-labels-idx1-ubyte\."):
        D.load_dataset("fashion_mnist", root=root)


def test_data_root_is_an_argument_never_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOROID_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOROID_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert D.data_root() == Path.home() / ".toroid" / "data"
    assert D.data_root(tmp_path / "explicit") == tmp_path / "explicit"
    from backend.config import Settings

    assert Settings().dataset_root == tmp_path / "elsewhere"  # the service reads it and passes it


@pytest.mark.parametrize("name, sub", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path, name, sub):
    arrays = fake_mnist(tmp_path, sub)
    ds = D.load_dataset(name, root=tmp_path)
    x_raw, y_raw = arrays["train"]
    assert ds.x_train.shape == (60, 1, 28, 28) and ds.x_test.shape == (30, 1, 28, 28) and ds.n_classes == 10
    assert torch.equal(ds.y_train, torch.from_numpy(y_raw.astype(np.int64)))
    # per-channel standardisation with the training statistics
    mean, std = x_raw.astype(np.float64).mean(), x_raw.astype(np.float64).std()
    assert ds.info["mean"] == pytest.approx([mean]) and ds.info["std"] == pytest.approx([std])
    expected = (x_raw[:, None].astype(np.float64) - mean) / std
    assert np.allclose(ds.x_train.numpy(), expected, atol=1e-5)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-3
    x_te = (arrays["t10k"][0][:, None].astype(np.float64) - mean) / std
    assert np.allclose(ds.x_test.numpy(), x_te, atol=1e-5)
    assert ds.info["source"] == str(tmp_path / sub / "raw")
    listed = {d["name"]: d for d in D.list_datasets(root=tmp_path)}
    assert listed[name]["available"] and listed[name]["reason"] is None and not listed["cifar10"]["available"]
    assert D.shape_of(name) == (ds.input_shape, ds.n_classes)


def test_subsets_parity_and_seed(tmp_path):
    arrays = fake_mnist(tmp_path)
    a = D.load_dataset("mnist", {"n_train": 20, "n_test": 10, "seed": 3, "labels": "parity"}, root=tmp_path)
    assert len(a.y_train) == 20 and len(a.y_test) == 10 and a.n_classes == 2
    # the subset is a set of original examples, labelled by digit parity
    x_raw, y_raw = arrays["train"]
    rows = {x_raw[i].tobytes(): int(y_raw[i]) for i in range(len(y_raw))}
    restored = np.rint(a.x_train.numpy()[:, 0] * a.info["std"][0] + a.info["mean"][0]).astype(np.uint8)
    assert [rows[r.tobytes()] % 2 for r in restored] == a.y_train.tolist()
    b = D.load_dataset("mnist", {"n_train": 20, "n_test": 10, "seed": 4, "labels": "parity"}, root=tmp_path)
    assert not torch.equal(a.x_train, b.x_train)
    with pytest.raises(D.DatasetError, match="n_train=61 is larger than the 60"):
        D.load_dataset("mnist", {"n_train": 61}, root=tmp_path)


def test_cifar10_and_cifar100_batches(tmp_path):
    batches = fake_cifar(tmp_path)
    ds = D.load_dataset("cifar10", root=tmp_path)
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.x_test.shape == (8, 3, 32, 32) and ds.n_classes == 10
    assert ds.y_train.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # pixel (channel 2, row 5, column 7) of the first image of data_batch_2 is byte 2*1024 + 5*32 + 7
    raw = batches["data_batch_2"][0][0, 2 * 1024 + 5 * 32 + 7]
    assert float(ds.x_train[8, 2, 5, 7]) == pytest.approx((raw - ds.info["mean"][2]) / ds.info["std"][2], abs=1e-5)
    assert len(ds.info["mean"]) == 3
    fake_cifar(tmp_path, hundred=True, per_batch=12)
    ds100 = D.load_dataset("cifar100", {"n_train": 5, "labels": "class"}, root=tmp_path)
    assert ds100.n_classes == 100 and ds100.x_train.shape == (5, 3, 32, 32) and len(ds100.y_test) == 12
    assert D.shape_of("cifar100") == (ds100.input_shape, 100) and D.shape_of("cifar10") == (ds.input_shape, 10)


def test_cifar_reader_refuses_code(tmp_path):
    """A pickle that would call os.system is refused, not run."""
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2))
    with pytest.raises(D.DatasetError, match="refusing to load"):
        D.load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_digits_subsets_and_parity():
    full = D.load_dataset("digits")
    assert full.x_train.shape == (1347, 1, 8, 8) and full.n_classes == 10
    sub = D.load_dataset("digits", {"n_train": 200, "n_test": 100, "labels": "parity"})
    assert sub.x_train.shape == (200, 1, 8, 8) and len(sub.y_test) == 100 and sub.n_classes == 2
    assert set(sub.y_train.tolist()) == {0, 1}
    assert sub.info["options"]["n_train"] == 200 and sub.info["fingerprint"] != full.info["fingerprint"]
    assert D.shape_of("digits", {"labels": "parity"}) == (sub.input_shape, sub.n_classes) == ((1, 8, 8), 2)
    assert D.shape_of("digits") == (full.input_shape, full.n_classes) == ((1, 8, 8), 10)


def test_recorded_split_reproduces_errors(tmp_path):
    """Re-loading with the recorded options gives identical tensors, so a network re-evaluates identically."""
    ds = D.load_dataset("digits", {"n_train": 500, "n_test": 200, "seed": 7})
    torch.manual_seed(0)
    model = nets.build({"kind": "mlp", "hidden": [32]}, ds.input_shape, ds.n_classes)
    T.train(model, ds, "sgd", epochs=3, batch_size=64)
    before = (error_and_loss(model, ds.x_train, ds.y_train), error_and_loss(model, ds.x_test, ds.y_test))
    again = D.load_dataset(ds.info["name"], ds.info["options"])
    for a, b in ((ds.x_train, again.x_train), (ds.y_train, again.y_train), (ds.x_test, again.x_test), (ds.y_test, again.y_test)):
        assert torch.equal(a, b)
    assert again.info == ds.info
    after = (error_and_loss(model, again.x_train, again.y_train), error_and_loss(model, again.x_test, again.y_test))
    assert after == before and before[0][0] < 0.5  # trained, and re-evaluated identically
    other = D.load_dataset("digits", {"n_train": 500, "n_test": 200, "seed": 8})
    assert other.info["fingerprint"] != ds.info["fingerprint"]
    # the same holds for files read from a folder
    fake_mnist(tmp_path)
    m1 = D.load_dataset("mnist", {"n_train": 25, "seed": 1}, root=tmp_path)
    m2 = D.load_dataset(m1.info["name"], m1.info["options"], root=tmp_path)
    assert torch.equal(m1.x_train, m2.x_train) and m1.info["fingerprint"] == m2.info["fingerprint"]


def test_hidden_manifold_model():
    opts = {"D": 20, "N": 100, "n_train": 600, "n_test": 400, "seed": 1}
    ds = D.load_dataset("hmm", opts)
    assert ds.x_train.shape == (600, 100) and ds.x_test.shape == (400, 100) and ds.n_classes == 2
    assert set(ds.x_train.unique().tolist()) == {-1.0, 1.0}
    assert 0.35 < ds.y_train.float().mean() < 0.65  # a random teacher splits the latent space in two halves
    assert D.shape_of("hmm", opts) == (ds.input_shape, ds.n_classes) == ((100,), 2)
    same = D.load_dataset("hmm", opts)
    assert torch.equal(ds.x_train, same.x_train) and torch.equal(ds.y_test, same.y_test)
    more_test = D.load_dataset("hmm", {**opts, "n_test": 50})
    assert torch.equal(ds.x_train, more_test.x_train) and torch.equal(ds.y_train, more_test.y_train)
    assert not torch.equal(ds.x_train, D.load_dataset("hmm", {**opts, "seed": 2}).x_train)
    # inputs are a fixed projection of the latent space: x = sign(F xi), so the labels are learnable
    torch.manual_seed(0)
    model = nets.build({"kind": "mlp", "hidden": [32]}, ds.input_shape, 2)
    T.train(model, ds, "sgd", epochs=15, batch_size=32)
    assert error_and_loss(model, ds.x_test, ds.y_test)[0] < 0.3
