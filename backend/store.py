"""Content-addressed weight files (safetensors). An upload is never unpickled.

A state dict is serialised with safetensors (keys sorted, tensors contiguous, on the CPU); its
SHA-256 is its address: ``<store>/<h[:2]>/<h>.safetensors``. Equal weights are stored once.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
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
    """The state dict stored under ``h``. Its keys come in no fixed order (safetensors hands them out in
    another order on every read): the workers put them in the module's order (workers.glue.runners.Context.state)."""
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


SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                           "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _kind(filename: str) -> str:
    name = (filename or "").lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith((".pt", ".pth")):
        return "pt"
    raise UploadError(f"unsupported weights file {filename!r}: use .safetensors, or a .pt/.pth state_dict")


ORDER_KEY = "toroid.order"  # safetensors metadata: a JSON list of the tensors' names in their state_dict's order


def _safetensors_shapes(data: bytes) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (8 bytes of length, then JSON), checked against
    the file's size; no tensor is made."""
    if len(data) < 8:
        raise UploadError("not a valid safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, 100 * 1024 * 1024):
        raise UploadError("not a valid safetensors file (its header is longer than the file)")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError):
        raise UploadError("not a valid safetensors file (its header is not JSON)") from None
    except RecursionError:
        raise UploadError("not a valid safetensors file (its header's JSON is nested too deeply)") from None
    if not isinstance(header, dict):
        raise UploadError("not a valid safetensors file (its header is not a JSON object)")
    shapes, body = {}, len(data) - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            size = SAFETENSORS_DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise UploadError(f"not a valid safetensors file (tensor {name[:100]!r} is described wrongly)") from None
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= body or end - begin != size * math.prod(shape):
            raise UploadError(f"not a valid safetensors file (tensor {name[:100]!r} does not fit the file)")
        shapes[name] = shape
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and isinstance(meta.get(ORDER_KEY), str):  # the writer's order (the Python client's)
        try:
            order = json.loads(meta[ORDER_KEY])
        except ValueError:
            order = None
        if isinstance(order, list) and sorted(map(str, order)) == sorted(shapes) and len(order) == len(shapes):
            shapes = {name: shapes[name] for name in order}
    return shapes


class TooManyBytes(UploadError):
    """A .pt archive whose (uncompressed) records declare more bytes than the architecture's weights take."""


def _check_pt_archive(data: bytes, max_bytes: int) -> None:
    """A .pt file must be the zip archive torch.save writes (since PyTorch 1.6), with every record stored
    uncompressed and their declared sizes together within ``max_bytes``: nothing is ever inflated."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise UploadError("the .pt file is not read with torch.load: a .pt file must be the zip archive torch.save "
                          "writes (PyTorch 1.6 or later; the legacy format is refused): save it with "
                          "torch.save(model.state_dict(), path), or as .safetensors")
    try:
        with zipfile.ZipFile(buffer) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UploadError(f"the .pt archive is damaged ({exc})") from None
    total = 0
    for info in records:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise UploadError(f"record {info.filename[:100]!r} of the .pt archive is compressed; torch.save stores "
                              "records uncompressed (compressed ones are refused): save it again with torch.save, "
                              "or as .safetensors")
        total += info.file_size
    if total > max_bytes:
        raise TooManyBytes(f"the .pt archive's records declare {total} bytes, more than the {max_bytes} bytes this "
                          "architecture's weights can take")


def upload_shapes(filename: str, data: bytes, max_bytes: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors an uploaded file holds, read before any real tensor is made:
    from the safetensors header, or for .pt (checked by ``_check_pt_archive`` first) by loading it onto the
    ``meta`` device. ``max_bytes`` bounds what the file may declare."""
    kind = _kind(filename)
    if not data:
        raise UploadError("the weights file is empty")
    if kind == "safetensors":
        return _safetensors_shapes(data)
    try:
        _check_pt_archive(data, max_bytes)
    except TooManyBytes:
        # more bytes than the architecture takes, usually the file of another architecture: its records are
        # stored uncompressed (checked), so reading the names and shapes onto the meta device inflates nothing,
        # and the caller can say which tensors differ; parse_upload still refuses the surplus
        pass
    obj = _torch_load(data, "meta")
    return {k: tuple(v.shape) for k, v in obj.items()}


def _torch_load(data: bytes, device: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
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
    return obj


def parse_upload(filename: str, data: bytes, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read an uploaded weights file as a flat ``{name: tensor}`` dict.

    ``.safetensors`` is parsed by safetensors (no code can run). ``.pt`` / ``.pth`` must be torch.save's
    zip archive with uncompressed records declaring at most ``max_bytes`` (default: the upload limit)
    and go through ``torch.load(weights_only=True)``, whose restricted unpickler refuses anything but
    tensors and plain containers, so a file with code in it is rejected without running it.
    """
    kind = _kind(filename)
    if not data:
        raise UploadError("the weights file is empty")
    if kind == "safetensors":
        try:
            state = st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise UploadError(f"not a valid safetensors file ({exc})") from None
    else:
        _check_pt_archive(data, get_settings().max_upload_bytes if max_bytes is None else max_bytes)
        state = _torch_load(data, "cpu")
    return {k: v.contiguous() for k, v in state.items()}
