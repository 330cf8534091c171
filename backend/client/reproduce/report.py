"""The HTML report (self-contained: plotly.js inlined once, no request leaves the file) and the markdown table.

Every number drawn comes from a stored job result: curves are the jobs' own, bars and points are the
summary's measures (whose items name their jobs), and each figure lists the jobs it was drawn from.
"""
from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from . import config as C
from .findings import BinaryResults, SettingResults
from .measure import fmt

SAMPLER_COLOR = {"rsgd": "#1f77b4", "sgd": "#2ca02c", "adv": "#d62728"}
PAIR_COLOR = {"RSGD-RSGD": "#1f77b4", "RSGD-SGD": "#17becf", "SGD-SGD": "#2ca02c", "RSGD-ADV": "#9467bd",
              "SGD-ADV": "#ff7f0e", "ADV-ADV": "#d62728"}
PATH_COLOR = {"Linear": "#7f7f7f", "Linear-Aligned": "#bcbd22", "Geodesic-Aligned": "#1f77b4", "Single bend": "#2ca02c"}
STATUS_CLASS = {True: "ok", False: "bad", None: "na"}
STATUS_MARK = {True: "agrees", False: "DISAGREES", None: "not available"}


# ---- short texts -----------------------------------------------------------------------------------

def paper_short(f: dict[str, Any]) -> str:
    p = f.get("paper") or {}
    values = p.get("values")
    if values:
        unit = p.get("unit", "")
        unit = "" if unit == "per parameter" else unit
        shown = [f"{k} {v:g}{unit}" for k, v in values.items() if v is not None]
        if shown:
            return ", ".join(shown) + (f" [{p['setting']}]" if p.get("setting") else "")
    short = {"flatness": "RSGD flatter than SGD flatter than ADV",
             "flatness_vs_test_error": "test error grows with delta_E",
             "hessian": "not in the paper [ours: the local energy's order, RSGD < SGD < ADV, in the canonical trace]",
             "test_error": "RSGD <= SGD <= ADV",
             "binary_barriers": "low barriers; lower for wider nets [our reading]"}
    return short.get(f["id"].split("/")[0], p.get("text", "")[:80])


def measured_short(f: dict[str, Any]) -> str:
    parts = []
    for label, m in (f.get("measured") or {}).items():
        if isinstance(m, dict) and m.get("kind") == "spearman":
            parts.append(f"Spearman {m['value']:.2f} (n={m['n']})" if m["value"] is not None else "Spearman -")
        elif isinstance(m, dict) and m.get("n"):
            if m.get("unit") == "per parameter":  # said once in the paper's column
                m = {**m, "unit": ""}
                parts.append(f"{label} {fmt(m, 4)}")
            else:
                parts.append(f"{label} {fmt(m, 2)}")
    return "; ".join(parts) or "-"


def table_markdown(findings: list[dict[str, Any]]) -> str:
    rows = ["| Finding | Setting | Paper (Pittorino et al. 2022) | Measured (mean ± std, n) | Agrees |",
            "|---|---|---|---|---|"]
    done_settings = set()
    for f in findings:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        if f.get("setting_unavailable"):  # one row for a setting that could not run
            if f["setting"] not in done_settings:
                done_settings.add(f["setting"])
                rows.append(f"| All findings | {cell(f['setting'])} | - | {cell(f['status'])} | n/a |")
            continue
        agrees = {True: "yes", False: "**no**", None: "n/a"}[f["agrees"]]
        measured = measured_short(f)
        if f["agrees"] is None:
            measured = f["status"] if measured == "-" else f"{measured} — {f['status']}"
        rows.append(f"| {cell(f['title'])} | {cell(f['setting'])} | {cell(paper_short(f))} | {cell(measured)} "
                    f"| {agrees} |")
    return "\n".join(rows)


# ---- figures ---------------------------------------------------------------------------------------

class Figures:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []  # {"id", "title", "sources", "html"}

    def add(self, fid: str, title: str, fig: go.Figure, sources: list[int], caption: str = "",
            height: int = 420) -> None:
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 80, "b": 50}, title={"text": title},
                          template="plotly_white")
        body = fig.to_html(full_html=False, include_plotlyjs=False, default_height=f"{height}px",
                           config={"displaylogo": False, "responsive": True})
        self.items.append({"id": fid, "title": title, "sources": sorted(set(sources)), "caption": caption,
                           "html": body})


