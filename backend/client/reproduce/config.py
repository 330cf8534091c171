"""What `toroid reproduce` runs at each scale, and what the paper reports (docs/science.md sections 5-7).

A *setting* is one architecture trained on one data set by the three samplers of the paper (RSGD, SGD,
ADV), ``seeds`` minimizers each. The *binary* experiment is a committee machine on Hidden Manifold data
at a few widths K. Scales:

- ``tiny``: seconds; a tiny MLP on digits and a tiny committee machine (for the tests).
- ``small``: at most about 30 minutes on 2 CPU cores: an MLP on digits (and MLPs on 10000-image subsets
  of MNIST and Fashion-MNIST when their files are there), the committee machine at K = 11, 51, 101.
- ``full``: for a GPU server: the paper's MLP (2 x 512) and LeNet on MNIST and Fashion-MNIST (when
  there), 300 epochs, 5 seeds, the committee machine up to K = 201 on the paper's HMM sizes.

Your own network: ``architecture`` (any real-valued spec the service takes: a ResNet, a torchvision
layout, a layer graph) replaces the architecture of every setting of the scale, and ``dataset`` keeps the
settings on that data set (or runs the scale's first setting's schedule on it), so the same comparison
(RSGD, SGD, ADV minimizers; flatness, distances, paths, bends) runs on the lab's network.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

SAMPLERS = ("rsgd", "sgd", "adv")
LABEL = {"rsgd": "RSGD", "sgd": "SGD", "adv": "ADV"}
# pair types in the paper's order (Fig. 2 and 5)
PAIR_TYPES: list[tuple[str, str]] = [("rsgd", "rsgd"), ("rsgd", "sgd"), ("sgd", "sgd"),
                                     ("rsgd", "adv"), ("sgd", "adv"), ("adv", "adv")]
PATH_TYPES = ("linear", "linear_aligned", "geodesic")
PATH_LABEL = {"linear": "Linear", "linear_aligned": "Linear-Aligned", "geodesic": "Geodesic-Aligned",
              "bend": "Single bend", "hamming": "Hamming"}
DISTANCE_KEYS = ("raw", "aligned", "normalized", "normalized_aligned")
DISTANCE_LABEL = {"raw": "Raw", "aligned": "Aligned", "normalized": "Normalised",
                  "normalized_aligned": "Normalised-Aligned"}
SEED_STRIDE = 1000  # sampler i, replicate k -> seed 1000 i + k: every minimizer starts from its own init


def pair_label(pair: tuple[str, str]) -> str:
    return f"{LABEL[pair[0]]}-{LABEL[pair[1]]}"


def pair_type(a: str, b: str) -> tuple[str, str]:
    """The pair type of samplers a and b in the paper's order (RSGD before SGD before ADV)."""
    return tuple(sorted((a, b), key=SAMPLERS.index))  # type: ignore[return-value]


@dataclass
class Setting:
    """One architecture on one data set; every sampler trains ``seeds`` minimizers."""

    key: str
    title: str
    dataset: str
    architecture: dict[str, Any]
    dataset_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    seeds: int = 2
    sampler_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra train params per sampler
    sigmas: list[float] = field(default_factory=list)  # flatness noise levels
    draws: int = 10  # flatness noise draws per sigma
    hessian: dict[str, Any] = field(default_factory=lambda: {"k": 1, "iterations": 100, "probes": 20, "samples": 500})
    points: int = 11  # points along each path
    pairs_per_type: int | None = None  # paths for this many pairs of each type (None: every pair)
    bend_pairs_per_type: int = 1  # single-bend paths for this many pairs of each type in bend_types
    bend_types: list[tuple[str, str]] | None = None  # None: every pair type

    def train_params(self, sampler: str, seed: int, scale: str) -> dict[str, Any]:
        arch = self.architecture["kind"]
        return {"architecture": copy.deepcopy(self.architecture), "dataset": self.dataset,
                "dataset_options": dict(self.dataset_options), "optimizer": sampler, "epochs": self.epochs,
                "seed": seed, "name": f"reproduce-{self.key}-{sampler}-s{seed}",
                "tags": ["reproduce", scale, sampler, self.dataset, arch],
                **self.sampler_params.get(sampler, {})}


@dataclass
class BinarySetting:
    """Committee machines of several widths on HMM data, ``seeds`` minimizers per width (one sampler)."""

    key: str
    widths: list[int]
    dataset_options: dict[str, Any]
    seeds: int = 2
    epochs: int = 100
    optimizer: str = "sgd"
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    points: int = 11
    orders: int = 5

    def train_params(self, width: int, seed: int, scale: str) -> dict[str, Any]:
        return {"architecture": {"kind": "committee", "hidden": width}, "dataset": "hmm",
                "dataset_options": dict(self.dataset_options), "optimizer": self.optimizer, "epochs": self.epochs,
                "seed": seed, "name": f"reproduce-{self.key}-K{width}-s{seed}",
                "tags": ["reproduce", scale, self.optimizer, "hmm", "committee"], **self.optimizer_params}


