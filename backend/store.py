"""Content-addressed weight files (safetensors). An upload is never unpickled.

A state dict is serialised with safetensors (keys sorted, tensors contiguous, on the CPU); its
SHA-256 is its address: ``<store>/<h[:2]>/<h>.safetensors``. Equal weights are stored once.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import get_settings


class UploadError(ValueError):
    """A weights file that cannot be read as a state dict; the message says why."""


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    ordered = {k: state[k].detach().to("cpu").contiguous() for k in sorted(state)}
    return st_save(ordered)


def weights_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _path(h: str, root: Path | None = None) -> Path:
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError("not a weights hash")  # never let a request build a path
    root = root or get_settings().store_dir
    return root / h[:2] / f"{h}.safetensors"


def put(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """Store ``state``; return (hash, size in bytes). Writing is atomic (temp file + rename)."""
    data = serialize(state)
    h = weights_hash(data)
    path = _path(h)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return h, len(data)


def get(h: str) -> dict[str, torch.Tensor]:
    return st_load(_path(h).read_bytes())


def read_bytes(h: str) -> bytes:
    return _path(h).read_bytes()


def exists(h: str) -> bool:
    try:
        return _path(h).exists()
    except ValueError:
        return False


def remove(h: str) -> None:
    try:
        _path(h).unlink(missing_ok=True)
    except ValueError:
        pass


def parse_upload(filename: str, data: bytes) -> dict[str, torch.Tensor]:
    """Read an uploaded weights file as a flat ``{name: tensor}`` dict.

    ``.safetensors`` is parsed by safetensors (no code can run). ``.pt`` / ``.pth`` go through
    ``torch.load(weights_only=True)``, whose restricted unpickler refuses anything but tensors and
    plain containers, so a file with code in it is rejected without running it.
    """
    name = (filename or "").lower()
    if not data:
        raise UploadError("the weights file is empty")
    if name.endswith(".safetensors"):
        try:
            state = st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise UploadError(f"not a valid safetensors file ({exc})") from None
    elif name.endswith((".pt", ".pth")):
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(exc)).strip()  # torch colours its message for terminals
            first = text.splitlines()[0] if text else type(exc).__name__
            raise UploadError(
                "could not read the .pt file as a plain state_dict with torch.load(weights_only=True): "
                f"{first[:300]}. Save it with torch.save(model.state_dict(), path), or as .safetensors."
            ) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        ):
            raise UploadError("the .pt file does not hold a state_dict (a dict of tensor names to tensors)")
        state = obj
    else:
        raise UploadError(f"unsupported weights file {filename!r}: use .safetensors, or a .pt/.pth state_dict")
    return {k: v.contiguous() for k, v in state.items()}
