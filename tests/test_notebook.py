"""The Python client in a notebook (issue 16): tables (pandas, or plain dicts without it), a Plotly figure
per result kind, a progress bar while waiting, stored networks as torch modules, untrained modules to
train outside and upload, and the README's client example run as written."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from backend.client import notebook
from workers.landscape import data as datasets

from .helpers import SPEC, plain_error, random_state

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def nb(server):
    from backend.client import Client

    c = Client(server["url"])
    a = c.upload(random_state(SPEC, seed=701), name="nb-a", architecture=SPEC, dataset="digits")
    b = c.upload(random_state(SPEC, seed=702), name="nb-b", architecture=SPEC, dataset="digits")
    return {"client": c, "a": a["id"], "b": b["id"]}


def test_frames_are_dataframes_with_pandas_and_dicts_without(nb, monkeypatch):
    import pandas as pd

    c = nb["client"]
    path = c.wait(c.submit("path", a=nb["a"], b=nb["b"], type="linear", points=5))
    df = c.frame(path)
    assert isinstance(df, pd.DataFrame) and list(df.columns)[:3] == ["t", "train_error", "test_error"]
    assert df["t"].tolist() == path["result"]["t"]
    assert df["train_error"].tolist() == pytest.approx(path["result"]["train_error"])
    monkeypatch.setattr(notebook, "has_pandas", lambda: False)
    plain = c.frame(path)
    assert isinstance(plain, dict) and plain["test_error"] == path["result"]["test_error"]
    monkeypatch.undo()

    matrix = c.wait(c.submit("matrix", networks=[nb["a"], nb["b"]]))
    rows = c.frame(matrix)
    assert len(rows) == 1 and rows["a"].tolist() == [nb["a"]] and rows["b"].tolist() == [nb["b"]]
    assert rows["geodesic"].tolist() == pytest.approx([matrix["result"]["distances"]["geodesic"][0][1]])
    flat = c.wait(c.submit("flatness", network=nb["a"], sigmas=[0.1, 0.2], draws=2))
    table = c.frame(flat)
    assert table["sigma"].tolist() == pytest.approx([0.1, 0.2])
    assert table["delta_mean"].tolist() == pytest.approx(flat["result"]["delta_mean"])
    with pytest.raises(ValueError, match="no result yet"):
        c.frame({**flat, "status": "running", "result": None})


def test_a_figure_for_each_result_kind(nb):
    c = nb["client"]
    jobs = {
        "path": c.wait(c.submit("path", a=nb["a"], b=nb["b"], type="geodesic", points=4)),
        "flatness": c.wait(c.submit("flatness", network=nb["b"], sigmas=[0.05, 0.1], draws=2)),
        "matrix": c.wait(c.submit("matrix", networks=[nb["a"], nb["b"]])),
        "distance": c.wait(c.submit("distance", a=nb["a"], b=nb["b"])),
        "train": c.wait(c.submit("train", architecture=SPEC, dataset="digits", optimizer="sgd", epochs=2, seed=3,
                                 name="nb-trained")),
    }
    fig = c.figure(jobs["path"])
    r = jobs["path"]["result"]
    assert fig.data[0].name == "train error" and list(fig.data[0].x) == r["t"]
    assert list(fig.data[0].y) == pytest.approx([100 * v for v in r["train_error"]])
    fig = c.figure(jobs["flatness"])
    assert list(fig.data[1].y) == pytest.approx([100 * v for v in jobs["flatness"]["result"]["delta_mean"]])
    fig = c.figure(jobs["matrix"])
    assert fig.data[0].type == "heatmap"
    assert np.allclose(np.array(fig.data[0].z, dtype=float), np.array(jobs["matrix"]["result"]["distances"]["geodesic"]))
    fig = c.figure(jobs["distance"])
    bars = {x: (y, t.yaxis) for t in fig.data for x, y in zip(t.x, t.y)}
    d = jobs["distance"]["result"]
    assert bars["geodesic"][0] == pytest.approx(d["geodesic"]) and bars["raw"][0] == pytest.approx(d["raw"])
    # the geodesic length (~10) and the per-parameter distances (~0.1) on separate axes (issue 25)
    assert d["geodesic"] > 20 * d["raw"] and bars["geodesic"][1] != bars["raw"][1]
    assert bars["raw"][1] == bars["normalized_aligned"][1]
    fig = c.figure(jobs["train"])
    assert list(fig.data[0].y) == pytest.approx([100 * h["train_error"] for h in jobs["train"]["result"]["history"]])
    assert len(c.frame(jobs["train"])) == 2  # one row per epoch


def test_model_and_untrained_modules(nb):
    import torch

    c = nb["client"]
    net = c.network(nb["a"])
    module = c.model(nb["a"])
    assert not module.training
    d = datasets.load_dataset("digits", net["dataset_options"])
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    uploaded = random_state(SPEC, seed=701)
    assert set(state) == set(uploaded) and all(torch.equal(state[k], uploaded[k]) for k in state)
    # its errors are the service's (the evaluate job ran on the upload)
    deadline = time.monotonic() + 60
    while c.network(nb["a"])["test_error"] is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert plain_error(SPEC, state, d.x_test, d.y_test) == pytest.approx(c.network(nb["a"])["test_error"])

    fresh = c.untrained(SPEC, "digits", seed=5)
    assert set(fresh.state_dict()) == set(random_state(SPEC).keys())
    again = c.untrained(SPEC, "digits", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(fresh.state_dict().values(), again.state_dict().values()))
    up = c.upload(fresh.state_dict(), name="nb-untrained", architecture=SPEC, dataset="digits")
    assert up["n_params"] == sum(p.numel() for p in fresh.parameters())
    with pytest.raises(Exception, match="hidden"):
        c.untrained({"kind": "mlp", "hidden": "wide"}, "digits")


def test_wait_shows_a_progress_bar_when_asked(nb, capsys):
    c = nb["client"]
    job = c.wait(c.submit("path", a=nb["b"], b=nb["a"], type="linear", points=6), progress=True)
    assert job["status"] == "succeeded"
    err = capsys.readouterr().err
    assert f"job {job['id']} (path)" in err and "100%" in err
    c.wait(c.submit("path", a=nb["b"], b=nb["a"], type="linear", points=7))  # not a terminal: no bar
    assert "job " not in capsys.readouterr().err


def test_readme_client_example_runs_as_written(server):
    text = README.read_text()
    section = text[text.index("## Python client"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'Client("http://127.0.0.1:8000")' in code
    scope: dict = {}
    exec(compile(code.replace("http://127.0.0.1:8000", server["url"]), "README.md", "exec"), scope)
    assert 0 <= scope["job"]["result"]["barrier"] <= 1
    assert len(scope["table"]) == 21
    assert scope["fig"].data and scope["model"] is not None


def test_slice_frames_and_figures_are_the_slice(nb):
    """A slice job's frame and figure are its curve (1-D) or its surface (2-D), not its parameters (issue 25)."""
    c = nb["client"]
    one = c.wait(c.submit("slice", network=nb["a"], dims=1, points=5, span=0.5))
    r = one["result"]
    table = c.frame(one)
    assert table["x"].tolist() == r["x"] and table["train_error"].tolist() == pytest.approx(r["train_error"])
    fig = c.figure(one)
    curves = {t.name: t for t in fig.data}
    assert list(curves["train error"].x) == r["x"]
    assert list(curves["train error"].y) == pytest.approx([100 * v for v in r["train_error"]])
    assert list(curves["test error"].y) == pytest.approx([100 * v for v in r["test_error"]])
    assert all(t.type == "scatter" for t in fig.data)
    two = c.wait(c.submit("slice", network=nb["a"], dims=2, points=3, span=0.5))
    r = two["result"]
    for given in (two, r):  # a job, or its bare result (told from a plane by its fields)
        table = c.frame(given)
        assert len(table) == len(r["x"]) * len(r["y"])
        row = table.iloc[len(r["x"]) + 2]  # y[1], x[2]
        assert (row["x"], row["y"]) == (r["x"][2], r["y"][1]) and row["train_error"] == pytest.approx(r["train_error"][1][2])
        fig = c.figure(given)
        contour = next(t for t in fig.data if t.type == "contour")
        assert np.allclose(np.array(contour.z, dtype=float), 100 * np.array(r["train_error"]))
        assert list(contour.x) == r["x"] and list(contour.y) == r["y"]


def test_figure_shows_names_as_text_not_html():
    """Before: a network's name (another user's text) went into the figure's labels as Plotly reads it, a
    subset of HTML: `<a href=...>` became a clickable external link. Now names are escaped, as the
    dashboard does (frontend/js/util.js: ptext)."""
    evil = '<a href="https://evil.example/">click</a> & <b>bold</b>'
    result = {"networks": [3, 4], "names": [evil, "plain"], "distances": {"geodesic": [[0.0, 1.0], [1.0, 0.0]]}}
    fig = notebook.figure(result, "matrix")
    labels = list(fig.data[0].x) + list(fig.data[0].y)
    assert labels[0] == "&lt;a href=\"https://evil.example/\"&gt;click&lt;/a&gt; &amp; &lt;b&gt;bold&lt;/b&gt; #3"
    assert all("<" not in label for label in labels) and labels[1] == "plain #4"
    path = {"t": [0.0, 1.0], "train_error": [0.1, 0.2], "test_error": [0.1, 0.2], "barrier": 0.1, "type": "<i>x</i>"}
    assert "<" not in notebook.figure(path, "path").layout.title.text
