"""Train the demo's networks and write them into this package: ``python -m backend.demo.make``.

Each run of ``backend.demo.RUNS`` is trained exactly as a train job trains it (``workers.glue.runners.train_piece``:
the job's parameters normalised by ``train.normalize_params``, the initial weights from
``train.initial_model``, then ``train.train``), with one torch thread, so the same command writes the same
files twice. Then it prints what the dashboard will show on them (flatness per sampler, Spearman rho of
flatness against test error, geodesic barriers per pair type), so a rebuilt set can be checked at once.
Takes about a minute on one CPU core.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from datetime import datetime, timezone

import torch

from backend.demo import EPOCHS, MANIFEST, NETWORKS, RUNS, history_columns
from backend.store import serialize
from workers.landscape import SCIENCE_VERSION, evaluate, flatness, nets, paths, train
from workers.landscape import data as datasets

TRAIN_KEYS = ("architecture", "dataset", "dataset_options", "optimizer", "name", "tags", "visibility")


def main() -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    NETWORKS.mkdir(parents=True, exist_ok=True)
    data = datasets.load_dataset("digits")
    entries, states = [], []
    for run in RUNS:
        start = time.perf_counter()
        spec = nets.normalize_spec(run["architecture"])
        opt_params = train.normalize_params(run["optimizer"], {k: v for k, v in run.items() if k not in TRAIN_KEYS})
        model = train.initial_model(spec, data, run["optimizer"], opt_params)
        opt_params["init_seed"] = train.initial_seed(run["optimizer"], opt_params)
        history = train.train(model, data, run["optimizer"], **opt_params)
        train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)
        test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
        if train_err >= 0.01:
            raise SystemExit(f"{run['name']} ended at {100 * train_err:.2f}% training error, not below 1%: "
                             f"raise backend.demo.EPOCHS ({EPOCHS})")
        blob = serialize(model.state_dict())
        name = f"{run['name']}.safetensors"
        (NETWORKS / name).write_bytes(blob)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        entries.append({
            "name": run["name"], "file": name, "sha256": hashlib.sha256(blob).hexdigest(), "architecture": spec,
            "dataset": "digits", "dataset_options": data.info.get("options", {}), "tags": run["tags"],
            "source": {"kind": "trained", "optimizer": run["optimizer"], "params": opt_params, "data": data.info,
                       "pretraining": train.pretraining(history),
                       **train.outcome(model, history, run["optimizer"], opt_params, train_err)},
            "train_error": train_err, "test_error": test_err, "train_loss": train_loss, "test_loss": test_loss,
            "n_params": nets.n_parameters(model), "history": history_columns(history),
        })
        print(f"{run['name']}: train {100 * train_err:.2f}%, test {100 * test_err:.2f}% "
              f"({len(history)} epochs, {time.perf_counter() - start:.1f} s)", flush=True)
    manifest = {"made": {"by": "python -m backend.demo.make", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "torch": torch.__version__, "science_version": SCIENCE_VERSION, "threads": 1, "device": "cpu"},
                "networks": entries}
    MANIFEST.write_text(json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n")
    summarise(entries, states, data)
    return 0


def summarise(entries, states, data) -> None:
    """What the dashboard's flatness, compare and map views will show on the set."""
    spec = entries[0]["architecture"]
    sigmas = flatness.default_sigmas(spec)
    delta = [flatness.flatness_result(spec, data, s, sigmas=sigmas, draws=20)["delta_mean"][-1] for s in states]
    sampler = [e["source"]["optimizer"] for e in entries]
    for name in dict.fromkeys(sampler):
        d = [x for x, o in zip(delta, sampler) if o == name]
        print(f"flatness {name}: delta_E({sigmas[-1]}) {100 * statistics.mean(d):.3f}% (each {[round(100 * x, 3) for x in d]})")
    from scipy.stats import spearmanr

    rho = spearmanr(delta, [e["test_error"] for e in entries]).statistic
    print(f"Spearman rho(flatness, test error) = {rho:.2f}")
    barriers: dict[str, list[float]] = {}
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            r = paths.path_result(spec, data, states[i], states[j], type="geodesic", points=11)
            key = "-".join(sorted((sampler[i], sampler[j])))
            barriers.setdefault(key, []).append(max(r["train_error"]))
    for key, values in barriers.items():
        print(f"geodesic barrier {key}: {100 * statistics.mean(values):.2f}% (max {100 * max(values):.2f}%)")


if __name__ == "__main__":
    sys.exit(main())
