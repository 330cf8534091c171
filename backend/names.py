"""A checkpoint's own tensor names: the rename maps an upload accepts, and the one it proposes.

An upload's ``meta`` may carry ``keys`` (exact names: ``{"linear.weight": "fc.weight"}``) and ``rename``
(substrings, replaced wherever they occur, in the order given: ``{"shortcut.": "downsample.", "linear.":
"fc."}`` turns ``layer2.0.shortcut.0.weight`` into ``layer2.0.downsample.0.weight``); ``keys`` first.
When the names still do not fit the architecture but the file's tensors, in the file's order, have the
architecture's shapes one to one in its state_dict order, the refusal *proposes* the mapping (``propose``):
a ``rename`` of substrings when one reproduces every pair exactly, else ``keys``. The service never applies
a proposal by itself: the caller sends it back (the client's ``accept_proposed``, the CLI's
``--accept-proposed-names``). A ``.pt`` file keeps its state_dict's order; a safetensors file keeps none of
its own, so the Python client writes the order into its metadata (``store.ORDER_KEY``).
"""
from __future__ import annotations

from typing import Sequence


class NamesError(ValueError):
    """A rename map that cannot be applied (two tensors would get one name); the message says which."""


def renamed(names: Sequence[str], keys: dict[str, str] | None, rename: dict[str, str] | None) -> dict[str, str]:
    """{old name: new name} for every name of the file, ``keys`` then ``rename`` applied."""
    out = {}
    for name in names:
        new = (keys or {}).get(name, name)
        for old, replacement in (rename or {}).items():
            if old:
                new = new.replace(old, replacement)
        out[name] = new
    seen: dict[str, str] = {}
    for old, new in out.items():
        if new in seen:
            raise NamesError(f"the rename map gives two tensors the name {new[:200]!r}: {seen[new][:200]!r} and {old[:200]!r}")
        seen[new] = old
    return out


def _rule(got: str, want: str) -> tuple[str, str] | None:
    """The substring replacement that turns ``got`` into ``want``: the differing middle of their dotted names,
    with its dot (``layer2.0.shortcut.0.weight`` -> ``layer2.0.downsample.0.weight``: ``shortcut.`` ->
    ``downsample.``); None when one is the other with parts inserted."""
    g, w = got.split("."), want.split(".")
    p = 0
    while p < min(len(g), len(w)) and g[p] == w[p]:
        p += 1
    s = 0
    while s < min(len(g), len(w)) - p and g[-1 - s] == w[-1 - s]:
        s += 1
    mid_g, mid_w = g[p : len(g) - s], w[p : len(w) - s]
    if not mid_g or not mid_w:
        return None
    if s:
        return ".".join(mid_g) + ".", ".".join(mid_w) + "."
    return "." + ".".join(mid_g) if p else ".".join(mid_g), "." + ".".join(mid_w) if p else ".".join(mid_w)


def propose(got: Sequence[tuple[str, tuple[int, ...]]], expected: Sequence[tuple[str, tuple[int, ...]]]) -> dict | None:
    """The mapping of the file's names onto the architecture's when their shapes match one to one in order
    (``got``: the file's (name, shape) in its order; ``expected``: the architecture's, in its state_dict order),
    as ``{"rename": {...}}`` (substrings, when they reproduce every pair and nothing else) or ``{"keys": {...}}``;
    None when the shapes do not match in order or nothing is to be renamed."""
    if len(got) != len(expected) or any(tuple(a[1]) != tuple(b[1]) for a, b in zip(got, expected)):
        return None
    pairs = [(a[0], b[0]) for a, b in zip(got, expected) if a[0] != b[0]]
    if not pairs:
        return None
    rules: dict[str, str] = {}
    for old, new in pairs:
        rule = _rule(old, new)
        if rule is None or rules.get(rule[0], rule[1]) != rule[1]:
            rules = {}
            break
        rules[rule[0]] = rule[1]
    if rules:
        try:
            mapping = renamed([n for n, _ in got], None, rules)
        except NamesError:
            mapping = None
        if mapping is not None and [mapping[n] for n, _ in got] == [n for n, _ in expected]:
            return {"rename": rules}
    return {"keys": dict(pairs)}
