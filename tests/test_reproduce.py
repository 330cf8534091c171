"""`toroid reproduce` end to end: the tiny scale through a real `toroid serve` and its worker.

Checks the report's structure (files, self-contained HTML with its figures, every finding with the paper's
value, the measured value and an agreement flag) and that every number in the summary comes from a stored
job result: the cited jobs are fetched through the API and the values compared.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from backend.client import Client
from backend.client.reproduce import run

EXPECTED = ["test_error/mlp-digits", "flatness/mlp-digits", "flatness_vs_test_error/mlp-digits", "hessian/mlp-digits",
            "barrier_order/mlp-digits", "alignment_barriers/mlp-digits", "distance_order/mlp-digits",
            "alignment_distances/mlp-digits", "bend/mlp-digits", "binary_barriers/committee-hmm"]


@pytest.fixture(scope="module")
def reproduced(server, tmp_path_factory):
    client = Client(server["url"])
    out = tmp_path_factory.mktemp("reproduce")
    t0 = time.monotonic()
    result = run(client, scale="tiny", out=out, quiet=True)
    elapsed = time.monotonic() - t0
    summary = json.loads(Path(result["summary"]).read_text())
    return {"client": client, "result": result, "summary": summary, "elapsed": elapsed, "out": out,
            "html": Path(result["report"]).read_text(encoding="utf-8")}


class Jobs:
    """Jobs fetched once each through the API."""

    def __init__(self, client: Client):
        self.client, self.cache = client, {}

    def __call__(self, job_id: int) -> dict:
        if job_id not in self.cache:
            self.cache[job_id] = self.client.job(job_id)
        return self.cache[job_id]


def read(result: dict, key: str):
    """An independent reader of the summary's keys: "a.b", "a[3]", "a.b[-1]"."""
    value = result
    for part in key.split("."):
        name, *indices = re.split(r"\[", part)
        value = value[name]
        for index in indices:
            value = value[int(index.rstrip("]"))]
    return value


