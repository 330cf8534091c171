"""Forms that never lose work and lists that stay readable (issue 25): the network page's note typed
while the network loads, the upload form's architecture after a success, Compare's B list, cached rows
in the Jobs list.
"""
from __future__ import annotations

import re

import pytest

from .test_dashboard_support import seeded

pytestmark = pytest.mark.browser


def test_a_note_typed_before_the_network_loads_is_kept(server, page):
    s = seeded(server)
    client, i = s["client"], s["ids"][1]
    held = []  # the network's GET waits here until the note is typed
    page.route(re.compile(rf".*/api/networks/{i}$"), lambda route: held.append(route))
    page.goto(f"{server['url']}/#/network?id={i}")
    page.wait_for_function("() => document.getElementById('network-save') && document.getElementById('network-save').disabled")
    page.wait_for_timeout(200)
    assert held, "the network's request was not seen"
    note = "typed while it was loading"
    page.fill("#network-note", note)
    page.fill("#network-tags", "early-tag")
    assert page.is_disabled("#network-save")  # nothing can be saved over a network not shown yet
    for route in held:
        route.continue_()
    page.unroute(re.compile(rf".*/api/networks/{i}$"))
    page.wait_for_function("() => !document.getElementById('network-save').disabled")
    # the stored values arrived and did not overwrite what was typed; the name (untouched) is the stored one
    assert page.input_value("#network-note") == note
    assert page.input_value("#network-tags") == "early-tag"
    assert page.input_value("#network-rename") == client.network(i)["name"]
    assert "Not saved yet" in page.inner_text("#network-saved")
    page.click("#network-save")
    page.wait_for_function("() => document.getElementById('network-saved').textContent === 'Saved.'")
    stored = client.network(i)
    assert stored["note"] == note and stored["tags"] == ["early-tag"]
    assert page.inner_text("#network-note-text") == note
    client.http.patch(f"/api/networks/{i}", json={"note": "", "tags": [s["tag"]]})  # as the other tests expect it


def test_the_upload_form_keeps_its_architecture_and_names_a_mismatch(server, page, tmp_path):
    from safetensors.torch import save

    from .helpers import random_state

    s = seeded(server)
    page.goto(f"{server['url']}/#/networks")
    page.wait_for_selector("#upload-arch-hidden")
    good = tmp_path / "good.safetensors"
    good.write_bytes(save(random_state({"kind": "mlp", "hidden": [16]}, seed=4)))
    page.set_input_files("#upload-file", str(good))
    page.fill("#upload-name", f"{s['tag']}-kept-arch")
    page.fill("#upload-tags", s["tag"])
    page.select_option("#upload-kind", "mlp")
    page.fill("#upload-arch-hidden", "16")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-done a")
    # the architecture (and data set, tags) stay for the next file; the file and its name are cleared
    assert page.input_value("#upload-kind") == "mlp" and page.input_value("#upload-arch-hidden") == "16"
    assert page.input_value("#upload-tags") == s["tag"] and page.input_value("#upload-dataset") == "digits"
    assert page.input_value("#upload-name") == "" and page.evaluate("() => document.getElementById('upload-file').files.length") == 0
    # a file of another architecture: the error says the architecture does not match, and which tensors
    other = tmp_path / "other.pt"
    import torch

    torch.save(random_state({"kind": "mlp", "hidden": [64, 64]}), other)
    page.set_input_files("#upload-file", str(other))
    page.click("#upload-submit")
    page.wait_for_function("() => { const e = document.getElementById('upload-error'); return !e.hidden && e.textContent.trim(); }")
    text = page.inner_text("#upload-error")
    assert "does not match the file" in text and "fc1.weight has shape [64, 64], expected [16, 64]" in text, text
    assert "bytes" not in text
