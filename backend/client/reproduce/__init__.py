"""`toroid reproduce`: rerun the paper's main experiments through the service's own REST API and write a
report comparing each finding with the paper (docs/science.md section 7).

    from backend.client import Client
    from backend.client.reproduce import run
    out = run(Client("http://127.0.0.1:8000"), scale="small", out="reproduce-report")
    print(out["report"], out["summary"])

Stages, all as ordinary jobs (so the networks and results show in the dashboard, and rerunning is
answered from the service's cache): train the minimizers (RSGD, SGD, ADV; a few seeds) of every
setting whose data set is available, and committee machines on HMM data; then flatness of every
minimizer, linear / linear-aligned / geodesic paths between pairs (their results carry the distances),
single-bend paths for some pairs, and Hamming paths between committee machines. The scales are in
``config``; the findings and their rules in ``findings``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import config as C
from .findings import BinaryResults, Net, SettingResults, binary_finding, guarded, setting_findings
from .report import Figures, binary_figures, render, setting_figures, table_markdown
from .runner import Runner, Spec

__all__ = ["run"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _get(client, path: str) -> Any:
    return client._call("GET", path)


def _pairs(n_groups: list[str], per_type: int | None, types: list[tuple[str, str]] | None = None,
           ) -> list[tuple[int, int]]:
    """Pairs (i < j) of minimizers, at most ``per_type`` of each pair type (all when None), of ``types`` only."""
    chosen: list[tuple[int, int]] = []
    count: dict[tuple[str, str], int] = {}
    for i, j in itertools.combinations(range(len(n_groups)), 2):
        t = C.pair_type(n_groups[i], n_groups[j])
        if types is not None and t not in types:
            continue
        if per_type is not None and count.get(t, 0) >= per_type:
            continue
        count[t] = count.get(t, 0) + 1
        chosen.append((i, j))
    return chosen


def run(client, scale: str = "small", out: str | Path = "reproduce-report", seeds: int | None = None,
        quiet: bool = False, architecture: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Run scale ``scale`` through ``client`` (a backend.client.Client); write report.html and summary.json
    into ``out``. ``architecture`` / ``dataset``: the comparison on your own network and data (config).
    Returns {"report", "summary", "counts", "table_markdown"}."""
    plan = C.get_scale(scale, seeds, architecture, dataset)
    out = _writable(Path(out))  # before any job: a report that cannot be written is known now
    started, t0 = _now(), time.monotonic()
    health = _get(client, "/health")
    datasets = {d["name"]: d for d in _get(client, "/datasets")}
    optimizers = {o["name"] for o in _get(client, "/optimizers")}
    offered = {a["kind"]: a for a in _get(client, "/architectures")}
    architectures = set(offered)
    if architecture is not None and offered.get(architecture["kind"], {}).get("binary"):
        raise ValueError(f"architecture {architecture['kind']!r} is binary: the paper's comparison of samplers runs on "
                         "real-valued networks (its binary experiment is the committee machine, run at every scale)")
    if dataset is not None and dataset not in datasets:
        raise ValueError(f"unknown data set {dataset!r}; this service offers: {', '.join(sorted(datasets))}")
    if architecture is not None and architecture["kind"] not in architectures:
        raise ValueError(f"unknown architecture kind {architecture['kind']!r}; this service offers: "
                         f"{', '.join(sorted(architectures))}")
    if dataset is not None and not datasets[dataset].get("available"):
        raise ValueError(f"data set {dataset!r} is not available here: "
                         f"{(datasets[dataset].get('reason') or 'its files are missing').split('; missing')[0]}")

    # ---- what can run here ----
    settings: list[SettingResults] = []
    for s in plan.settings:
        r = SettingResults(s)
        info = datasets.get(s.dataset)
        if info is None or not info.get("available"):
            reason = ((info or {}).get("reason") or "").split("; missing")[0]
            r.unavailable = reason or f"data set {s.dataset!r} is not offered by this service"
        elif s.architecture["kind"] not in architectures:
            r.unavailable = f"architecture {s.architecture['kind']!r} not offered by this service"
        elif any(g not in optimizers for g in C.SAMPLERS):
            r.unavailable = f"sampler(s) {[g for g in C.SAMPLERS if g not in optimizers]} not offered by this service"
        settings.append(r)
    binary = BinaryResults(plan.binary) if plan.binary else None
    if binary is not None:
        if not datasets.get("hmm", {}).get("available"):
            binary.unavailable = "data set 'hmm' not available here"
        elif "committee" not in architectures:
            binary.unavailable = "architecture 'committee' not offered by this service"
        elif binary.setting.optimizer not in optimizers:
            binary.unavailable = f"optimizer {binary.setting.optimizer!r} not offered by this service"
    live = [r for r in settings if not r.unavailable]
    # say now what cannot run (those rows of the report read "not available"), and stop when nothing can
    cannot = [f"{r.setting.key} ({r.setting.title}): {r.unavailable}" for r in settings if r.unavailable]
    if binary is not None and binary.unavailable:
        cannot.append(f"{binary.setting.key}: {binary.unavailable}")
    if not live and (binary is None or binary.unavailable):
        raise ValueError("nothing of this scale can run here: " + "; ".join(cannot))
    if not quiet:
        for line in cannot:
            print(f"reproduce: cannot run {line}", file=sys.stderr)

    # ---- planned jobs (for the progress bar) ----
    def stage2_count(r: SettingResults, groups: list[str]) -> int:
        s = r.setting
        return (2 * len(groups) + len(_pairs(groups, s.pairs_per_type)) * len(C.PATH_TYPES)
                + len(_pairs(groups, s.bend_pairs_per_type, s.bend_types)))

    planned_groups = {r.setting.key: [g for g in C.SAMPLERS for _ in range(r.setting.seeds)] for r in live}
    total = sum(len(g) + stage2_count(r, g) for r, g in zip(live, planned_groups.values()))
    if binary is not None and not binary.unavailable:
        b = binary.setting
        total += len(b.widths) * (b.seeds + b.seeds * (b.seeds - 1) // 2)
    # the user's own architecture is checked by the service at the first train job's submission (its size,
    # its nesting, its layers): refused there, nothing else is run
    runner = Runner(client, total=total, quiet=quiet, refuse_stage=architecture is not None)

    try:
        # ---- stage 1: train ----
        specs = []
        for r in live:
            for gi, g in enumerate(C.SAMPLERS):
                for k in range(r.setting.seeds):
                    seed = C.SEED_STRIDE * gi + k
                    specs.append(Spec(("train", r.setting.key, g, seed), "train",
                                      r.setting.train_params(g, seed, scale)))
        if binary is not None and not binary.unavailable:
            b = binary.setting
            for w in b.widths:
                for k in range(b.seeds):
                    specs.append(Spec(("train-binary", w, k), "train", b.train_params(w, k, scale)))
        done = runner.run(specs)
        for r in live:
            for gi, g in enumerate(C.SAMPLERS):
                for k in range(r.setting.seeds):
                    seed = C.SEED_STRIDE * gi + k
                    job = done.get(("train", r.setting.key, g, seed))
                    if job is not None:
                        r.nets.append(Net(r.setting.key, g, seed, job))
        if binary is not None and not binary.unavailable:
            for w in binary.setting.widths:
                binary.nets[w] = [Net(binary.setting.key, f"K{w}", k, job) for k in range(binary.setting.seeds)
                                  if (job := done.get(("train-binary", w, k))) is not None]

        # ---- stage 2: flatness, paths, bends, Hamming paths ----
        total2 = 0
        flat, hessians, paths_, bends, hamming = [], [], [], [], []
        for r in live:
            s = r.setting
            groups = [n.group for n in r.nets]
            for n in r.nets:
                flat.append(Spec(("flat", s.key, n.id), "flatness",
                                 {"network": n.id, "sigmas": s.sigmas, "draws": s.draws}, feature="flatness"))
                hessians.append(Spec(("hessian", s.key, n.id), "hessian", {"network": n.id, **s.hessian},
                                     feature="hessian"))
            for i, j in _pairs(groups, s.pairs_per_type):
                for t in C.PATH_TYPES:
                    paths_.append(Spec(("path", s.key, i, j, t), "path",
                                       {"a": r.nets[i].id, "b": r.nets[j].id, "type": t, "points": s.points}))
            for i, j in _pairs(groups, s.bend_pairs_per_type, s.bend_types):
                bends.append(Spec(("bend", s.key, i, j), "path", {"a": r.nets[i].id, "b": r.nets[j].id, "type": "bend",
                                                                  "points": s.points, "variant": "geodesic"},
                                  feature="bend"))
            total2 += stage2_count(r, groups)
        if binary is not None and not binary.unavailable:
            b = binary.setting
            for w in b.widths:
                nets = binary.nets.get(w, [])
                for i, j in itertools.combinations(range(len(nets)), 2):
                    hamming.append(Spec(("hamming", w, i, j), "path",
                                        {"a": nets[i].id, "b": nets[j].id, "type": "hamming", "points": b.points,
                                         "orders": b.orders, "seed": 0}))
                total2 += len(nets) * (len(nets) - 1) // 2
        # the plan assumed every training succeeded: count what will not run as done
        planned2 = total - runner.done
        runner.done += max(planned2 - total2, 0)
        done = runner.run(flat + hessians + paths_ + hamming + bends)
        for key, job in done.items():
            if job is None:
                continue
            if key[0] == "flat":
                next(r for r in live if r.setting.key == key[1]).flatness[key[2]] = job
            elif key[0] == "hessian":
                next(r for r in live if r.setting.key == key[1]).hessian[key[2]] = job
            elif key[0] == "path":
                next(r for r in live if r.setting.key == key[1]).paths[key[2:]] = job
            elif key[0] == "bend":
                next(r for r in live if r.setting.key == key[1]).bends[key[2:]] = job
            elif key[0] == "hamming":
                binary.paths[key[1:]] = job
    finally:
        runner.close()

    # a feature every job of which failed is as unavailable as a missing one: say why
    missing = dict(runner.missing)
    for feature, kind_specs in (("flatness", flat), ("hessian", hessians), ("bend", bends)):
        if feature in missing or not kind_specs:
            continue
        if not any(done.get(sp.key) for sp in kind_specs):
            errors = [f["error"] for f in runner.failures if f["key"] in {str(sp.key) for sp in kind_specs}]
            first = errors[0] if errors else "?"
            missing[feature] = f"not available: all {len(kind_specs)} {feature} jobs failed ({first})"

    # ---- findings, figures, report ----
    findings: list[dict[str, Any]] = []
    for r in settings:
        findings += setting_findings(r, missing)
    if binary is not None:
        findings.append(guarded(f"binary_barriers/{binary.setting.key}", "committee machine, HMM",
                                lambda: binary_finding(binary)))
    by_id = {f["id"]: f for f in findings}
    figures = Figures()
    for r in live:
        setting_figures(figures, r, by_id)
    if binary is not None and not binary.unavailable:
        binary_figures(figures, binary, by_id)
    counts = {"agrees": sum(f["agrees"] is True for f in findings),
              "disagrees": sum(f["agrees"] is False for f in findings),
              "not available": sum(f["agrees"] is None for f in findings)}
    networks = []
    for r in live:
        for n in r.nets:
            networks.append(_net_row(n, r.setting.key))
    if binary is not None:
        for w, nets in binary.nets.items():
            networks += [_net_row(n, binary.setting.key) for n in nets]
    report_path, summary_path = out / "report.html", out / "summary.json"
    summary = {
        "title": "Toroid: reproducing Pittorino et al., 'Deep Networks on Toroids' (ICML 2022)",
        "scale": scale,
        "service": client.url,
        "science_version": health.get("science_version"),
        "started": started,
        "finished": _now(),
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": {"settings": [dataclasses.asdict(r.setting) | ({"unavailable": r.unavailable} if r.unavailable else {})
                              for r in settings],
                 "binary": (dataclasses.asdict(binary.setting) | ({"unavailable": binary.unavailable}
                                                                  if binary.unavailable else {})) if binary else None},
        "datasets": {k: {"available": v.get("available"), "reason": v.get("reason")} for k, v in datasets.items()},
        "jobs": {"planned": total, "succeeded": len(runner.jobs), "cached": runner.cached,
                 "failed": len(runner.failures), "skipped": runner.skipped},
        "missing_features": missing,
        "failures": runner.failures,
        "counts": counts,
        "findings": findings,
        "networks": networks,
        "figures": [{"id": f["id"], "title": f["title"], "sources": f["sources"]} for f in figures.items],
        "table_markdown": table_markdown(findings),
        "report": str(report_path),
        "summary": str(summary_path),
    }
    report_path.write_text(render(summary, figures), encoding="utf-8")
    summary_path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return {"report": str(report_path), "summary": str(summary_path), "counts": counts,
            "table_markdown": summary["table_markdown"], "duration_s": summary["duration_s"]}


def _writable(out: Path) -> Path:
    """``out``, made if needed, where the report can be written; ValueError naming why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".toroid-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write the report into {str(out)!r}: {exc.strerror or exc}") from None
    return out


def _net_row(n: Net, setting: str) -> dict[str, Any]:
    res = n.job["result"]
    return {"id": n.id, "name": n.job["params"].get("name"), "setting": setting, "group": n.group, "seed": n.seed,
            "train_job": n.job["id"], "train_error": res["train_error"], "test_error": res["test_error"]}
