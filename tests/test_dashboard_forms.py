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
