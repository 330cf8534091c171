"""Per-sample FLOPs and activation bytes from a spec alone (workers/landscape/cost.py): exact hand counts on
small MLP and conv cases, and the real memory of a small graph measured in a child process."""
import json
import os
import subprocess
import sys

import pytest

from workers.landscape import cost


def _padded_graph(n: int) -> dict:
    """The attack of issue 26: n x (1x1 conv, 8 channels, padding 5; relu), average pool, linear."""
    body = [x for _ in range(n) for x in ({"type": "conv", "out": 8, "kernel": 1, "padding": 5}, {"type": "relu"})]
    return {"kind": "graph", "layers": [*body, {"type": "adaptive_avgpool", "size": 1}, {"type": "flatten"},
                                        {"type": "linear"}]}


def test_mlp_hand_count():
    p = cost.profile({"kind": "mlp", "hidden": [32]}, (64,), 10)
    assert p.flops == 2 * (64 * 32 + 32 * 10)  # a multiply-add is 2 FLOPs; biases are not counted
    assert p.params == 64 * 32 + 32 + 32 * 10 + 10
    assert p.forward_bytes == 4 * (32 + 32)  # the first layer's output and the ReLU's, float32
    # kept for backward: the input (first linear) and the ReLU's output (ReLU and second linear), plus one
    # forward peak for the gradients of activations
    assert p.train_bytes == 4 * (64 + 32) + p.forward_bytes
    assert p.train_fixed == p.params * 4  # parameter gradients do not grow with the batch


def test_conv_hand_count():
    spec = {"kind": "graph", "layers": [{"type": "conv", "out": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
                                        {"type": "flatten"}, {"type": "linear"}]}
    p = cost.profile(spec, (1, 8, 8), 10)
    assert p.flops == 2 * (4 * 8 * 8 * 9) + 2 * (4 * 64 * 10)
    assert p.forward_bytes == 4 * (2 * 4 * 64)  # conv output and ReLU output live together
    assert p.train_bytes == 4 * (64 + 4 * 64) + p.forward_bytes  # the input and the ReLU output are kept


def test_padded_graph_grows_by_ten_pixels_a_layer():
    p = cost.profile(_padded_graph(30), (1, 8, 8), 10)
    assert p.params == 2194
    side = [8 + 10 * i for i in range(1, 31)]
    assert p.flops == sum(2 * 8 * (1 if i == 0 else 8) * s * s for i, s in enumerate(side)) + 2 * 8 * 10
    assert p.forward_bytes == 4 * 2 * 8 * side[-1] ** 2  # the last conv's output and its ReLU's
    # every conv keeps its input, every ReLU its output (the next conv's input), the linear its pooled input
    kept = 4 * (64 + sum(8 * s * s for s in side) + 8)
    assert p.train_bytes == kept + p.forward_bytes


def test_profile_is_cached_by_normalised_spec():
    a = cost.profile({"kind": "mlp", "hidden": [16]}, (64,), 10)
    b = cost.profile({"kind": "mlp", "hidden": [16], "bias": True, "batchnorm": False}, (64,), 10)
    assert a is b


def test_batchnorm_and_residual_networks_profile():
    p = cost.profile({"kind": "resnet", "depth": 8, "width": 0.25}, (3, 32, 32), 10)
    assert p.flops > 0 and p.forward_bytes > 0 and p.train_bytes > p.forward_bytes
    # a residual block holds its input while the branch runs: more than the branch's in+out
    assert p.forward_bytes >= 4 * 3 * 4 * 32 * 32


_CHILD = r"""
import json, sys, gc, torch
torch.set_num_threads(1)
from workers.landscape import cost, nets
spec, n, mode = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
p = cost.profile(spec, (1, 8, 8), 10)
m = nets.build(spec, (1, 8, 8), 10).to(memory_format=torch.channels_last)
x = torch.randn(n, 1, 8, 8).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    m(x[:2])
m(x[:2]).sum().backward()
gc.collect()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark restarts from here
if mode == "eval":
    m.eval()
    with torch.no_grad():
        out = m(x)
    est = p.forward_bytes * n
else:
    m.train()
    m(x).sum().backward()
    est = p.train_bytes * n
print(json.dumps({"measured": status("VmHWM") - base, "estimated": est}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset the high-water mark")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_estimate_matches_real_memory_of_a_small_graph(mode):
    """A 10-layer padded graph (88 px maps at the end) on 128 inputs: the real peak resident memory above the
    process's baseline is the estimate within a factor (eval: one forward peak, the engine's channels_last layout;
    train: the activations kept for backward and the activation gradients)."""
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(_padded_graph(10)), "128", mode],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = r["measured"] / r["estimated"]
    assert r["estimated"] > 50 * 2**20  # big enough to stand out of the allocator's noise
    assert (0.7 < ratio < cost.EVAL_FACTOR) if mode == "eval" else (0.7 < ratio < 1.5), r


_EVAL_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from workers.landscape import cost, data, evaluate, nets
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
spec = json.loads(sys.argv[1])
ds = data.load_dataset("digits", {})
torch.manual_seed(0)
model = nets.build(spec, ds.input_shape, ds.n_classes)
ref = evaluate.error_and_loss(model, ds.x_train[:40], ds.y_train[:40], batch_size=7)
base = status("VmRSS")
budget = base + int(sys.argv[2]) * 2**20
cost.set_memory_budget(budget)
open("/proc/self/clear_refs", "w").write("5")
err, loss = evaluate.error_and_loss(model, ds.x_train, ds.y_train)  # the default batch: what fits the budget
small = evaluate.error_and_loss(model, ds.x_train[:40], ds.y_train[:40])
print(json.dumps({"budget": budget, "peak": status("VmHWM"), "ref": ref, "small": small,
                  "batch": evaluate.budget_batch(model, ds.input_shape), "n": len(ds.y_train)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset the high-water mark")
def test_a_plain_evaluation_batches_to_the_budget():
    """Issue 26: an upload's evaluate job ran the whole training set as one batch (error_and_loss's 4096), 5.6 GB
    for the padded graph. With a budget of the baseline + 64 MiB, a 10-layer padded graph (1,437 training inputs,
    ~0.75 MB of activations each: ~1 GB as one batch, more in the CPU's conv copies) is evaluated under the budget,
    with the numbers of small batches."""
    out = subprocess.run([sys.executable, "-c", _EVAL_CHILD, json.dumps(_padded_graph(10)), "64"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert 1 <= r["batch"] < r["n"]
    assert r["peak"] <= r["budget"], r
    assert r["small"][0] == r["ref"][0] and r["small"][1] == pytest.approx(r["ref"][1], rel=1e-6)