def measures(obj, path=""):
    """Every measure (a dict with "items" and "mean") and correlation in a nested structure, with its path."""
    if isinstance(obj, dict):
        if obj.get("kind") == "spearman":
            yield path, obj
            return
        if "items" in obj and "mean" in obj:
            yield path, obj
            return
        for k, v in obj.items():
            yield from measures(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from measures(v, f"{path}[{i}]")


def check_measure(m: dict, jobs: Jobs, where: str) -> None:
    values = []
    for item in m["items"]:
        job = jobs(item["job"])
        assert job["status"] == "succeeded", (where, job)
        expected = m["factor"] * float(read(job["result"], item["key"]))
        assert math.isclose(item["value"], expected, rel_tol=1e-9, abs_tol=1e-12), (where, item, expected)
        values.append(item["value"])
    assert m["n"] == len(values), where
    assert m["sources"] == sorted({i["job"] for i in m["items"]}), where
    if values:
        mean = sum(values) / len(values)
        assert math.isclose(m["mean"], mean, rel_tol=1e-9, abs_tol=1e-12), where
        assert math.isclose(m["min"], min(values), abs_tol=1e-12) and math.isclose(m["max"], max(values), abs_tol=1e-12)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        assert math.isclose(m["std"], std, rel_tol=1e-9, abs_tol=1e-12), where
    else:
        assert m["mean"] is None, where


def test_files_and_timing(reproduced):
    out, result = reproduced["out"], reproduced["result"]
    assert Path(result["report"]) == out / "report.html" and Path(result["report"]).stat().st_size > 100_000
    assert Path(result["summary"]) == out / "summary.json"
    assert reproduced["elapsed"] < 100, f"the tiny scale took {reproduced['elapsed']:.0f} s"
    s = reproduced["summary"]
    assert s["scale"] == "tiny" and s["jobs"]["planned"] > 20
    assert s["jobs"]["succeeded"] + s["jobs"]["failed"] + s["jobs"]["skipped"] == s["jobs"]["planned"]
    # only optional features (flatness, single-bend paths) may be missing; nothing else may fail
    assert set(s["missing_features"]) <= {"flatness", "hessian", "bend"}
    for f in s["failures"]:
        assert f["kind"] in ("flatness", "hessian") or (f["kind"] == "path" and f["params"].get("type") == "bend"), f


def test_every_finding_is_complete(reproduced):
    s = reproduced["summary"]
    ids = [f["id"] for f in s["findings"]]
    assert ids == EXPECTED
    for f in s["findings"]:
        assert f["agrees"] in (True, False, None), f["id"]
        assert f["paper"]["text"] and "unit" in f["paper"], f["id"]
        assert f["measured"], f["id"]
        assert f["rule"] and f["verdict"], f["id"]
        if f["agrees"] is None:
            assert f["status"].startswith("not available"), f
        else:
            assert f["status"] == ("agrees" if f["agrees"] else "disagrees"), f
    by_id = {f["id"]: f for f in s["findings"]}
    # what the tiny scale must measure whatever the service's optional features
    for fid in ("test_error/mlp-digits", "barrier_order/mlp-digits", "alignment_barriers/mlp-digits",
                "distance_order/mlp-digits", "alignment_distances/mlp-digits", "binary_barriers/committee-hmm"):
        assert by_id[fid]["agrees"] is not None, by_id[fid]["status"]
    assert by_id["test_error/mlp-digits"]["measured"]["RSGD"]["n"] == 2
    hessian = by_id["hessian/mlp-digits"]["measured"]  # beside the local energy: raw and canonical, per sampler
    assert all(hessian[f"{g} top eigenvalue (canonical)"]["n"] == 2 for g in ("RSGD", "SGD", "ADV"))
    assert {k for k, m in by_id["barrier_order/mlp-digits"]["measured"].items() if m["n"]} == {
        "RSGD-RSGD", "RSGD-SGD", "SGD-SGD", "RSGD-ADV", "SGD-ADV", "ADV-ADV"}
    # a missing feature is said plainly, never hidden
    for feature, fids in (("flatness", ("flatness/mlp-digits", "flatness_vs_test_error/mlp-digits")),
                          ("hessian", ("hessian/mlp-digits",)), ("bend", ("bend/mlp-digits",))):
        for fid in fids:
            if feature in s["missing_features"]:
                assert by_id[fid]["agrees"] is None and by_id[fid]["status"].startswith("not available"), by_id[fid]
                assert "not available" in s["missing_features"][feature]
            else:
                assert by_id[fid]["agrees"] is not None, by_id[fid]["status"]
    # the markdown table: one row per finding
    table = s["table_markdown"].splitlines()
    rows = len([f for f in s["findings"] if not f.get("setting_unavailable")])
    rows += len({f["setting"] for f in s["findings"] if f.get("setting_unavailable")})
    assert table[0].startswith("| Finding") and len(table) == 2 + rows


def check_every_measure(findings: list[dict], jobs: Jobs) -> None:
    """Every measure and correlation of ``findings`` against the jobs it cites."""
    found = list(measures(findings))
    assert len(found) > 20
    for where, m in found:
        if m.get("kind") == "spearman":
            check_measure(m["x"], jobs, where + "/x")
            check_measure(m["y"], jobs, where + "/y")
            xs, ys = [i["value"] for i in m["x"]["items"]], [i["value"] for i in m["y"]["items"]]
            if m["value"] is not None:
                assert math.isclose(m["value"], spearmanr(xs, ys).statistic, abs_tol=1e-9), where
            assert m["sources"] == sorted(set(m["x"]["sources"]) | set(m["y"]["sources"]))
        else:
            check_measure(m, jobs, where)


def test_every_number_comes_from_a_stored_job(reproduced):
    s, client = reproduced["summary"], reproduced["client"]
    jobs = Jobs(client)
    check_every_measure(s["findings"], jobs)
    # the networks table: errors as their train jobs reported them; the networks are stored and tagged
    assert len(s["networks"]) == 6 + 4
    for n in s["networks"]:
        job = jobs(n["train_job"])
        assert job["kind"] == "train" and job["result"]["network_id"] == n["id"]
        assert n["train_error"] == job["result"]["train_error"] and n["test_error"] == job["result"]["test_error"]
        assert {"reproduce", "tiny"} <= set(client.network(n["id"])["tags"])
    # every figure is drawn from succeeded jobs
    for fig in s["figures"]:
        assert fig["sources"], fig
        for job_id in fig["sources"]:
            assert jobs(job_id)["status"] == "succeeded"


def test_report_is_self_contained(reproduced):
    page, s = reproduced["html"], reproduced["summary"]
    assert page.startswith("<!DOCTYPE html>")
    tags = re.findall(r"<(?:script|link|img|iframe|source|embed)\b[^>]*>", page, flags=re.I)
    for tag in tags:
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag, flags=re.I), tag
    assert not re.search(r"@import\s+url\(\s*['\"]?(?:https?:)?//", page)
    assert "Plotly.newPlot" in page and page.count("Plotly.newPlot") == len(s["figures"]) >= 4
    assert page.count("* plotly.js v") == 1  # plotly.js inlined, once
    for fig in s["figures"]:
        assert f"id='fig-{fig['id']}'" in page
    for f in s["findings"]:
        assert f"id='{f['id']}'" in page


