"""Datasets as tensors: the whole split held in memory, inputs standardised as in the paper.

``load_dataset(name, options)`` returns a ``Dataset``; ``DATASETS`` describes what can be loaded and
``list_datasets()`` adds whether each one is available here. Nothing is ever downloaded:

- ``digits``: scikit-learn's bundled 8x8 digits.
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: files in torchvision's layout under the data
  root, an argument (the backend passes ``Settings.dataset_root``: ``$TOROID_DATA_ROOT``, else
  ``$TOROID_HOME/data``); without one, ``~/.toroid/data``. The science never reads the environment.
- ``hmm``: synthetic Hidden Manifold Model data (docs/science.md section 6), generated from a seed.

Preprocessing: the default of each data set (``PREPROCESSING``, served by ``GET /api/datasets``) is the
paper's "inputs standardised": digits per pixel, images per channel, with the training subset's statistics.
The option ``normalize`` replaces it with a lab's own: the pixels scaled to [0, 1] (torchvision's ToTensor),
then per channel (x - mean) / std with the given constants or a preset (``NORMALIZE_PRESETS``); it is left out
of the normalised options when absent, so every existing network keeps its options and cache keys.

``Dataset.info`` records the normalised options, the split, the standardisation constants and a
fingerprint of the tensors: ``load_dataset(info["name"], info["options"])`` gives the same tensors.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .params import validate_params


class DatasetError(ValueError):
    """A data set that is unknown, badly parameterised, or whose files are missing."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (n_train, *input_shape) float32, standardised
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor  # (n_test, *input_shape) float32, standardised with the training statistics
    y_test: torch.Tensor  # (n_test,) int64
    n_classes: int
    info: dict[str, Any] = field(default_factory=dict)  # split, seed, preprocessing: enough to reproduce

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# ----------------------------------------------------------------------------------------------
# Parameter tables (the format of params.py; validated by params.validate_params).

def _subset_params(n_train_default: int | None = None, n_test_default: int | None = None) -> dict[str, Any]:
    return {
        "n_train": {"type": "int", "default": n_train_default, "nullable": True, "min": 1,
                    "help": "size of a random training subset (null: the whole training set)"},
        "n_test": {"type": "int", "default": n_test_default, "nullable": True, "min": 1,
                   "help": "size of a random test subset (null: the whole test set)"},
        "seed": {"type": "int", "default": 0, "min": 0, "help": "seed of the subsets (and of the split, if any)"},
    }


_LABELS = {"type": "str", "default": "class", "choices": ["class", "parity"],
           "help": "'class': the original classes; 'parity': class index mod 2 (2 classes, e.g. even/odd digits)"}

# Files in torchvision's layout, relative to the data root (what torchvision's download=True writes).
_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
_FOLDERS: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (subfolder, training files, test files)
    "mnist": ("MNIST/raw", _IDX_FILES[:2], _IDX_FILES[2:]),
    "fashion_mnist": ("FashionMNIST/raw", _IDX_FILES[:2], _IDX_FILES[2:]),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}

