"""Parameter tables and the one validator that reads them (job kinds, data sets, optimizers alike).

A table maps a parameter's name to an entry::

    {"type": "int" | "float" | "bool" | "str" | "list[int]" | "list[float]" | "list[str]" | "object",
     "default": ..., "help": "...",
     "min": ..., "max": ...,           # bounds of the value (of every item, for lists)
     "min_items": ..., "max_items": ...,  # length of a list
     "choices": [...], "max_length": n,  # allowed values, longest value of a "str"
     "nullable": True,                 # null allowed (a null default always is)
     "applies_to": ["real", "binary", "batchnorm"],  # networks the parameter matters for (forms show it)
     "when": {"other": [values]},      # the parameter matters only when an earlier one has one of these values
     "must": "words"}                  # what a value must be, said in error messages instead of the bounds

``validate_params`` returns the values with every default filled in and, in the table's order, only the
parameters that apply (a ``when`` that does not hold drops the parameter, given or not), so that two
requests meaning the same thing normalise to the same dict.
"""
from __future__ import annotations

import math
from typing import Any

TYPES = ("int", "float", "bool", "str", "list[int]", "list[float]", "list[str]", "object")
MAX_SEED = 2**31 - 1  # every seed of a job (paths, bends, slices, noise): one bound for the API and the science


def _scalar_ok(kind: str, v: Any, p: dict[str, Any]) -> tuple[bool, Any]:
    if kind == "bool":
        return isinstance(v, bool), v
    if kind == "object":  # (its own table checks the inside: an architecture, a data set's options)
        return isinstance(v, dict), v
    if kind == "str":
        return isinstance(v, str) and v in p.get("choices", [v]) and len(v) <= p.get("max_length", len(v)), v
    if kind == "int":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:  # float
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        v = float(v) if ok else v
    lo, hi = p.get("min"), p.get("max")
    return ok and (lo is None or v >= lo) and (hi is None or v <= hi), v


def describe(p: dict[str, Any]) -> str:
    """What a value of entry ``p`` must be, in words."""
    if "must" in p:
        return p["must"]
    kind = p["type"]
    item = kind[5:-1] if kind.startswith("list[") else kind
    need = {"bool": "true or false", "int": "an integer", "float": "a number", "object": "a JSON object",
            "str": f"one of {p['choices']}" if "choices" in p else "a string"}[item]
    if item == "str" and "max_length" in p:
        need += f" of at most {p['max_length']} characters"
    lo, hi = p.get("min"), p.get("max")
    if item in ("int", "float") and (lo is not None or hi is not None):
        need += f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if kind.startswith("list["):
        lo_n, hi_n = p.get("min_items", 1), p.get("max_items")
        count = f"{lo_n} to {hi_n}" if hi_n is not None else f"at least {lo_n}"
        need = f"a list of {count} values, each {need}"
    if p.get("nullable"):
        need += " or null"
    return need


def check_value(key: str, p: dict[str, Any], v: Any, what: str, error: type[Exception]) -> Any:
    """``v`` checked against entry ``p`` (integral floats become ints, ints floats); raises ``error``."""
    if v is None and (p.get("nullable") or p.get("default", 0) is None):
        return None
    kind = p["type"]
    if kind.startswith("list["):
        ok = isinstance(v, list) and p.get("min_items", 1) <= len(v) <= p.get("max_items", len(v))
        items = []
        for item in v if ok else []:
            good, item = _scalar_ok(kind[5:-1], item, p)
            ok = ok and good
            items.append(item)
        v = items if ok else v
    else:
        ok, v = _scalar_ok(kind, v, p)
    if not ok:
        raise error(f"parameter '{key}' of {what} must be {describe(p)}, got {v!r}")
    return v


def validate_params(schema: dict[str, dict[str, Any]], values: Any, what: str, error: type[Exception]) -> dict[str, Any]:
    """Check ``values`` against a parameter table and return them with every default filled in.

    Raises ``error`` with a message naming the parameter and what it must be. Integral floats are
    accepted for "int" (JSON clients often send 5.0) and ints for "float".
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise error(f"the parameters of {what} must be an object, got {type(values).__name__}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise error(f"unknown parameter(s) {unknown} for {what}; allowed: {sorted(schema)}")
    out: dict[str, Any] = {}
    for key, p in schema.items():
        if any(out.get(other) not in allowed for other, allowed in (p.get("when") or {}).items()):
            continue
        out[key] = check_value(key, p, values.get(key, p["default"]), what, error)
    return out


def public(schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A table as the API serves it (JSON-ready copies)."""
    return {key: {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()} for key, p in schema.items()}