@dataclass
class Scale:
    name: str
    settings: list[Setting]  # candidates: a setting whose data set is not available is reported, not run
    binary: BinarySetting | None


def _sigmas(largest: float, n: int = 10) -> list[float]:
    return [round(largest * (i + 1) / n, 6) for i in range(n)]


def _adv(epochs: int) -> dict[str, Any]:
    return {"pretrain_epochs": epochs}


# The committee machine trains BinaryNet-style (latent weights in [-1, 1]): SGD with the paper's
# Nesterov momentum but a larger step, else the latent weights barely move [ours].
_COMMITTEE_SGD = {"lr": 0.5}


def architecture_title(spec: dict[str, Any]) -> str:
    """A spec in a few words: its kind and parameters ("resnet (depth 20, width 1)"; a graph by its layers)."""
    parts = [f"{len(v)} layers" if k == "layers" and isinstance(v, list) else f"{k} {v}"
             for k, v in spec.items() if k != "kind"]
    return f"{spec.get('kind')} ({', '.join(parts)})" if parts else str(spec.get("kind"))


def _own_network(scale: Scale, architecture: dict[str, Any] | None, dataset: str | None) -> None:
    """``scale``'s settings run on ``architecture`` and / or ``dataset`` instead of the paper's (module docstring)."""
    if architecture is not None and (not isinstance(architecture, dict) or not isinstance(architecture.get("kind"), str)):
        raise ValueError(f"an architecture is a JSON object with a 'kind', got {architecture!r}")
    chosen = [s for s in scale.settings if dataset is None or s.dataset == dataset]
    if not chosen:  # the first setting's schedule on that data set, with its default sizes
        chosen = [dataclasses.replace(scale.settings[0], dataset=str(dataset), dataset_options={})]
    for s in chosen:
        if architecture is not None:
            s.architecture = copy.deepcopy(architecture)
        s.key = f"{s.architecture['kind']}-{s.dataset}"
        s.title = f"{architecture_title(s.architecture)} on {s.dataset}" + (
            f" ({s.dataset_options['n_train']} training inputs)" if "n_train" in s.dataset_options else "")
    scale.settings = chosen