DATASETS: dict[str, dict[str, Any]] = {
    "digits": {
        "description": "scikit-learn's bundled handwritten digits: 1797 images of 8x8 pixels, 10 classes.",
        "input_shape": [1, 8, 8],
        "n_classes": 10,
        "params": {
            "test_fraction": {"type": "float", "default": 0.25, "min": 0.05, "max": 0.9,
                              "help": "fraction of the 1797 images held out (stratified split)"},
            **_subset_params(),
            "labels": _LABELS,
        },
    },
    "mnist": {
        "description": "MNIST handwritten digits, 60000 + 10000 images of 28x28 pixels, 10 classes (local files).",
        "input_shape": [1, 28, 28],
        "n_classes": 10,
        "params": {**_subset_params(), "labels": _LABELS},
    },
    "fashion_mnist": {
        "description": "Fashion-MNIST clothing images, 60000 + 10000 of 28x28 pixels, 10 classes (local files).",
        "input_shape": [1, 28, 28],
        "n_classes": 10,
        "params": {**_subset_params(), "labels": _LABELS},
    },
    "cifar10": {
        "description": "CIFAR-10 colour images, 50000 + 10000 of 3x32x32, 10 classes (local files).",
        "input_shape": [3, 32, 32],
        "n_classes": 10,
        "params": {**_subset_params(), "labels": _LABELS},
    },
    "cifar100": {
        "description": "CIFAR-100 colour images, 50000 + 10000 of 3x32x32, 100 fine classes (local files).",
        "input_shape": [3, 32, 32],
        "n_classes": 100,
        "params": {**_subset_params(), "labels": _LABELS},
    },
    "hmm": {
        "description": "Hidden Manifold Model: latent xi ~ N(0, I_D), inputs x = sign(F xi) with F a random N x D "
                       "matrix, labels from a random teacher perceptron on xi (2 classes). Synthetic, from a seed.",
        "input_shape": [501],  # (N,) with the default N
        "n_classes": 2,
        "params": {
            "D": {"type": "int", "default": 501, "min": 1, "max": 20000, "help": "latent dimension (teacher's input size)"},
            "N": {"type": "int", "default": 501, "min": 1, "max": 20000, "help": "input dimension (rows of F)"},
            "n_train": {"type": "int", "default": 1503, "min": 1, "max": 1_000_000, "help": "training patterns P"},
            "n_test": {"type": "int", "default": 10000, "min": 1, "max": 1_000_000, "help": "test patterns"},
            "seed": {"type": "int", "default": 0, "min": 0, "help": "seed of F, the teacher and the patterns"},
        },
    },
}


