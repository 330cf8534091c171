"""Small helpers shared by the tests: build weights, upload them, evaluate independently."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save

from workers.landscape import nets

SPEC = {"kind": "mlp", "hidden": [16]}
DIGITS_SHAPE, DIGITS_CLASSES = (1, 8, 8), 10


def random_state(spec=SPEC, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nets.build(spec, DIGITS_SHAPE, DIGITS_CLASSES).state_dict()


def upload(client, state=None, *, spec=SPEC, name="net", dataset="digits", filename="w.safetensors",
           blob: bytes | None = None, meta: dict | None = None):
    if blob is None:
        blob = save({k: v.contiguous() for k, v in (state if state is not None else random_state(spec)).items()})
    meta = meta if meta is not None else {"name": name, "architecture": spec, "dataset": dataset}
    return client.post("/api/networks", files={"file": (filename, blob)}, data={"meta": json.dumps(meta)})


def plain_error(spec, state, x, y, n_classes: int = 10) -> float:
    """Independent reference: a fresh model, a plain loop over batches of 100, counting mistakes."""
    model = nets.build(spec, tuple(x.shape[1:]), n_classes)
    model.load_state_dict(state)
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(y), 100):
            wrong += int((model(x[i : i + 100]).argmax(1) != y[i : i + 100]).sum())
    return wrong / len(y)


def drain(sock, timeout: float = 5.0) -> tuple[int, bool]:
    """Read ``sock`` until the server ends it: (bytes read, whether it ended: EOF or reset; False on a time-out).
    Closes the socket."""
    got, ended = 0, False
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                ended = True
                break
            got += len(chunk)
    except ConnectionResetError:
        ended = True
    except TimeoutError:
        pass
    sock.close()
    return got, ended