def get_scale(name: str, seeds: int | None = None, architecture: dict[str, Any] | None = None,
              dataset: str | None = None) -> Scale:
    """The plan of scale ``name``; ``seeds`` (minimizers per sampler / per width) overrides the default;
    ``architecture`` and ``dataset``: your own network and data (module docstring)."""
    if name == "tiny":
        mlp = Setting(key="mlp-digits", title="MLP (16) on digits", dataset="digits",
                      architecture={"kind": "mlp", "hidden": [16]}, epochs=3, seeds=2,
                      sampler_params={"adv": _adv(2), "rsgd": {"replicas": 3}}, sigmas=[0.25, 0.5], draws=3,
                      points=5, pairs_per_type=1, bend_pairs_per_type=1,
                      bend_types=[("rsgd", "sgd"), ("adv", "adv")],
                      hessian={"k": 1, "iterations": 100, "probes": 5, "samples": 200})  # seconds, for the tests
        binary = BinarySetting(key="committee-hmm", widths=[3, 9],
                               dataset_options={"D": 40, "N": 60, "n_train": 120, "n_test": 200, "seed": 0},
                               seeds=2, epochs=3, optimizer_params=_COMMITTEE_SGD, points=5, orders=2)
        scale = Scale("tiny", [mlp], binary)
    elif name == "small":
        settings = [Setting(key="mlp-digits", title="MLP (128, 128) on digits", dataset="digits",
                            architecture={"kind": "mlp", "hidden": [128, 128]}, epochs=200, seeds=4,
                            sampler_params={"adv": _adv(200)}, sigmas=_sigmas(0.5), draws=100, points=21)]
        for ds, title in (("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")):
            settings.append(Setting(key=f"mlp-{ds}", title=f"MLP (128, 128) on {title} (10000 training images)",
                                    dataset=ds, architecture={"kind": "mlp", "hidden": [128, 128]},
                                    dataset_options={"n_train": 10000, "seed": 0}, epochs=60, seeds=3,
                                    sampler_params={"adv": _adv(60)}, sigmas=_sigmas(0.5), draws=50, points=21))
        binary = BinarySetting(key="committee-hmm", widths=[11, 51, 101], dataset_options={"n_test": 2000},
                               seeds=3, epochs=100, optimizer_params=_COMMITTEE_SGD, points=21, orders=5)
        scale = Scale("small", settings, binary)
    elif name == "full":
        settings = [Setting(key="mlp-digits", title="MLP (128, 128) on digits", dataset="digits",
                            architecture={"kind": "mlp", "hidden": [128, 128]}, epochs=300, seeds=5,
                            sampler_params={"adv": _adv(300)}, sigmas=_sigmas(0.5), draws=100, points=25,
                            bend_pairs_per_type=2)]
        for ds, title in (("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")):
            settings.append(Setting(key=f"mlp-{ds}", title=f"MLP (512, 512) on {title}", dataset=ds,
                                    architecture={"kind": "mlp", "hidden": [512, 512]}, epochs=300, seeds=5,
                                    sampler_params={"adv": _adv(300)}, sigmas=_sigmas(0.5), draws=100, points=25,
                                    bend_pairs_per_type=2))
            settings.append(Setting(key=f"lenet-{ds}", title=f"LeNet on {title}", dataset=ds,
                                    architecture={"kind": "lenet"}, epochs=300, seeds=5,
                                    sampler_params={"adv": _adv(300)}, sigmas=_sigmas(0.25), draws=100, points=25,
                                    bend_pairs_per_type=2))
        binary = BinarySetting(key="committee-hmm", widths=[11, 51, 101, 201], dataset_options={}, seeds=5,
                               epochs=300, optimizer_params=_COMMITTEE_SGD, points=25, orders=10)
        scale = Scale("full", settings, binary)
    else:
        raise ValueError(f"unknown scale {name!r}; known: tiny, small, full")
    if architecture is not None or dataset is not None:
        _own_network(scale, architecture, dataset)
    if seeds is not None:
        if not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"--seeds must be a positive integer, got {seeds!r}")
        for s in scale.settings:
            s.seeds = seeds
        if scale.binary is not None:
            scale.binary.seeds = seeds
    return scale


# ---- the paper's numbers (docs/science.md section 7; read from its figures, approximate) ------------------

# test error (%), RSGD / SGD / ADV, by (architecture kind, data set)
PAPER_TEST_ERROR: dict[tuple[str, str], tuple[float, float, float]] = {
    ("mlp", "fashion_mnist"): (9.5, 9.9, 11.3),
    ("mlp", "cifar10"): (43.0, 47.0, 51.0),
    ("lenet", "mnist"): (0.7, 0.7, 1.5),
    ("lenet", "fashion_mnist"): (7.7, 8.0, 12.1),
    ("lenet", "cifar10"): (23.0, 28.0, 46.0),
    ("vgg", "cifar10"): (12.0, 14.0, 22.0),
}
PAPER_TEST_ERROR_TEXT = ("Test error (%), RSGD / SGD / ADV: MLP Fashion-MNIST 9.5 / 9.9 / 11.3; MLP CIFAR-10 "
                         "43 / 47 / 51; LeNet MNIST 0.7 / 0.7 / 1.5; LeNet Fashion-MNIST 7.7 / 8.0 / 12.1; "
                         "LeNet CIFAR-10 23 / 28 / 46; VGG16 CIFAR-10 12 / 14 / 22")

# geodesic-aligned barriers (max train error, %), MLP on MNIST: about 0 without ADV, ADV-ADV about 17
PAPER_BARRIER_MLP_MNIST = {("rsgd", "rsgd"): 0.0, ("rsgd", "sgd"): 0.0, ("sgd", "sgd"): 0.0,
                           ("rsgd", "adv"): None, ("sgd", "adv"): None, ("adv", "adv"): 17.0}

# per-parameter distances, MLP on MNIST, normalised and aligned; normalised unaligned about 0.055 for all
PAPER_DISTANCE_MLP_MNIST = {("rsgd", "rsgd"): 0.041, ("rsgd", "sgd"): 0.047, ("sgd", "sgd"): 0.049,
                            ("rsgd", "adv"): 0.051, ("sgd", "adv"): 0.051, ("adv", "adv"): 0.051}
PAPER_DISTANCE_UNALIGNED = 0.055

# barrier (max train error, %) along linear vs aligned paths: LeNet Fashion-MNIST, RSGD-RSGD
PAPER_ALIGNMENT_BARRIER = {"linear": 48.0, "aligned": 7.5}  # "7-8 once aligned"

BEND_TOLERANCE = 1.0  # percentage points of barrier excess below which a bend barrier counts as "about 0" [ours]
