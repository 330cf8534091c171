"""Peak memory of a flatness job against its number of draws (issue 26): each run in a fresh child process,
its peak resident memory (VmHWM) less its own baseline (measured in the same child after the imports, the
data and the model), on a 16-unit MLP on digits, 11 noise levels. Prints the growth from the smallest run
as a ratio; quadratic memory shows as ratio ~ (draws / smallest)^2, linear or flat as ~ 1.

    PYTHONPATH=. python benchmarks/flatness_memory.py [--budget-mib M] [draws ...]
Run it with PYTHONPATH pointing at another checkout to measure that code in the same way.
"""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from workers.landscape import data, flatness, nets
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
ds = data.load_dataset("digits", {})
spec = {"kind": "mlp", "hidden": [16]}
state = nets.build(spec, ds.input_shape, ds.n_classes).state_dict()
flatness.flatness_result(spec, ds, state, draws=2, device="cpu")  # warm
base = status("VmRSS")
try:  # a budget of the baseline plus BUDGET_MIB (code without a memory budget ignores it)
    from workers.landscape import cost
    cost.set_memory_budget(base + int(float(sys.argv[2]) * 2**20) if float(sys.argv[2]) > 0 else None)
except ImportError:
    pass
open("/proc/self/clear_refs", "w").write("5")
flatness.flatness_result(spec, ds, state, draws=int(sys.argv[1]), device="cpu")
print(json.dumps({"baseline": base, "peak_above_baseline": status("VmHWM") - base}))
"""


BUDGET_MIB = 0.0  # --budget-mib: working memory above the baseline (0: the default budget)


def run(draws: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(draws), str(BUDGET_MIB)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global BUDGET_MIB
    args = sys.argv[1:]
    if args[:1] == ["--budget-mib"]:
        BUDGET_MIB, args = float(args[1]), args[2:]
    counts = [int(a) for a in args] or [250, 500, 1000]
    first = None
    for d in counts:
        r = run(d)
        grow = r["peak_above_baseline"]
        first = first or (d, max(grow, 1))
        print(f"draws {d:6d}: peak above baseline {grow / 2**20:8.1f} MiB (baseline {r['baseline'] / 2**20:.0f} MiB), "
              f"ratio to draws {first[0]}: {grow / first[1]:.2f} (quadratic would be {(d / first[0]) ** 2:.1f})")


if __name__ == "__main__":
    main()
