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


def test_compare_offers_only_compatible_networks_as_b(server, page, tmp_path):
    from safetensors.torch import save

    from .helpers import random_state

    s = seeded(server)
    client, ids = s["client"], s["ids"]
    other_spec = {"kind": "mlp", "hidden": [8]}
    other = client.upload({k: v.contiguous() for k, v in random_state(other_spec, seed=3).items()},
                          name="narrow-b-candidate", architecture=other_spec, dataset="digits")
    a = ids[0]
    page.goto(f"{server['url']}/#/compare")
    page.wait_for_selector(f"#compare-a option[value='{a}']", state="attached")
    page.select_option("#compare-a", str(a))
    options = page.eval_on_selector_all("#compare-b option[value]:not([value=''])", """os => os.map(o => ({
        id: Number(o.value), disabled: o.disabled, text: o.textContent, group: o.parentElement.tagName}))""")
    by_id = {o["id"]: o for o in options}
    # the same architecture and data set: offered; A itself and the narrower mlp: greyed, saying why
    for i in ids[1:]:
        assert not by_id[i]["disabled"] and by_id[i]["group"] == "SELECT"
    assert by_id[a]["disabled"] and "this is A" in by_id[a]["text"]
    assert by_id[other["id"]]["disabled"] and "another architecture" in by_id[other["id"]]["text"]
    assert by_id[other["id"]]["group"] == "OPTGROUP"
    offered = [o["id"] for o in options if not o["disabled"]]
    assert offered.index(ids[1]) < [o["id"] for o in options].index(other["id"])  # compatible ones first
    # an address naming an incompatible B: one clear line, no job submitted, nothing in the table
    before = len(client.jobs(limit=500))
    page.goto(f"{server['url']}/#/compare?a={a}&b={other['id']}&types=linear,linear_aligned,geodesic")
    page.wait_for_function("() => { const e = document.getElementById('path-error'); return !e.hidden && e.textContent.trim(); }")
    text = page.inner_text("#path-error")
    assert "cannot be compared with A" in text and "another architecture" in text and text.count("architecture (") == 1
    assert page.inner_text("#path-summary").strip() == ""
    page.wait_for_timeout(500)
    assert len(client.jobs(limit=500)) == before
    # the error fits in its box (not cut off)
    assert page.evaluate("() => { const e = document.getElementById('path-error'); return e.scrollWidth <= e.clientWidth + 1; }")


def visible_job_rows(page, server) -> list[int]:
    page.goto(f"{server['url']}/#/jobs")
    page.wait_for_selector("#jobs-table tbody tr[data-job], #jobs-table tbody td.hint")
    page.wait_for_timeout(300)
    return page.eval_on_selector_all("#jobs-table tbody tr[data-job]", "rows => rows.map(r => Number(r.dataset.job))")


def test_reopening_every_view_ten_times_adds_no_visible_job_rows(server, page):
    s = seeded(server)
    client, (a, b, c, d) = s["client"], s["ids"]
    views = [  # an address of each view that submits jobs on opening, and what shows they are answered
        (f"#/compare?a={a}&b={b}&types=linear,geodesic&points=5", "#path-summary tr[data-type='geodesic'] a[data-job]", "#path-summary td.error, #path-error"),
        (f"#/flatness?nets={a},{b}&sigmas=0.1&draws=2", f"#flat-table tr[data-id='{b}'] a[data-job]", "#flat-table td.error, #flat-error"),
        (f"#/map?nets={a},{b},{c}", "#map-note[data-job]", "#map-error"),
        (f"#/plane?nets={a},{b},{c}&grid=5", "#plane-note[data-job]", "#plane-error"),
        (f"#/slice?network={d}&dims=1&points=5", "#slice-note[data-job]", "#slice-error"),
    ]
    from .test_dashboard_support import wait_done

    for address, done, error in views:  # the first visit computes (or finds) them
        page.goto(f"{server['url']}/{address}")
        wait_done(page, done, error)
    before = visible_job_rows(page, server)
    all_before = len(client.jobs(limit=1000))
    for _ in range(10):
        for address, done, error in views:
            page.goto("about:blank")
            page.goto(f"{server['url']}/{address}")
            wait_done(page, done, error)
    # the visits were answered from the cache: jobs exist (the API lists them), the Jobs view hides them
    cached = client.jobs(limit=1000)
    assert len(cached) >= all_before + 50 and all(j["cached"] for j in cached[: len(cached) - all_before])
    assert visible_job_rows(page, server) == before
    assert not [j for j in client.jobs(limit=1000, cached="false") if j["cached"]]
    # the toggle shows them, and is kept in the address
    page.check("#jobs-cached")
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr[data-job] .pill').length >= 50")
    assert "cached=1" in page.evaluate("() => location.hash")
