"""What a notebook wants from the client: results as tables (a pandas DataFrame when pandas is
installed, else a plain dict of columns), a Plotly figure for each result kind, a progress bar while
waiting, and stored networks as torch modules with their weights.

    from backend.client import Client
    c = Client()
    job = c.wait(c.submit("path", a=1, b=2, type="geodesic", points=21))   # a bar while it runs
    c.frame(job)          # t, train_error, test_error, ... as a DataFrame
    c.figure(job).show()  # the curves, as the dashboard draws them
    model = c.model(1)    # torch module with network 1's weights
    fresh = c.untrained({"kind": "mlp", "hidden": [64, 64]}, "digits")  # the state_dict names an upload needs

Client re-exports these as methods (``frame``, ``figure``, ``model``, ``untrained``, ``wait(progress=...)``).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

# ---- tables ----------------------------------------------------------------------------------------


def has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _result_of(job_or_result: dict) -> tuple[dict, str | None]:
    """(result, kind) from a job (with its result) or from a bare result."""
    if "result" in job_or_result and "kind" in job_or_result and "status" in job_or_result:
        if job_or_result["result"] is None:
            raise ValueError(f"job {job_or_result.get('id')} has no result yet ({job_or_result['status']}); wait for it first")
        return job_or_result["result"], job_or_result["kind"]
    return job_or_result, None


def kind_of(result: dict, kind: str | None = None) -> str:
    """The kind of job a result came from, by its fields when not given."""
    if kind:
        return kind
    if "history" in result and "network_id" in result:
        return "train"
    if "t" in result and "train_error" in result:
        return "path"
    if "sigma" in result and "delta_mean" in result:
        return "flatness"
    if "distances" in result and "networks" in result:
        return "matrix"
    if "x" in result and "dims" in result and "train_error" in result:  # before plane: a 2-D slice has a y too
        return "slice"
    if "x" in result and "y" in result and "train_error" in result:
        return "plane"
    if "raw" in result or "geodesic" in result or "hamming" in result:
        return "distance"
    return "other"


def columns(job_or_result: dict, kind: str | None = None) -> dict[str, list]:
    """The result as columns of equal length (one row per point, pair or epoch)."""
    result, job_kind = _result_of(job_or_result)
    kind = kind_of(result, kind or job_kind)
    if kind == "train":
        keys: list[str] = []
        for row in result["history"]:
            keys += [k for k in row if k not in keys]
        return {k: [row.get(k) for row in result["history"]] for k in keys}
    if kind == "path":
        keys = ["t", "train_error", "test_error", "train_loss", "test_loss"]
        return {k: list(result[k]) for k in keys if result.get(k) is not None}
    if kind == "flatness":
        keys = ["sigma", "delta_mean", "delta_std", "delta_sem"]
        out = {k: list(result[k]) for k in keys if isinstance(result.get(k), list)}
        return out
    if kind == "matrix":
        ids, names = result["networks"], result.get("names") or [""] * len(result["networks"])
        out: dict[str, list] = {"a": [], "b": [], "name_a": [], "name_b": []}
        matrices = {**result["distances"], **({"barrier": result["barriers"]} if result.get("barriers") else {})}
        for key in matrices:
            out[key] = []
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                out["a"].append(ids[i]); out["b"].append(ids[j])
                out["name_a"].append(names[i]); out["name_b"].append(names[j])
                for key, m in matrices.items():
                    out[key].append(m[i][j])
        return out
    if kind == "slice":
        keys = [k for k in ("train_error", "test_error", "train_loss", "test_loss") if result.get(k) is not None]
        if result.get("dims", 1) == 1:
            return {"x": list(result["x"]), **{k: list(result[k]) for k in keys}}
        grid: dict[str, list] = {"x": [], "y": [], **{k: [] for k in keys}}
        for iy, y in enumerate(result["y"]):  # value [i][j] at (x[j], y[i])
            for ix, x in enumerate(result["x"]):
                grid["x"].append(x); grid["y"].append(y)
                for k in keys:
                    grid[k].append(result[k][iy][ix])
        return grid
    if kind == "plane":
        out = {"x": [], "y": [], "train_error": [], "test_error": []}
        for iy, y in enumerate(result["y"]):
            for ix, x in enumerate(result["x"]):
                out["x"].append(x); out["y"].append(y)
                out["train_error"].append(result["train_error"][iy][ix])
                out["test_error"].append(result["test_error"][iy][ix] if result.get("test_error") else None)
        return out
    scalars = {k: [v] for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return scalars


def frame(job_or_result: dict, kind: str | None = None):
    """A pandas DataFrame of the result (see ``columns``); the plain dict of columns without pandas."""
    cols = columns(job_or_result, kind)
    if not has_pandas():
        return cols
    import pandas as pd

    return pd.DataFrame(cols)


# ---- figures ---------------------------------------------------------------------------------------


def ptext(value) -> str:
    """Text for Plotly, which reads a subset of HTML in names, labels and titles (<a href>, <b>, <br>): a
    network's name (maybe another user's) is shown as typed, never as markup; as the dashboard's ptext."""
    return str("" if value is None else value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def figure(job_or_result: dict, kind: str | None = None):
    """A Plotly figure of the result, one per kind (train, path, flatness, matrix, plane, slice, distance)."""
    import plotly.graph_objects as go

    result, job_kind = _result_of(job_or_result)
    kind = kind_of(result, kind or job_kind)
    fig = go.Figure()
    pct = lambda values: [None if v is None else 100 * v for v in values]  # noqa: E731
    if kind == "train":
        cols = columns(result, "train")
        x = list(range(1, len(result["history"]) + 1))
        for key in ("train_error", "test_error"):
            if key in cols:
                fig.add_scatter(x=x, y=pct(cols[key]), name=key.replace("_", " "), mode="lines+markers")
        fig.update_layout(title="Training curve", xaxis_title="epoch", yaxis_title="error (%)")
    elif kind == "path":
        fig.add_scatter(x=result["t"], y=pct(result["train_error"]), name="train error", mode="lines+markers")
        fig.add_scatter(x=result["t"], y=pct(result["test_error"]), name="test error", mode="lines+markers",
                        line={"dash": "dot"})
        title = f"Error along the {ptext(result.get('type', 'path'))} path; barrier {100 * result['barrier']:.2f}%" \
            if result.get("barrier") is not None else "Error along the path"
        fig.update_layout(title=title, xaxis_title="position t along the path (A → B)", yaxis_title="error (%)")
    elif kind == "flatness":
        mean, std = pct(result["delta_mean"]), pct(result["delta_std"])
        sigma = list(result["sigma"])
        fig.add_scatter(x=sigma + sigma[::-1], y=[m + s for m, s in zip(mean, std)] + [m - s for m, s in zip(mean, std)][::-1],
                        fill="toself", opacity=0.2, line={"width": 0}, name="± std", hoverinfo="skip")
        fig.add_scatter(x=sigma, y=mean, name="ΔE mean", mode="lines+markers")
        fig.update_layout(title="Local energy ΔE(σ)", xaxis_title="noise level σ", yaxis_title="ΔE (train error %)")
    elif kind == "matrix":
        labels = [f"{ptext(n)} #{i}" for n, i in zip(result.get("names") or [""] * len(result["networks"]), result["networks"])]
        key = "geodesic" if "geodesic" in result["distances"] else next(iter(result["distances"]))
        fig.add_heatmap(z=result["distances"][key], x=labels, y=labels, colorscale="Viridis", name=ptext(key))
        fig.update_layout(title=f"{ptext(key)} distances", yaxis_autorange="reversed")
    elif kind == "plane":
        fig.add_contour(x=result["x"], y=result["y"], z=[pct(row) for row in result["train_error"]], colorscale="Viridis",
                        colorbar={"title": {"text": "train error %"}}, name="train error")
        points = result.get("points") or []
        if points:
            fig.add_scatter(x=[p["x"] for p in points], y=[p["y"] for p in points], mode="markers", name="networks",
                            marker={"size": 12, "color": "white", "line": {"color": "black", "width": 1}})
        fig.update_layout(title="Train error on the plane through three networks", yaxis_scaleanchor="x")
    elif kind == "slice":
        fig = _slice_figure(result, pct)
    elif kind == "distance":
        fig = _distance_figure(result)
    else:
        cols = columns(result, kind)
        numbers = {k: v[0] for k, v in cols.items() if isinstance(v[0], (int, float)) and not isinstance(v[0], bool)
                   and k not in ("n_parameters", "network_id", "from", "chunks")}
        fig.add_bar(x=[ptext(k) for k in numbers], y=list(numbers.values()), name=ptext(kind))
        fig.update_layout(title=f"{ptext(kind)} result")
    return fig


def _slice_figure(result: dict, pct: Callable):
    """A slice's curves (1-D: error along the direction) or surface (2-D: train error as a contour, the
    network itself at the origin), as the dashboard's Slice view draws them."""
    import plotly.graph_objects as go

    fig = go.Figure()
    where = f"{result.get('mode', 'filter')} directions, seed {result.get('seed', 0)}"
    if result.get("dims", 1) == 1:
        for key, dash in (("train_error", "solid"), ("test_error", "dot")):
            if result.get(key) is not None:
                fig.add_scatter(x=result["x"], y=pct(result[key]), name=key.replace("_", " "), mode="lines+markers",
                                line={"dash": dash})
        fig.update_layout(title=f"Error along a random direction ({where})", xaxis_title="position along the direction",
                          yaxis_title="error (%)")
        return fig
    fig.add_contour(x=result["x"], y=result["y"], z=[pct(row) for row in result["train_error"]], colorscale="Viridis",
                    contours={"coloring": "heatmap"}, colorbar={"title": {"text": "train error %"}}, name="train error")
    fig.add_scatter(x=[0.0], y=[0.0], mode="markers", name="the network",
                    marker={"size": 12, "color": "white", "line": {"color": "black", "width": 1}})
    fig.update_layout(title=f"Train error on a 2-D slice ({where})", xaxis_title="direction 1",
                      yaxis_title="direction 2", yaxis_scaleanchor="x")
    return fig


# a distance result's quantities by scale: per-parameter distances (~0.1), the geodesic length (~10), fractions
DISTANCE_PANELS = (
    ("per parameter ‖θA − θB‖ / √N", ("raw", "aligned", "normalized", "normalized_aligned")),
    ("geodesic length D", ("geodesic",)),
    ("fraction of differing signs", ("hamming", "hamming_unaligned")),
)


def _distance_figure(result: dict):
    """A distance result as bars in one panel per scale, each with its own y axis (a geodesic length of
    ~13 beside per-parameter distances of ~0.1 would flatten them to nothing on one axis)."""
    from plotly.subplots import make_subplots

    panels = [(title, [k for k in keys if isinstance(result.get(k), (int, float))]) for title, keys in DISTANCE_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=[t for t, _ in panels],
                        column_widths=[max(1, len(keys)) for _, keys in panels] or None)
    for col, (title, keys) in enumerate(panels, start=1):
        fig.add_bar(x=keys, y=[result[k] for k in keys], name=title, text=[f"{result[k]:.4g}" for k in keys],
                    textposition="auto", row=1, col=col)
    n = result.get("n_parameters")
    fig.update_layout(title="Distances between A and B" + (f" (N = {n:,} parameters)" if n else ""), showlegend=False)
    return fig


# ---- waiting with a progress bar ----------------------------------------------------------------


def _interactive() -> bool:
    """A person is watching: a terminal on stderr, or a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def progress_bar(job: dict, enabled: bool | None = None) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """(on_progress, close) for ``Client.wait``: a tqdm bar (the notebook widget in Jupyter) with the
    job's place in its queue or its ETA. ``enabled`` None: only when someone is watching."""
    if enabled is None:
        enabled = _interactive()
    if not enabled:
        return (lambda _job: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=f"job {job['id']} ({job['kind']})", unit="%",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def show(j: dict) -> None:
        bar.n = round(100 * (1.0 if j["status"] == "succeeded" else j["progress"]), 1)
        where = ""
        if j["status"] == "queued" and j.get("queue_position"):
            start = j.get("starts_in_seconds")
            where = f"#{j['queue_position']} in the queue" + (
                f", starts in ~{int(start) // 60}:{int(start) % 60:02d}" if start is not None else "") + " · "
        elif j["status"] == "running" and j.get("eta_seconds") is not None:
            where = f"ETA {int(j['eta_seconds']) // 60}:{int(j['eta_seconds']) % 60:02d} · "
        bar.set_postfix_str(where + (j.get("message") or "")[:60])
        bar.refresh()

    return show, bar.close


# ---- torch modules ------------------------------------------------------------------------------


def untrained(architecture: dict[str, Any], dataset: str = "digits", dataset_options: dict | None = None,
              seed: int | None = None):
    """A fresh (untrained) torch module of ``architecture`` for ``dataset``'s inputs and classes: train it
    anywhere, then ``client.upload(module.state_dict(), ...)`` with the same architecture and data set."""
    import torch

    from workers.landscape import data, nets

    spec = nets.normalize_spec(architecture)
    input_shape, n_classes = data.shape_of(dataset, data.normalize_options(dataset, dataset_options))
    if seed is not None:
        torch.manual_seed(seed)
    return nets.build(spec, input_shape, n_classes)


def model(client, network: int | dict):
    """Network ``network`` (id or its dict) as a torch module with its stored weights, in eval mode."""
    from workers.landscape import nets

    net = client.network(network["id"] if isinstance(network, dict) else network)
    module = untrained(net["architecture"], net["dataset"], net.get("dataset_options") or {})
    nets.load_weights(module, client.weights(net["id"]))
    return module.eval()


class NotebookMixin:
    """The methods Client gets from this module."""

    def frame(self, job_or_result: dict, kind: str | None = None):
        return frame(job_or_result, kind)

    def figure(self, job_or_result: dict, kind: str | None = None):
        return figure(job_or_result, kind)

    def model(self, network: int | dict):
        return model(self, network)

    @staticmethod
    def untrained(architecture: dict[str, Any], dataset: str = "digits", dataset_options: dict | None = None,
                  seed: int | None = None):
        return untrained(architecture, dataset, dataset_options, seed)