def _bars(fig, labels: list[str], measures: dict[str, dict[str, Any]], name: str, color: str | None,
          row: int | None = None, col: int | None = None) -> list[int]:
    xs, ys, es, src = [], [], [], []
    for label in labels:
        m = measures.get(label)
        if m and m.get("n"):
            xs.append(label)
            ys.append(m["mean"])
            es.append(m["std"])
            src += m["sources"]
    trace = go.Bar(x=xs, y=ys, error_y={"type": "data", "array": es}, name=name, marker_color=color,
                   hovertemplate="%{x}: %{y:.4g} ± %{error_y.array:.3g}<extra>" + html.escape(name) + "</extra>")
    if row is not None:
        fig.add_trace(trace, row=row, col=col)
    else:
        fig.add_trace(trace)
    return src


def setting_figures(figs: Figures, r: SettingResults, by_id: dict[str, dict[str, Any]]) -> None:
    s = r.setting
    key = s.key
    # flatness curves and flatness vs test error (Fig. 1)
    if r.flatness:
        fig = go.Figure()
        src = []
        for n in r.nets:
            job = r.flatness.get(n.id)
            if job is None:
                continue
            res = job["result"]
            fig.add_trace(go.Scatter(x=res["sigma"], y=[100 * v for v in res["delta_mean"]],
                                     error_y={"type": "data", "array": [100 * v for v in res["delta_std"]],
                                              "thickness": 1},
                                     mode="lines+markers", name=f"{C.LABEL[n.group]} seed {n.seed} (net {n.id})",
                                     legendgroup=n.group, line={"color": SAMPLER_COLOR[n.group]}, meta=job["id"],
                                     hovertemplate="sigma %{x}: %{y:.3f}%<extra>job %{meta}</extra>"))
            src.append(job["id"])
        fig.update_xaxes(title_text="sigma (relative noise on the weights)")
        fig.update_yaxes(title_text="delta_E: train error increase (%)")
        figs.add(f"flatness-curves/{key}", f"{s.title}: local energy (Fig. 1, left)", fig, src,
                 "Mean ± std over the noise draws, one curve per minimizer.")
        f = by_id.get(f"flatness_vs_test_error/{key}")
        corr = (f or {}).get("measured", {}).get("spearman")
        if corr and corr["x"]["n"]:
            fig = go.Figure()
            group_of = {n.job["id"]: n.group for n in r.nets}
            for g in C.SAMPLERS:
                xs, ys, txt = [], [], []
                for xi, yi in zip(corr["x"]["items"], corr["y"]["items"]):
                    if group_of.get(yi["job"]) == g:
                        xs.append(xi["value"])
                        ys.append(yi["value"])
                        txt.append(f"flatness job {xi['job']}, train job {yi['job']}")
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=C.LABEL[g], text=txt,
                                         marker={"size": 10, "color": SAMPLER_COLOR[g]},
                                         hovertemplate="delta_E %{x:.3f}%, test error %{y:.2f}%<br>%{text}"
                                                       "<extra></extra>"))
            fig.update_xaxes(title_text="delta_E at the largest sigma (%)")
            fig.update_yaxes(title_text="test error (%)")
            rho = corr["value"]
            figs.add(f"flatness-vs-test/{key}", f"{s.title}: flatness vs test error (Fig. 1, right); Spearman "
                     f"{'-' if rho is None else f'{rho:.2f}'}", fig, corr["sources"])
    # test error by sampler
    f = by_id.get(f"test_error/{key}")
    if f and f["measured"]:
        fig = go.Figure()
        src = _bars(fig, ["RSGD", "SGD", "ADV"], f["measured"], "this run", "#1f77b4")
        if f["paper"].get("values"):
            v = f["paper"]["values"]
            fig.add_trace(go.Scatter(x=list(v), y=list(v.values()), mode="markers", name="paper",
                                     marker={"symbol": "diamond", "size": 12, "color": "black"}))
        fig.update_yaxes(title_text="test error (%)")
        figs.add(f"test-error/{key}", f"{s.title}: test error by sampler", fig, src, height=360)
    # error along paths (Fig. 2)
    if r.paths:
        fig = make_subplots(rows=1, cols=3, subplot_titles=[C.PATH_LABEL[t] for t in C.PATH_TYPES], shared_yaxes=True)
        src, shown = [], set()
        for (i, j, t), job in sorted(r.paths.items()):
            label = C.pair_label(r.pair_type(i, j))
            res = job["result"]
            fig.add_trace(go.Scatter(x=res["t"], y=[100 * v for v in res["train_error"]], mode="lines",
                                     name=label, legendgroup=label, showlegend=label not in shown,
                                     line={"color": PAIR_COLOR[label], "width": 1.5}, opacity=0.75, meta=job["id"],
                                     hovertemplate=f"{label} nets {r.nets[i].id}-{r.nets[j].id}: "
                                                   "t %{x:.2f}, %{y:.2f}%<extra>job %{meta}</extra>"),
                          row=1, col=C.PATH_TYPES.index(t) + 1)
            shown.add(label)
            src.append(job["id"])
        fig.update_xaxes(title_text="t")
        fig.update_yaxes(title_text="train error (%)", row=1, col=1)
        figs.add(f"paths/{key}", f"{s.title}: train error along paths (Fig. 2)", fig, src,
                 "One curve per pair of minimizers, coloured by pair type.", height=440)
        f = by_id.get(f"barrier_order/{key}")
        if f and f.get("detail"):
            fig = go.Figure()
            src = []
            labels = [C.pair_label(p) for p in C.PAIR_TYPES]
            for path_label, measures in f["detail"].items():
                src += _bars(fig, labels, measures, path_label, PATH_COLOR.get(path_label))
            b = by_id.get(f"bend/{key}")
            if b and b.get("detail"):
                per_type: dict[str, list] = {}
                for name, m in b["detail"].items():
                    per_type.setdefault(name.split(" (")[0], []).append(m)
                xs = [k for k in labels if k in per_type]
                ys = [sum(m["mean"] for m in per_type[k]) / len(per_type[k]) for k in xs]
                for k in xs:
                    src += [s_ for m in per_type[k] for s_ in m["sources"]]
                fig.add_trace(go.Bar(x=xs, y=ys, name="Single bend", marker_color=PATH_COLOR["Single bend"]))
            fig.update_layout(barmode="group")
            fig.update_yaxes(title_text="barrier: max train error along the path (%)")
            figs.add(f"barriers/{key}", f"{s.title}: barriers by pair type and path (Fig. 2)", fig, src,
                     "Mean ± std over the pairs of each type.")
        f = by_id.get(f"alignment_distances/{key}")
        if f and f.get("detail"):
            fig = go.Figure()
            src = []
            labels = [C.pair_label(p) for p in C.PAIR_TYPES]
            colors = {"Raw": "#7f7f7f", "Aligned": "#bcbd22", "Normalised": "#ff7f0e", "Normalised-Aligned": "#1f77b4"}
            for dist_label, measures in f["detail"].items():
                src += _bars(fig, labels, measures, dist_label, colors.get(dist_label))
            fig.update_layout(barmode="group")
            fig.update_yaxes(title_text="distance per parameter")
            figs.add(f"distances/{key}", f"{s.title}: distances by pair type (Fig. 5)", fig, src,
                     "||a - b|| / sqrt(N); mean ± std over the pairs of each type.")
    # single-bend paths (Fig. 3)
    if r.bends:
        n = len(r.bends)
        fig = make_subplots(rows=1, cols=n, subplot_titles=[
            f"{C.pair_label(r.pair_type(i, j))} ({r.nets[i].id}-{r.nets[j].id})" for i, j in sorted(r.bends)],
            shared_yaxes=True)
        src = []
        for c, (i, j) in enumerate(sorted(r.bends), start=1):
            for label, job, dash in (("Single bend", r.bends[(i, j)], "solid"),
                                     ("Geodesic-Aligned", r.paths.get((i, j, "geodesic")), "dot")):
                if job is None:
                    continue
                res = job["result"]
                for split, width in (("train", 2), ("test", 1)):
                    fig.add_trace(go.Scatter(x=res["t"], y=[100 * v for v in res[f"{split}_error"]], mode="lines",
                                             name=f"{label}, {split}", legendgroup=f"{label}{split}", showlegend=c == 1,
                                             line={"color": PATH_COLOR[label], "width": width,
                                                   "dash": dash if split == "train" else "dashdot"}, meta=job["id"],
                                             hovertemplate="t %{x:.2f}: %{y:.2f}%<extra>job %{meta}</extra>"),
                                  row=1, col=c)
                src.append(job["id"])
        fig.update_yaxes(title_text="error (%)", row=1, col=1)
        figs.add(f"bends/{key}", f"{s.title}: single-bend vs geodesic paths (Fig. 3)", fig, src, height=380)