def test_rerun_reuses_stored_results_and_cli(reproduced, server, tmp_path):
    """The CLI hook runs the same pipeline; identical jobs are answered from the service's cache."""
    before = {n["id"] for n in reproduced["client"].networks(tag="reproduce")}
    out = tmp_path / "again"
    toroid = str(Path(sys.executable).parent / "toroid")
    proc = subprocess.run([toroid, "reproduce", "--scale", "tiny", "--out", str(out), "--url", server["url"]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in proc.stdout and f"summary: {out / 'summary.json'}" in proc.stdout
    assert "reproduce:" in proc.stderr and "jobs" in proc.stderr  # the progress bar
    again = json.loads((out / "summary.json").read_text())
    assert again["jobs"]["cached"] == again["jobs"]["succeeded"] > 0
    assert {n["id"] for n in reproduced["client"].networks(tag="reproduce")} == before  # no new networks
    first = {f["id"]: f for f in reproduced["summary"]["findings"]}
    for f in again["findings"]:
        assert f["agrees"] == first[f["id"]]["agrees"], f["id"]
        for label, m in f["measured"].items():
            if "mean" in m:
                assert m["mean"] == first[f["id"]]["measured"][label]["mean"], (f["id"], label)


def test_your_own_network_runs_the_same_comparison(reproduced, server, tmp_path):
    """`toroid reproduce --architecture SPEC`: the paper's comparison (RSGD, SGD, ADV minimizers; flatness,
    distances, paths, bends) on a lab's own network, here a CIFAR-style ResNet, every number from a stored job."""
    arch = {"kind": "resnet", "depth": 8, "width": 0.25}
    toroid = str(Path(sys.executable).parent / "toroid")
    out = tmp_path / "resnet"
    proc = subprocess.run([toroid, "reproduce", "--scale", "tiny", "--architecture", json.dumps(arch), "--out", str(out),
                           "--url", server["url"]], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert [f["id"] for f in s["findings"]] == [i.replace("mlp-digits", "resnet-digits") for i in EXPECTED]
    assert all(f["agrees"] is not None for f in s["findings"] if "flatness" not in f["id"] and "bend" not in f["id"])
    assert "resnet (depth 8, width 0.25) on digits" in (out / "report.html").read_text(encoding="utf-8")
    jobs = Jobs(reproduced["client"])
    check_every_measure(s["findings"], jobs)
    resnets = [n for n in s["networks"] if "resnet" in n["name"]]
    assert len(resnets) == 6
    for n in resnets:
        assert reproduced["client"].network(n["id"])["architecture"] == arch
    assert not s["failures"], s["failures"]
    # what cannot run says so in one line, before any job
    for bad, words in (('{"kind": "binary_mlp", "hidden": [8]}', "is binary"), ("{kind: resnet", "not JSON")):
        proc = subprocess.run([toroid, "reproduce", "--scale", "tiny", "--architecture", bad, "--out", str(tmp_path / "x"),
                               "--url", server["url"]], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = subprocess.run([toroid, "reproduce", "--scale", "tiny", "--dataset", "cifar-11", "--out", str(tmp_path / "y"),
                           "--url", server["url"]], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown data set 'cifar-11'" in proc.stderr


def test_what_cannot_run_is_said_at_the_start_in_one_line(reproduced, server, tmp_path):
    """Before: deeply nested JSON and an --out that cannot be written gave tracebacks (after the jobs had
    run, for --out); an architecture over the service's limit, an unknown architecture kind or a data set
    whose files are missing ran on and exited 0 with "not available" rows. Now each is one line and a
    non-zero exit before any job; settings of a scale that cannot run here are named at the start."""
    toroid = str(Path(sys.executable).parent / "toroid")
    client = reproduced["client"]

    def reproduce(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([toroid, "reproduce", "--scale", "tiny", *args, "--url", server["url"]],
                              capture_output=True, text=True, timeout=120)

    trains = len(client.jobs(kind="train", limit=1000))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    deep = "[" * 60_000 + "]" * 60_000  # (one command-line argument holds at most 128 KiB)
    for args, words in (
            (["--architecture", deep, "--out", str(tmp_path / "d")], "nested too deeply"),
            (["--out", str(a_file / "report")], "cannot write the report"),
            (["--architecture", '{"kind": "mlp", "hidden": [100000, 100000]}', "--out", str(tmp_path / "o")],
             "refuses the architecture"),
            (["--architecture", '{"kind": "transformer"}', "--out", str(tmp_path / "k")], "unknown architecture kind"),
            (["--dataset", "mnist", "--out", str(tmp_path / "m")], "not available here")):
        proc = reproduce(*args)
        assert proc.returncode != 0, (args[:2], proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("reproduce:")]
        assert "Traceback" not in proc.stderr and len(lines) == 1 and words in lines[0], (words, proc.stderr[-2000:])
    assert len(client.jobs(kind="train", limit=1000)) == trains, "a refused run submitted no training"


def test_settings_that_cannot_run_are_named_before_any_job(reproduced, server, tmp_path, monkeypatch, capsys):
    from backend.client.reproduce import config as C

    tiny = C.get_scale("tiny")
    mnist = dataclasses.replace(tiny.settings[0], key="mlp-mnist", title="MLP (16) on MNIST", dataset="mnist")
    monkeypatch.setattr(C, "get_scale", lambda *a, **k: dataclasses.replace(tiny, settings=[*tiny.settings, mnist]))
    submitted = []
    client = reproduced["client"]
    real_submit = client.submit

    def submit(*args, **kwargs):
        submitted.append(capsys.readouterr().err)  # what was said before this job
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", submit)
    result = run(client, scale="tiny", out=tmp_path / "r", quiet=False)
    said = submitted[0] if submitted else capsys.readouterr().err
    assert "reproduce: cannot run mlp-mnist (MLP (16) on MNIST):" in said
    summary = json.loads(Path(result["summary"]).read_text())
    assert any(f["agrees"] is None and "mnist" in f["id"] for f in summary["findings"])
    assert any(f["agrees"] is not None and "mlp-digits" in f["id"] for f in summary["findings"])


# ---- the pure parts, without a service ---------------------------------------------------------------

def test_scales_pairs_and_statistics():
    from backend.client.reproduce import _pairs
    from backend.client.reproduce import config as C
    from backend.client.reproduce.measure import extract, measure, spearman

    for name in ("tiny", "small", "full"):
        scale = C.get_scale(name)
        assert scale.settings[0].dataset == "digits" and scale.binary is not None
        assert all(set(s.sampler_params) <= set(C.SAMPLERS) for s in scale.settings)
    assert any(s.architecture["kind"] == "lenet" for s in C.get_scale("full").settings)
    assert all(s.seeds == 3 for s in C.get_scale("small", seeds=3).settings)
    own = C.get_scale("small", architecture={"kind": "graph", "layers": [{"type": "linear"}]}, dataset="cifar10")
    assert [(s.key, s.dataset, s.architecture["kind"]) for s in own.settings] == [("graph-cifar10", "cifar10", "graph")]
    assert own.settings[0].title == "graph (1 layers) on cifar10" and own.binary is not None
    mnist = C.get_scale("small", architecture={"kind": "resnet", "depth": 20}, dataset="mnist").settings
    assert [s.title for s in mnist] == ["resnet (depth 20) on mnist (10000 training inputs)"]
    with pytest.raises(ValueError, match="'kind'"):
        C.get_scale("tiny", architecture=["resnet"])
    with pytest.raises(ValueError):
        C.get_scale("huge")
    groups = ["rsgd", "rsgd", "sgd", "sgd", "adv", "adv"]
    every = _pairs(groups, None)
    assert len(every) == 15 and all(i < j for i, j in every)
    one = _pairs(groups, 1)
    assert sorted(C.pair_type(groups[i], groups[j]) for i, j in one) == sorted(C.PAIR_TYPES)
    assert [C.pair_type(groups[i], groups[j]) for i, j in _pairs(groups, 1, [("adv", "adv")])] == [("adv", "adv")]
    assert C.pair_type("adv", "rsgd") == ("rsgd", "adv")
    # statistics against scipy and by hand
    x, y = [0.3, 0.1, 0.2, 0.2, 0.9], [3.0, 1.0, 2.5, 2.0, 8.0]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    jobs = [{"id": 7, "result": {"d": {"raw": 0.5}, "v": [1, 2, 3]}},
            {"id": 3, "result": {"d": {"raw": 1.5}, "v": [4]}}]
    assert extract(jobs[0]["result"], "v[-1]") == 3 and extract(jobs[0]["result"], "d.raw") == 0.5
    m = measure([(j, "d.raw") for j in jobs], 100, "%")
    assert (m["mean"], m["n"], m["sources"], m["min"], m["max"]) == (100.0, 2, [3, 7], 50.0, 150.0)
    assert m["std"] == pytest.approx(math.sqrt(2) * 50)
    empty = measure([], 1)
    assert empty["n"] == 0 and empty["mean"] is None and empty["items"] == []
