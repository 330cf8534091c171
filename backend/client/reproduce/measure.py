"""Numbers with provenance: every measured number in the summary names the jobs (and the result keys) it
was read from, so that anyone can fetch those jobs and check it.

A *measure* is a dict: "mean", "std" (sample standard deviation, 0 for one value), "n", "min", "max",
"unit", "factor" and "items": [{"job": id, "key": "delta_mean[9]", "value": factor * result[key]}],
"sources": the job ids. A *correlation* is {"kind": "spearman", "value", "n", "x": measure, "y": measure},
x and y item by item the same networks.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[-?\d+\])*)$")


def extract(result: dict[str, Any], key: str) -> Any:
    """``result`` read at ``key``: dotted names with optional list indices, e.g. "distances.raw", "delta_mean[9]"."""
    value: Any = result
    for part in key.split("."):
        m = _PART.match(part)
        if m is None:
            raise KeyError(f"bad key {key!r}")
        value = value[m.group(1)]
        for index in re.findall(r"\[(-?\d+)\]", m.group(2)):
            value = value[int(index)]
    return value


def measure(items: Iterable[tuple[dict[str, Any], str]], factor: float = 1.0, unit: str = "") -> dict[str, Any]:
    """A measure of (job, key) pairs: the value of each is factor * job["result"][key]."""
    rows = []
    for job, key in items:
        raw = extract(job["result"], key)
        if raw is None:
            continue
        rows.append({"job": job["id"], "key": key, "value": factor * float(raw)})
    values = [r["value"] for r in rows]
    n = len(values)
    mean = sum(values) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else (0.0 if n else None)
    return {"mean": mean, "std": std, "n": n, "min": min(values) if n else None, "max": max(values) if n else None,
            "unit": unit, "factor": factor, "items": rows, "sources": sorted({r["job"] for r in rows})}


def ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's of the ranks); None when undefined (n < 3 or a constant)."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def correlation(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    """Spearman's correlation of two measures taken item by item over the same networks."""
    rho = spearman([r["value"] for r in x["items"]], [r["value"] for r in y["items"]])
    return {"kind": "spearman", "value": rho, "n": x["n"], "x": x, "y": y,
            "sources": sorted(set(x["sources"]) | set(y["sources"]))}


def fmt(m: dict[str, Any] | None, digits: int = 2) -> str:
    """"mean ± std unit (n=...)", or "-" without values."""
    if not m or not m.get("n"):
        return "-"
    unit = m.get("unit") or ""
    unit = unit.split(" (")[0]
    sep = "" if unit == "%" else " "
    text = f"{m['mean']:.{digits}f}"
    if m["n"] > 1:
        text += f" ± {m['std']:.{digits}f}"
    return f"{text}{sep}{unit}".strip() + f" (n={m['n']})"


def mean_of(m: dict[str, Any] | None) -> float | None:
    return m["mean"] if m and m.get("n") else None
