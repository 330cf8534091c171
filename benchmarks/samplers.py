"""Flatness vs test error per sampler: does the paper's ordering hold here?

Trains a few minimizers per sampler (RSGD, SGD, ADV) of an MLP on digits (and on MNIST when its
files are in TOROID_DATA_ROOT), measures each one's local energy delta_E(sigma) and test error, and
prints them per sampler with the ordering the paper reports (RSGD flatter than SGD flatter than ADV;
test error following). Runs the science directly, without the service.

    python benchmarks/samplers.py [--seeds 3] [--epochs 60] [--hidden 128,128] [--draws 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.landscape import data as datasets  # noqa: E402
from workers.landscape import evaluate, flatness, nets, train  # noqa: E402

SAMPLERS = ("rsgd", "sgd", "adv")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--sigma", type=float, default=0.5, help="largest sigma of the flatness curve")
    args = p.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    spec = nets.normalize_spec({"kind": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]})
    sigmas = [args.sigma * i / 5 for i in range(6)]
    sets = ["digits"]
    try:
        datasets.load_dataset("mnist", {"n_train": 10000, "n_test": 2000})
        sets.append("mnist")
    except datasets.DatasetError as exc:
        print(f"MNIST not used: {str(exc).splitlines()[0]}")
    summary = []
    for name in sets:
        data = datasets.load_dataset(name, {"n_train": 10000, "n_test": 2000} if name == "mnist" else None)
        rows: dict[str, list[tuple[float, float, float]]] = {s: [] for s in SAMPLERS}
        start = time.perf_counter()
        with tqdm(total=len(SAMPLERS) * args.seeds, desc=f"{name}: train + flatness", unit="net") as bar:
            for sampler in SAMPLERS:
                for seed in range(args.seeds):
                    torch.manual_seed(seed)
                    model = nets.build(spec, data.input_shape, data.n_classes)
                    train.train(model, data, sampler, epochs=args.epochs, seed=seed)
                    train_err, _ = evaluate.error_and_loss(model, data.x_train, data.y_train)
                    test_err, _ = evaluate.error_and_loss(model, data.x_test, data.y_test)
                    f = flatness.flatness_result(spec, data, model.state_dict(), sigmas=sigmas, draws=args.draws,
                                                 seed=seed)
                    rows[sampler].append((f["delta_mean"][-1], test_err, train_err))
                    bar.update()
        print(f"\n{name}: MLP {spec['hidden']}, {args.epochs} epochs, delta_E at sigma={args.sigma} "
              f"({args.draws} draws), {time.perf_counter() - start:.0f} s")
        print(f"{'sampler':<8} {'delta_E mean':>12} {'± std':>8} {'test err %':>10} {'± std':>7} {'train err %':>11}")
        means = {}
        for sampler, values in rows.items():
            d = [v[0] for v in values]
            e = [100 * v[1] for v in values]
            t = [100 * v[2] for v in values]
            sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
            means[sampler] = (statistics.mean(d), statistics.mean(e))
            print(f"{sampler:<8} {statistics.mean(d):>12.4f} {sd(d):>8.4f} {statistics.mean(e):>10.2f} "
                  f"{sd(e):>7.2f} {statistics.mean(t):>11.2f}")
        flat_order = means["rsgd"][0] < means["sgd"][0] < means["adv"][0]
        err_order = means["rsgd"][1] <= means["sgd"][1] <= means["adv"][1]
        summary.append(f"{name}: flatness RSGD<SGD<ADV {'holds' if flat_order else 'does NOT hold'}, "
                       f"test error follows {'yes' if err_order else 'no'}")
    print("summary: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
