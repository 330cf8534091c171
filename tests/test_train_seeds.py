"""Train jobs through the worker: the initial weights come from init_seed, or from seed and the sampler
(issue 14 item 3: same-seed networks of different samplers used to share their initialisation)."""
from __future__ import annotations

import torch
from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import nets, train

SPEC = nets.normalize_spec({"kind": "mlp", "hidden": [16]})


def initial_weights(live, optimizer: str, **params) -> tuple[dict, dict]:
    """A train job with learning rate 0, so the stored weights are its initial weights; (network, weights)."""
    job = live.run("train", architecture=SPEC, dataset="digits", optimizer=optimizer, epochs=1, lr=0.0, **params)
    net = live.client.get(f"/api/networks/{job['result']['network_id']}").json()
    return net, load(live.client.get(f"/api/networks/{net['id']}/weights").content)


def test_same_seed_different_samplers_start_apart_unless_init_seed_is_shared(live):
    sgd, w_sgd = initial_weights(live, "sgd", seed=5, name="seed-sgd")
    adam, w_adam = initial_weights(live, "adam", seed=5, name="seed-adam")
    assert sgd["source"]["params"]["init_seed"] == train.initial_seed("sgd", {"seed": 5})
    assert adam["source"]["params"]["init_seed"] == train.initial_seed("adam", {"seed": 5})
    assert not torch.equal(w_sgd["fc1.weight"], w_adam["fc1.weight"])  # before the fix: equal
    digits = datasets.load_dataset("digits")
    expected = train.initial_model(SPEC, digits, "sgd", {"seed": 5}).state_dict()
    assert all(torch.equal(w_sgd[k], expected[k]) for k in expected)
    _, shared_sgd = initial_weights(live, "sgd", seed=5, init_seed=42, name="shared-sgd")
    shared, shared_adam = initial_weights(live, "adam", seed=6, init_seed=42, name="shared-adam")
    assert shared["source"]["params"]["init_seed"] == 42
    assert all(torch.equal(shared_sgd[k], shared_adam[k]) for k in shared_sgd)  # shared on purpose