# How each data set's inputs are made by default ("normalize" absent) and what "normalize" starts from.
PREPROCESSING: dict[str, dict[str, Any]] = {
    "digits": {"default": "per-pixel standardisation: (x - mean) / std of each of the 64 pixels over the training "
                          "subset (a pixel constant over it: std 1)",
               "per": "pixel", "raw": "integers 0..16", "scale": 16, "layout": "(n, 1, 8, 8) float32",
               "info": "per-pixel standardisation with training mean/std"},
    **{name: {"default": "per-channel standardisation: (x - mean) / std with the mean and std of each channel's raw "
                         "0..255 pixels over the training subset",
              "per": "channel", "raw": "integers 0..255", "scale": 255,
              "info": "per-channel (x - mean) / std on raw 0-255 pixels, statistics of the training subset",
              "layout": f"(n, {shape[0]}, {shape[1]}, {shape[2]}) float32, channels first"}
       for name, shape in (("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)), ("cifar10", (3, 32, 32)),
                           ("cifar100", (3, 32, 32)))},
    "hmm": {"default": "none: the inputs are sign(F xi) in {-1, +1}", "per": None, "raw": "-1 or +1", "scale": None,
            "info": "none: inputs are sign(F xi) in {-1, +1}",
            "layout": "(n, N) float32"},
}
NORMALIZE_PRESETS = {  # name -> (mean, std) per channel, on pixels scaled to [0, 1]
    "none": None,  # the pixels scaled to [0, 1] (torchvision's ToTensor), nothing else
    "torchvision": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # the ImageNet constants of torchvision's models
}
NORMALIZE_HELP = ("'normalize' in a network's dataset_options replaces the default standardisation: \"none\" (pixels "
                  "scaled to [0, 1], as torchvision's ToTensor), \"torchvision\" (then per channel (x - mean) / std with "
                  "torchvision's ImageNet constants mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); 3 channels), "
                  "or {\"mean\": [...], \"std\": [...]}: one value per channel (or one for all) on the [0, 1] scale, "
                  "as torchvision's Normalize. Absent: the data set's default.")


def _normalize_option(name: str, value: Any) -> Any:
    """The normalised ``normalize`` option: a preset's name, or {"mean": [...], "std": [...]} of floats."""
    if name == "hmm":
        raise DatasetError("data set 'hmm' has no 'normalize' option: its inputs are +-1 values, not pixels")
    channels = DATASETS[name]["input_shape"][0]
    if isinstance(value, str):
        if value not in NORMALIZE_PRESETS:
            raise DatasetError(f"'normalize' must be one of {', '.join(map(repr, NORMALIZE_PRESETS))} or "
                               f"{{\"mean\": [...], \"std\": [...]}}, got {value!r}")
        preset = NORMALIZE_PRESETS[value]
        if preset is not None and len(preset[0]) not in (1, channels):
            raise DatasetError(f"'normalize' preset {value!r} has {len(preset[0])} channels; data set {name!r} has "
                               f"{channels}: give its own {{\"mean\": [...], \"std\": [...]}}")
        return value
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise DatasetError(f"'normalize' must be a preset name ({', '.join(NORMALIZE_PRESETS)}) or an object with "
                           f"exactly 'mean' and 'std', got {value!r}")
    out = {}
    for key in ("mean", "std"):
        v = value[key]
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if (not isinstance(v, list) or len(v) not in (1, channels)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise DatasetError(f"'normalize.{key}' must be a list of {channels} number(s) (one per channel of data set "
                               f"{name!r}) or one number, got {value[key]!r}")
        if key == "std" and not all(x > 0 for x in v):
            raise DatasetError(f"'normalize.std' must be positive, got {v!r}")
        out[key] = [float(x) for x in v]
    return out


def normalization(name: str, value: Any) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel on the [0, 1] scale of a normalised ``normalize`` option; None: scaling alone."""
    if isinstance(value, str):
        preset = NORMALIZE_PRESETS[value]
        return None if preset is None else (list(preset[0]), list(preset[1]))
    return value["mean"], value["std"]


def describe_preprocessing(name: str, options: dict[str, Any]) -> str:
    """What the inputs of a data set with these (normalised) options are, in words."""
    pre = PREPROCESSING[name]
    if "normalize" not in options:
        return pre["info"]
    ms = normalization(name, options["normalize"])
    scaled = f"pixels ({pre['raw']}) divided by {pre['scale']} to [0, 1]"
    return scaled if ms is None else f"{scaled}, then per channel (x - mean) / std with mean {ms[0]}, std {ms[1]}"


def normalize_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a data set's options and fill in defaults (``normalize`` stays out unless given: the options of
    every network made before it existed are unchanged, and so are their cache keys)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    normalize = None
    if isinstance(options, dict) and options.get("normalize") is not None:
        options = dict(options)
        normalize = _normalize_option(name, options.pop("normalize"))
    elif isinstance(options, dict) and "normalize" in options:
        options = {k: v for k, v in options.items() if k != "normalize"}
    out = validate_params(DATASETS[name]["params"], options, f"data set {name!r}", DatasetError)
    if normalize is not None:
        out["normalize"] = normalize
    if name == "hmm" and out["N"] * (out["n_train"] + out["n_test"]) > 200_000_000:
        raise DatasetError("data set 'hmm' would hold more than 2e8 input values (N * (n_train + n_test)); "
                           "lower N, n_train or n_test")
    return out


def shape_of(name: str, options: dict[str, Any] | None = None) -> tuple[tuple[int, ...], int]:
    """Input shape and number of classes of a data set with these options, without loading it."""
    options = normalize_options(name, options)
    if name == "hmm":
        return (options["N"],), 2
    n_classes = 2 if options.get("labels") == "parity" else DATASETS[name]["n_classes"]
    return tuple(DATASETS[name]["input_shape"]), n_classes


# ----------------------------------------------------------------------------------------------
# Where the files live

def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding downloaded data sets: ``root``, else ~/.toroid/data (the default of the backend's
    ``Settings.dataset_root``, which is what the service passes)."""
    return Path(root).expanduser() if root is not None else Path.home() / ".toroid" / "data"


def unavailable(name: str, root: str | os.PathLike | None = None) -> str | None:
    """None if data set ``name`` can be loaded here, else the message saying what to put where."""
    return _missing_files_message(name, data_root(root)) if name in _FOLDERS else None


def split_sizes(name: str, options: dict[str, Any] | None = None) -> tuple[int, int]:
    """Training and test samples of a data set with these options, without loading it (for cost estimates)."""
    options = normalize_options(name, options)
    if name == "hmm":
        return options["n_train"], options["n_test"]
    if name == "digits":
        n_test = math.ceil(1797 * options["test_fraction"])
        full = (1797 - n_test, n_test)
    else:
        full = {"cifar10": (50000, 10000), "cifar100": (50000, 10000)}.get(name, (60000, 10000))
    return (min(options["n_train"] or full[0], full[0]), min(options["n_test"] or full[1], full[1]))


def _missing_files_message(name: str, root: Path) -> str | None:
    """None if every file of ``name`` is in place, else a message saying what to put where."""
    sub, train_files, test_files = _FOLDERS[name]
    folder = root / sub
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if not missing:
        return None
    cls = _TORCHVISION_CLASS[name]
    top = sub.split("/")[0]
    return (f"data set {name!r} is not available: it is read from the folder {folder}, which must hold "
            f"{', '.join(train_files + test_files)} (torchvision's layout, uncompressed); missing: {', '.join(missing)}. "
            f"Toroid never downloads data: on a machine with internet run "
            f"`python -c \"import torchvision; torchvision.datasets.{cls}('data', download=True)\"`, "
            f"copy the folder data/{top} into {root}, or point TOROID_DATA_ROOT at a folder that holds {top}.")


def list_datasets(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """``DATASETS`` as a list, each entry with ``name``, ``available`` and ``reason`` (why not, else None)."""
    root_path = data_root(root)
    out = []
    for name, entry in DATASETS.items():
        reason = _missing_files_message(name, root_path) if name in _FOLDERS else None
        pre = PREPROCESSING[name]
        preprocessing = {"default": pre["default"], "per": pre["per"], "raw_values": pre["raw"],
                         "layout": pre["layout"],
                         "normalize": None if name == "hmm" else {"scale": f"divided by {pre['scale']} to [0, 1]",
                                                                  "presets": {k: (None if v is None else
                                                                                  {"mean": list(v[0]), "std": list(v[1])})
                                                                              for k, v in NORMALIZE_PRESETS.items()},
                                                                  "help": NORMALIZE_HELP}}
        out.append({"name": name, **entry, "preprocessing": preprocessing, "available": reason is None,
                    "reason": reason})
    return out


# ----------------------------------------------------------------------------------------------
# Loading

def load_dataset(name: str, options: dict[str, Any] | None = None, *, root: str | os.PathLike | None = None) -> Dataset:
    """Load data set ``name`` with ``options`` (see ``DATASETS``); files are looked for under ``data_root(root)``."""
    options = normalize_options(name, options)
    if name == "digits":
        return _digits(options)
    if name == "hmm":
        return _hmm(options)
    root_path = data_root(root)
    message = _missing_files_message(name, root_path)
    if message:
        raise DatasetError(message)
    folder = root_path / _FOLDERS[name][0]
    try:
        if name in ("mnist", "fashion_mnist"):
            arrays = _read_mnist_like(name, root_path)
        else:
            arrays = _read_cifar(name, folder)
    except DatasetError:
        raise
    except Exception as exc:  # corrupt or truncated files
        raise DatasetError(f"could not read data set {name!r} from {folder}: {exc}") from exc
    return _image_dataset(name, options, *arrays, source=str(folder))


def _read_mnist_like(name: str, root: Path):
    """uint8 images (n, 1, 28, 28) and int64 labels, read by torchvision from <root>/<Class>/raw/."""
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION_CLASS[name])
    train = cls(str(root), train=True, download=False)
    test = cls(str(root), train=False, download=False)
    return (train.data.numpy()[:, None], train.targets.numpy().astype(np.int64),
            test.data.numpy()[:, None], test.targets.numpy().astype(np.int64))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: nothing in a data folder can run code."""

    _ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):  # numpy 2 moved it
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _read_cifar(name: str, folder: Path):
    """uint8 images (n, 3, 32, 32) and int64 labels from the CIFAR "python version" batches.

    [ours] The batches are read with a restricted unpickler instead of torchvision's CIFAR classes:
    same files and layout, but no arbitrary code can run, and no md5 check (so subsets of the files work).
    """
    _, train_files, test_files = _FOLDERS[name]
    key = "labels" if name == "cifar10" else "fine_labels"

    def read(files):
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                entry = _ArrayUnpickler(fh, encoding="latin1").load()
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _subset(n_total: int, n: int | None, rng: np.random.Generator, what: str) -> np.ndarray:
    """Sorted indices of a random subset of size ``n`` (all indices when n is None)."""
    if n is None:
        return np.arange(n_total)
    if n > n_total:
        raise DatasetError(f"{what}={n} is larger than the {n_total} examples available")
    return np.sort(rng.permutation(n_total)[:n])


def _relabel(y: np.ndarray, n_classes: int, labels: str) -> tuple[np.ndarray, int]:
    return (y % 2, 2) if labels == "parity" else (y, n_classes)


def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _image_dataset(name, options, x_tr, y_tr, x_te, y_te, *, source: str) -> Dataset:
    """Subset, standardise per channel, relabel. Images are uint8 arrays (n, C, H, W).

    [ours] "Inputs standardised": per-channel mean and std of the raw 0-255 pixels of the training subset
    (as torchvision's Normalize with data set constants), applied to train and test alike.
    """
    rng = np.random.default_rng(options["seed"])
    i_tr = _subset(len(y_tr), options["n_train"], rng, "n_train")
    i_te = _subset(len(y_te), options["n_test"], rng, "n_test")
    x_tr, y_tr, x_te, y_te = x_tr[i_tr], y_tr[i_tr], x_te[i_te], y_te[i_te]
    if "normalize" in options:  # the caller's: pixels / 255, then its mean and std per channel
        ms = normalization(name, options["normalize"])
        mean, std = ms if ms is not None else ([0.0], [1.0])
        m_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        x_train = (torch.from_numpy(x_tr).float() / 255 - m_t) / s_t
        x_test = (torch.from_numpy(x_te).float() / 255 - m_t) / s_t
        return _image_result(name, options, x_train, y_tr, x_test, y_te, source, mean, std)
    # Exact per-channel statistics of uint8 pixels from their histogram (no float64 copy of the images).
    mean, std = [], []
    values = np.arange(256, dtype=np.float64)
    for c in range(x_tr.shape[1]):
        counts = np.bincount(x_tr[:, c].ravel(), minlength=256).astype(np.float64)
        m = float(counts @ values / counts.sum())
        s = float(np.sqrt(counts @ (values - m) ** 2 / counts.sum()))
        mean.append(m)
        std.append(s if s > 1e-8 else 1.0)
    m_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x_train = (torch.from_numpy(x_tr).float() - m_t) / s_t
    x_test = (torch.from_numpy(x_te).float() - m_t) / s_t
    return _image_result(name, options, x_train, y_tr, x_test, y_te, source, mean, std)


def _image_result(name, options, x_train, y_tr, x_test, y_te, source, mean, std) -> Dataset:
    y_tr, n_classes = _relabel(y_tr, DATASETS[name]["n_classes"], options["labels"])
    y_te, _ = _relabel(y_te, DATASETS[name]["n_classes"], options["labels"])
    y_train, y_test = torch.from_numpy(np.ascontiguousarray(y_tr)), torch.from_numpy(np.ascontiguousarray(y_te))
    return Dataset(
        name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=n_classes,
        info={
            "name": name,
            "options": dict(options),
            "source": source,
            "split": "the data set's own train/test files; subsets: sorted indices of "
                     "numpy.random.default_rng(seed).permutation, first the training then the test subset",
            "n_train": len(y_train),
            "n_test": len(y_test),
            "labels": options["labels"],
            "preprocessing": describe_preprocessing(name, options),
            "mean": mean,
            "std": std,
            "fingerprint": _fingerprint(x_train, y_train, x_test, y_test),
        },
    )


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature standardisation with the training set's mean and std (constant features: std 1)."""
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True)
    std[std < 1e-8] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def _digits(options: dict[str, Any]) -> Dataset:
    """Stratified split of the 1797 digits, then optional subsets, then per-pixel standardisation
    (the subsets use the same seed, drawn after the split)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float64)  # (1797, 64)
    y = bunch.target.astype(np.int64)
    seed = options["seed"]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=options["test_fraction"], random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    i_tr = _subset(len(y_tr), options["n_train"], rng, "n_train")
    i_te = _subset(len(y_te), options["n_test"], rng, "n_test")
    x_tr, y_tr, x_te, y_te = x_tr[i_tr], y_tr[i_tr], x_te[i_te], y_te[i_te]
    if "normalize" in options:  # the caller's: values / 16, then its mean and std
        ms = normalization("digits", options["normalize"])
        mean, std = ms if ms is not None else ([0.0], [1.0])
        x_tr, x_te = (x_tr / 16 - mean[0]) / std[0], (x_te / 16 - mean[0]) / std[0]
    else:
        x_tr, x_te = _standardise(x_tr, x_te)
    y_tr, n_classes = _relabel(y_tr, 10, options["labels"])
    y_te, _ = _relabel(y_te, 10, options["labels"])
    shape = (-1, 1, 8, 8)
    x_train = torch.from_numpy(x_tr.astype(np.float32)).reshape(shape)
    x_test = torch.from_numpy(x_te.astype(np.float32)).reshape(shape)
    y_train, y_test = torch.from_numpy(np.ascontiguousarray(y_tr)), torch.from_numpy(np.ascontiguousarray(y_te))
    return Dataset(
        name="digits", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=n_classes,
        info={
            "name": "digits",
            "options": dict(options),
            "split": "sklearn train_test_split(random_state=seed), stratified; subsets: sorted indices of "
                     "numpy.random.default_rng(seed).permutation",
            "n_train": len(y_train),
            "n_test": len(y_test),
            "labels": options["labels"],
            "preprocessing": describe_preprocessing("digits", options),
            "fingerprint": _fingerprint(x_train, y_train, x_test, y_test),
        },
    )


def _hmm(options: dict[str, Any]) -> Dataset:
    """Hidden Manifold Model (Goldt et al. 2020) as used in docs/science.md section 6.

    Drawn in this order from numpy.random.default_rng(seed): F (N, D), teacher (D,), xi_train, xi_test;
    so changing n_test leaves the training set unchanged. [ours] sign(0) = +1; label 1 when the teacher's
    field is positive, else 0; inputs are the +-1 values themselves (already centred, not standardised);
    the paper gives D = 501 and P = 1503 but not N, which defaults to N = D.
    """
    D, N, seed = options["D"], options["N"], options["seed"]
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((N, D))
    teacher = rng.standard_normal(D)

    def patterns(n):
        xi = rng.standard_normal((n, D))
        x = np.where(xi @ F.T >= 0, 1.0, -1.0).astype(np.float32)  # (n, N)
        y = (xi @ teacher > 0).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = patterns(options["n_train"])
    x_test, y_test = patterns(options["n_test"])
    return Dataset(
        name="hmm", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=2,
        info={
            "name": "hmm",
            "options": dict(options),
            "split": "independent patterns; rng order F, teacher, training xi, test xi",
            "n_train": len(y_train),
            "n_test": len(y_test),
            "labels": "teacher perceptron sign(w* . xi) mapped to {0, 1}",
            "preprocessing": "none: inputs are sign(F xi) in {-1, +1}",
            "fingerprint": _fingerprint(x_train, y_train, x_test, y_test),
        },
    )