def binary_figures(figs: Figures, r: BinaryResults, by_id: dict[str, dict[str, Any]]) -> None:
    f = by_id.get(f"binary_barriers/{r.setting.key}")
    if not f or not f.get("measured"):
        return
    fig = make_subplots(rows=1, cols=2, subplot_titles=["barrier vs K", "train error along Hamming paths"])
    src = []
    ks = [k for k in r.setting.widths if f["measured"][f"K={k}"]["n"]]
    fig.add_trace(go.Scatter(x=ks, y=[f["measured"][f"K={k}"]["mean"] for k in ks], mode="lines+markers",
                             error_y={"type": "data", "array": [f["measured"][f"K={k}"]["std"] for k in ks]},
                             name="barrier (mean ± std)", line={"color": "black"}), row=1, col=1)
    for k in ks:
        src += f["measured"][f"K={k}"]["sources"]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for (w, i, j), job in sorted(r.paths.items()):
        res = job["result"]
        color = palette[r.setting.widths.index(w) % len(palette)]
        fig.add_trace(go.Scatter(x=res["t"], y=[100 * v for v in res["train_error"]], mode="lines", name=f"K={w}",
                                 legendgroup=f"K{w}", showlegend=(i, j) == (0, 1), line={"color": color},
                                 meta=job["id"],
                                 hovertemplate="t %{x:.2f}: %{y:.2f}%<extra>job %{meta}</extra>"), row=1, col=2)
        src.append(job["id"])
    fig.update_xaxes(title_text="K (hidden units)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="t", row=1, col=2)
    fig.update_yaxes(title_text="train error (%)")
    figs.add(f"binary/{r.setting.key}", "Committee machine on HMM data: Hamming-path barriers", fig, src, height=400)


# ---- the page --------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
  padding:1em 2em;color:#222}
h1{font-size:1.6em} h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left} th{background:#f5f5f5}
.ok{background:#e7f6e7} .bad{background:#fde8e8} .na{background:#f3f3f3;color:#666}
.src{font-size:.8em;color:#666;word-break:break-all} .fig{margin:1.5em 0;border:1px solid #eee;padding:.5em}
code{background:#f5f5f5;padding:0 .2em} pre{white-space:pre-wrap;word-break:break-word;font-size:.8em}
table.findings{table-layout:fixed} table.findings col.w1{width:12%} table.findings col.w2{width:10%}
table.findings col.w3{width:22%} table.findings col.w4{width:24%} table.findings col.w5{width:12%}
ul{margin:0;padding-left:1.1em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _sources(ids: list[int], limit: int = 40) -> str:
    ids = sorted(set(ids))
    shown = ", ".join(map(str, ids[:limit]))
    return f"jobs {shown}{f' … ({len(ids)} in all)' if len(ids) > limit else ''}" if ids else "no jobs"


def _measure_rows(f: dict[str, Any]) -> str:
    rows = []
    for label, m in (f.get("measured") or {}).items():
        if isinstance(m, dict) and m.get("kind") == "spearman":
            value = "-" if m["value"] is None else f"{m['value']:.3f}"
            rows.append(f"<li>{_esc(label)}: {value} over {m['n']} networks "
                        f"<span class='src'>({_sources(m['sources'])})</span></li>")
        elif isinstance(m, dict):
            digits = 4 if (m.get("unit") or "") == "per parameter" else 2
            rows.append(f"<li>{_esc(label)}: {_esc(fmt(m, digits))} "
                        f"<span class='src'>({_sources(m['sources'])})</span></li>")
    return "<ul>" + "".join(rows) + "</ul>" if rows else "-"


def render(summary: dict[str, Any], figures: Figures) -> str:
    findings = summary["findings"]
    head = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Toroid: reproducing "Deep Networks on Toroids" ({_esc(summary['scale'])})</title>
<style>{CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head><body>"""
    counts = summary["counts"]
    jobs = summary["jobs"]
    parts = [head, f"""<h1>Reproducing “Deep Networks on Toroids” (Pittorino et al., ICML 2022)</h1>
<p>Scale <b>{_esc(summary['scale'])}</b>, run through the Toroid service at <code>{_esc(summary['service'])}</code>
(science version {_esc(summary['science_version'])}) from {_esc(summary['started'])} to {_esc(summary['finished'])}
({summary['duration_s']:.0f} s). Jobs: {jobs['planned']} planned, {jobs['succeeded']} succeeded
({jobs['cached']} answered from the cache), {jobs['failed']} failed, {jobs['skipped']} skipped.
Findings: <b>{counts['agrees']} agree</b>, <b>{counts['disagrees']} disagree</b>,
{counts['not available']} not available.</p>
<p>Every number below comes from a stored job result; the summary (<code>summary.json</code>) names, for each one,
the job ids and result keys it was read from. Networks are tagged <code>reproduce</code> and
<code>{_esc(summary['scale'])}</code> and can be explored in the dashboard.</p>"""]
    if summary["missing_features"]:
        parts.append("<h2>Not available on this service</h2><ul>" + "".join(
            f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in summary["missing_features"].items()) + "</ul>")
    parts.append("<h2>Findings</h2><table class='findings'><colgroup><col class='w1'><col class='w2'><col class='w3'>"
                 "<col class='w4'><col class='w5'><col></colgroup><tr><th>Finding</th><th>Setting</th>"
                 "<th>Paper (Pittorino et al. 2022)</th><th>Measured</th><th>Rule checked</th><th>Verdict</th></tr>")
    grouped: set[str] = set()
    for f in findings:
        if f.get("setting_unavailable"):  # a setting that could not run: one row for all its findings
            if f["setting"] in grouped:
                continue
            grouped.add(f["setting"])
            same = [g for g in findings if g.get("setting_unavailable") and g["setting"] == f["setting"]]
            anchors = "".join(f"<span id='{_esc(g['id'])}'></span>" for g in same)
            parts.append(f"<tr class='na'><td>{anchors}<b>All findings</b><br><span class='src'>"
                         f"{_esc(', '.join(g['title'] for g in same))}</span></td><td>{_esc(f['setting'])}</td>"
                         f"<td colspan='3'>-</td><td><b>{_esc(f['status'])}</b></td></tr>")
            continue
        paper = f.get("paper") or {}
        paper_txt = _esc(paper.get("text", ""))
        if paper.get("values"):
            unit = paper.get("unit", "")
            paper_txt += "<br><i>values: " + _esc(", ".join(f"{k} {v}" for k, v in paper["values"].items()
                                                            if v is not None)) + f" ({_esc(unit)})</i>"
        verdict = (f"<b>{_esc(f['status'])}</b>" if f["agrees"] is None else
                   f"<b>{STATUS_MARK[f['agrees']]}</b>: {_esc(f['verdict'])}")
        parts.append(f"<tr class='{STATUS_CLASS[f['agrees']]}' id='{_esc(f['id'])}'><td><b>{_esc(f['title'])}</b><br>"
                     f"<span class='src'>{_esc(f['id'])} · {_esc(f['figure'])}</span></td><td>{_esc(f['setting'])}</td>"
                     f"<td>{paper_txt}</td><td>{_measure_rows(f)}</td><td>{_esc(f['rule'])}</td>"
                     f"<td>{verdict}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for item in figures.items:
        parts.append(f"<div class='fig' id='fig-{_esc(item['id'])}'>{item['html']}"
                     f"<p class='src'>{_esc(item['caption'])} Drawn from {_sources(item['sources'], 60)}.</p></div>")
    parts.append("<h2>Networks</h2><table><tr><th>network</th><th>name</th><th>setting</th><th>sampler</th>"
                 "<th>train error</th><th>test error</th><th>train job</th></tr>")
    for n in summary["networks"]:
        parts.append(f"<tr><td>{n['id']}</td><td>{_esc(n['name'])}</td><td>{_esc(n['setting'])}</td>"
                     f"<td>{_esc(n['group'])}</td><td>{100 * n['train_error']:.2f}%</td>"
                     f"<td>{100 * n['test_error']:.2f}%</td><td>{n['train_job']}</td></tr>")
    parts.append("</table>")
    if summary["failures"]:
        parts.append("<h2>Failed jobs</h2><ul>" + "".join(
            f"<li>{_esc(x['kind'])} {_esc(x['key'])} (job {x['job']}): {_esc(x['error'])}</li>"
            for x in summary["failures"])
            + "</ul>")
    plan = summary["plan"]
    lines = [json.dumps(x) for x in plan["settings"]] + ([json.dumps(plan["binary"])] if plan.get("binary") else [])
    parts.append("<h2>Configuration</h2><pre>" + _esc("\n\n".join(lines)) + "</pre>")
    parts.append("<h2>Markdown table</h2><pre>" + _esc(summary["table_markdown"]) + "</pre></body></html>")
    return "\n".join(parts)
