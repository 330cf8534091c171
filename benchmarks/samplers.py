"""Flatness vs test error per sampler: does the paper's ordering hold here?

Trains ``--seeds`` minimizers per sampler (each from its own initialisation: ``train.initial_model``) of the
reproduction's MLP (128, 128) on digits (and on a 10000-image MNIST subset when its files are in
TOROID_DATA_ROOT), measures each one's local energy delta_E(sigma) on a grid of sigmas and its test
error, and prints per sampler the mean and the standard error of the mean (SEM) at every sigma, then
whether RSGD < SGD < ADV holds by more than the combined SEM (sqrt(SEM_a^2 + SEM_b^2)) at the largest
sigma and on how many sigmas of the curve. Runs the science directly, without the service; one torch
thread and seeded everywhere, so the same command prints the same numbers twice.

    python benchmarks/samplers.py [--seeds 4] [--epochs 200] [--draws 100] [--samplers rsgd,sgd,adv]
        [--set rsgd.gamma0=0.01 --set rsgd.gamma1=0.5 ...] [--target-error 0.01] [--json out.json]

``--set SAMPLER.PARAM=VALUE`` overrides a sampler's default (a sweep runs the script once per setting);
a sampler may be listed under another name with ``--samplers rsgd_shared=rsgd`` and overridden as
``--set rsgd_shared.replica_init=shared``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.landscape import data as datasets  # noqa: E402
from workers.landscape import evaluate, flatness, nets, train  # noqa: E402


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def sem(xs: list[float]) -> float:
    return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--sigma", type=float, default=0.5, help="largest sigma of the flatness curve")
    p.add_argument("--samplers", default="rsgd,sgd,adv", help="names, or label=optimizer")
    p.add_argument("--set", action="append", default=[], metavar="LABEL.PARAM=VALUE")
    p.add_argument("--target-error", type=float, default=None, help="stop each run at this training error")
    p.add_argument("--mnist", action="store_true", help="also MNIST (10000 training images) when available")
    p.add_argument("--json", default=None, help="write every measured number here")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    spec = nets.normalize_spec({"kind": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]})
    sigmas = [round(args.sigma * (i + 1) / 10, 6) for i in range(10)]
    samplers = dict(s.split("=", 1) if "=" in s else (s, s) for s in args.samplers.split(","))
    overrides: dict[str, dict] = {label: {} for label in samplers}
    for item in args.set:
        key, value = item.split("=", 1)
        label, param = key.split(".", 1)
        overrides[label][param] = _value(value)
    sets = ["digits"]
    if args.mnist:
        try:
            datasets.load_dataset("mnist", {"n_train": 10000, "n_test": 2000})
            sets.append("mnist")
        except datasets.DatasetError as exc:
            print(f"MNIST not used: {str(exc).splitlines()[0]}")
    print(f"config: MLP {spec['hidden']}, {args.epochs} epochs, target_error {args.target_error}, {args.seeds} seeds "
          f"per sampler (independent initialisations), {args.draws} draws per sigma, torch {torch.__version__}, "
          f"1 thread, CPU; overrides {overrides}", flush=True)
    report: dict = {"config": vars(args), "sets": {}}
    for name in sets:
        data = datasets.load_dataset(name, {"n_train": 10000, "n_test": 2000} if name == "mnist" else None)
        rows: dict[str, list[dict]] = {label: [] for label in samplers}
        start = time.perf_counter()
        for label, optimizer in samplers.items():
            for seed in range(args.seeds):
                params = {"epochs": args.epochs, "seed": seed, "target_error": args.target_error, **overrides[label]}
                model = train.initial_model(spec, data, optimizer, params)
                history = train.train(model, data, optimizer, **params)
                train_err, _ = evaluate.error_and_loss(model, data.x_train, data.y_train)
                test_err, _ = evaluate.error_and_loss(model, data.x_test, data.y_test)
                f = flatness.flatness_result(spec, data, model.state_dict(), sigmas=sigmas, draws=args.draws, seed=seed)
                row = {"seed": seed, "init_seed": train.initial_seed(optimizer, params), "delta": f["delta_mean"],
                       "test_error": test_err, "train_error": train_err, "epochs_run": len(history)}
                if optimizer == "rsgd":
                    row["replica_distance"] = [h["replica_distance"] for h in history]
                    row["gamma"] = [h["gamma"] for h in history]
                pre = train.pretraining(history)
                if pre:
                    row["pretraining"] = pre
                rows[label].append(row)
                extra = ""
                if optimizer == "rsgd":
                    d = row["replica_distance"]
                    extra = (f" replica distance epoch 1 {d[0]:.3f}, max {max(d):.3f}, last {d[-1]:.2e} "
                             f"(gamma {row['gamma'][-1]:.3g})")
                if pre:
                    extra = f" pretraining {pre['epochs']} epochs to {100 * pre['error']:.1f}%"
                print(f"  {label} seed {seed}: dE({args.sigma}) {100 * f['delta_mean'][-1]:.3f}%, test "
                      f"{100 * test_err:.2f}%, train {100 * train_err:.2f}%{extra}", flush=True)
        print(f"\n{name}: {time.perf_counter() - start:.0f} s")
        print("local energy delta_E (%) mean ± SEM per sigma")
        print("sigma    " + "".join(f"{label:>18}" for label in samplers))
        curve = {label: [[r["delta"][i] for r in rs] for i in range(len(sigmas))] for label, rs in rows.items()}
        for i, sigma in enumerate(sigmas):
            print(f"{sigma:<8} " + "".join(f"{100 * statistics.mean(curve[l][i]):>10.3f} ± {100 * sem(curve[l][i]):<5.3f}"
                                           for l in samplers))
        for label, rs in rows.items():
            e = [100 * r["test_error"] for r in rs]
            t = [100 * r["train_error"] for r in rs]
            print(f"{label:<14} test error {statistics.mean(e):.2f} ± {sem(e):.2f}%, train error "
                  f"{statistics.mean(t):.2f}% (max {max(t):.2f}%)")

        def below(a: str, b: str, i: int) -> bool:  # a flatter than b by more than the combined SEM
            xa, xb = curve[a][i], curve[b][i]
            return statistics.mean(xb) - statistics.mean(xa) > math.hypot(sem(xa), sem(xb))

        verdicts = {}
        labels = list(samplers)
        pairs = list(zip(labels, labels[1:]))
        if "sgd" in samplers and "adv" in samplers:  # the paper's two comparisons, every other sampler against SGD
            pairs = [(label, "sgd") for label in labels if label not in ("sgd", "adv")] + [("sgd", "adv")]
        for a, b in pairs:
            top = below(a, b, len(sigmas) - 1)
            count = sum(below(a, b, i) for i in range(len(sigmas)))
            verdicts[f"{a}<{b}"] = {"largest_sigma": top, "sigmas": count}
            print(f"{a} flatter than {b} by more than the combined SEM: at sigma={sigmas[-1]} "
                  f"{'yes' if top else 'no'}; on {count}/{len(sigmas)} sigmas")
        report["sets"][name] = {"sigmas": sigmas, "rows": rows, "verdicts": verdicts}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
