"""The paper's findings (docs/science.md section 7), each measured from stored job results and compared.

A finding is a dict: "id", "title", "figure" (the paper's), "setting", "paper" {"text", "setting", "values",
"unit"}, "measured" {label: measure}, "rule" (the ordering checked, in words), "agrees" (True, False, or None
when it could not be measured), "status" ("agrees", "disagrees" or "not available: why") and "verdict"
(one sentence). Extra per-finding data for the figures go under "detail", again as measures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import config as C
from .measure import correlation, fmt, mean_of, measure


@dataclass
class Net:
    setting: str
    group: str  # sampler ("rsgd", "sgd", "adv"), or "K<width>" in the binary experiment
    seed: int
    job: dict[str, Any]  # the train job

    @property
    def id(self) -> int:
        return self.job["result"]["network_id"]


@dataclass
class SettingResults:
    setting: C.Setting
    nets: list[Net] = field(default_factory=list)
    flatness: dict[int, dict[str, Any]] = field(default_factory=dict)  # network id -> flatness job
    hessian: dict[int, dict[str, Any]] = field(default_factory=dict)  # network id -> hessian job
    paths: dict[tuple[int, int, str], dict[str, Any]] = field(default_factory=dict)  # (i, j, type) -> path job
    bends: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (i, j) -> bend path job
    unavailable: str | None = None  # why this setting was not run

    def pair_type(self, i: int, j: int) -> tuple[str, str]:
        return C.pair_type(self.nets[i].group, self.nets[j].group)


@dataclass
class BinaryResults:
    setting: C.BinarySetting
    nets: dict[int, list[Net]] = field(default_factory=dict)  # width -> nets
    paths: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict)  # (width, i, j) -> path job
    unavailable: str | None = None


def _finding(fid: str, title: str, figure: str, setting: str, paper: dict[str, Any], measured: dict[str, Any],
             rule: str, agrees: bool | None, verdict: str, why_not: str | None = None,
             detail: dict[str, Any] | None = None) -> dict[str, Any]:
    if agrees is None:
        why = why_not or "not enough results"
        status = why if why.startswith("not available") else f"not available: {why}"
    else:
        status = "agrees" if agrees else "disagrees"
    out = {"id": fid, "title": title, "figure": figure, "setting": setting, "paper": paper, "measured": measured,
           "rule": rule, "agrees": agrees, "status": status, "verdict": verdict if agrees is not None else status}
    if detail:
        out["detail"] = detail
    return out


def _chain(values: list[tuple[str, float | None]], strict: bool = True) -> tuple[bool | None, str]:
    """Whether the values increase along the list; and the chain in words with the measured means."""
    if any(v is None for _, v in values):
        return None, ""
    ok = all((a < b) if strict else (a <= b) for (_, a), (_, b) in zip(values, values[1:]))
    words = (" < " if strict else " <= ").join(f"{label} {v:.4g}" for label, v in values)
    return ok, words


# ---- real-valued settings ---------------------------------------------------------------------------

def error_order_finding(r: SettingResults) -> dict[str, Any]:
    s = r.setting
    measured = {C.LABEL[g]: measure([(n.job, "test_error") for n in r.nets if n.group == g], 100, "%")
                for g in C.SAMPLERS}
    known = C.PAPER_TEST_ERROR.get((s.architecture["kind"], s.dataset))
    if known:
        paper = {"text": f"{s.architecture['kind'].upper()} {s.dataset}: RSGD / SGD / ADV = "
                         f"{known[0]} / {known[1]} / {known[2]} % test error (the paper's network and full data set: "
                         "the ordering is what a smaller run can compare)",
                 "setting": f"{s.architecture['kind']} {s.dataset}",
                 "values": dict(zip(("RSGD", "SGD", "ADV"), known)), "unit": "%"}
    else:
        paper = {"text": "The paper reports no test error for this setting; compared: the ordering only "
                         "(RSGD <= SGD <= ADV, 'test error follows flatness'). " + C.PAPER_TEST_ERROR_TEXT + ".",
                 "setting": "MLP / LeNet / VGG16 on MNIST, Fashion-MNIST, CIFAR-10", "values": None, "unit": "%"}
    r_, s_, a_ = (mean_of(measured[k]) for k in ("RSGD", "SGD", "ADV"))
    agrees, words = None, ""
    if None not in (r_, s_, a_):
        agrees = r_ <= s_ <= a_ and r_ < a_
        words = f"RSGD {r_:.2f}%, SGD {s_:.2f}%, ADV {a_:.2f}%"
    verdict = (f"Test error follows the paper's order RSGD <= SGD <= ADV: {words}." if agrees else
               f"Test error does not follow the paper's order RSGD <= SGD <= ADV: {words}.")
    return _finding(f"test_error/{s.key}", "Test error by sampler", "Fig. 1 / Table", s.title, paper, measured,
                    "mean test error RSGD <= SGD <= ADV, and RSGD < ADV", agrees, verdict,
                    "no trained networks for some sampler")


def _largest_sigma_key(job: dict[str, Any]) -> str:
    sigma = job["result"]["sigma"]
    return f"delta_mean[{max(range(len(sigma)), key=lambda i: sigma[i])}]"


def flatness_finding(r: SettingResults, missing: str | None) -> dict[str, Any]:
    s = r.setting
    measured = {}
    for g in C.SAMPLERS:
        jobs = [r.flatness[n.id] for n in r.nets if n.group == g and n.id in r.flatness]
        measured[C.LABEL[g]] = measure([(j, _largest_sigma_key(j)) for j in jobs], 100,
                                       "% (train error increase at the largest sigma)")
    largest = max(s.sigmas) if s.sigmas else None
    paper = {"text": "Local energy delta_E(sigma) (multiplicative Gaussian noise on the weights, mean of 100 draws, "
                     "sigma up to 0.5 for MLPs, 0.25 for LeNet): RSGD flatter than SGD flatter than ADV in every "
                     "setting. The paper gives no delta_E numbers (read from its Fig. 1 as an ordering).",
             "setting": "every setting of the paper", "values": None, "unit": "%"}
    agrees, words = _chain([(k, mean_of(measured[k])) for k in ("RSGD", "SGD", "ADV")])
    why = missing or "no flatness results for some sampler"
    if missing:
        agrees = None
    verdict = (f"Flatness order as in the paper (delta_E at sigma = {largest}): {words}." if agrees else
               f"Flatness order differs from the paper's RSGD < SGD < ADV (delta_E at sigma = {largest}): {words}.")
    return _finding(f"flatness/{s.key}", "Flatness: local energy at the largest sigma", "Fig. 1 (left)", s.title,
                    paper, measured, "mean delta_E(RSGD) < delta_E(SGD) < delta_E(ADV) at the largest sigma",
                    agrees, verdict, why)


def hessian_finding(r: SettingResults, missing: str | None) -> dict[str, Any]:
    """The Hessian's top eigenvalue and trace by sampler, as stored and in canonical coordinates, beside the local
    energy: not in the paper (Dinh et al. 2017: the raw numbers change under the rescalings it removes)."""
    s = r.setting
    measured = {}
    for g in C.SAMPLERS:
        jobs = [r.hessian[n.id] for n in r.nets if n.group == g and n.id in r.hessian]
        measured[f"{C.LABEL[g]} top eigenvalue (raw)"] = measure([(j, "raw.eigenvalues[0]") for j in jobs])
        measured[f"{C.LABEL[g]} top eigenvalue (canonical)"] = measure([(j, "canonical.eigenvalues[0]") for j in jobs])
        measured[f"{C.LABEL[g]} trace (canonical)"] = measure([(j, "canonical.trace") for j in jobs])
    paper = {"text": "Not in the paper, which measures flatness by the local energy only. Sharpness as the literature "
                     "measures it (top Hessian eigenvalue and trace of the training loss: Keskar et al. 2017, PyHessian); "
                     "Dinh et al. (2017) showed that the raw numbers change under the rescalings the paper removes, the "
                     "canonical ones (tangent space of the spheres) do not. [ours] Expected: the local energy's order, "
                     "RSGD < SGD < ADV, in the canonical trace (the local energy's isotropic noise averages the "
                     "curvature over all directions, as the trace does; the top eigenvalue is one direction).",
             "setting": "not in the paper", "values": None, "unit": ""}
    agrees, words = _chain([(k, mean_of(measured[f"{k} trace (canonical)"])) for k in ("RSGD", "SGD", "ADV")])
    why = missing or "no hessian results for some sampler"
    if missing:
        agrees = None
    verdict = (f"Canonical sharpness in the local energy's order (Hessian trace): {words}." if agrees else
               f"Canonical sharpness not in the order RSGD < SGD < ADV (Hessian trace): {words}.")
    return _finding(f"hessian/{s.key}", "Sharpness: top Hessian eigenvalue, raw and canonical", "(not in the paper)",
                    s.title, paper, measured, "mean canonical Hessian trace RSGD < SGD < ADV [ours]", agrees, verdict, why)


def flatness_vs_test_finding(r: SettingResults, missing: str | None) -> dict[str, Any]:
    s = r.setting
    nets = [n for n in r.nets if n.id in r.flatness]
    x = measure([(r.flatness[n.id], _largest_sigma_key(r.flatness[n.id])) for n in nets], 100,
                "% (delta_E at the largest sigma)")
    y = measure([(n.job, "test_error") for n in nets], 100, "%")
    corr = correlation(x, y)
    rho = corr["value"]
    paper = {"text": "Flatter minimizers generalise better: test error grows with delta_E across samplers "
                     "(Fig. 1, right). No correlation coefficient is given.", "setting": "every setting of the paper",
             "values": None, "unit": "Spearman rank correlation"}
    agrees = None if (missing or rho is None) else rho > 0
    why = missing or "fewer than 3 networks with flatness results, or constant values"
    verdict = (f"Flatness and test error correlate positively (Spearman {rho:.2f} over {x['n']} networks)."
               if agrees else f"Flatness and test error do not correlate positively (Spearman "
                              f"{rho if rho is None else round(rho, 2)} over {x['n']} networks).")
    return _finding(f"flatness_vs_test_error/{s.key}", "Flatness vs test error", "Fig. 1 (right)", s.title, paper,
                    {"spearman": corr}, "Spearman correlation of delta_E (largest sigma) and test error > 0",
                    agrees, verdict, why)


def _pairs_of_type(r: SettingResults, pair: tuple[str, str], type: str) -> list[dict[str, Any]]:
    return [job for (i, j, t), job in sorted(r.paths.items()) if t == type and r.pair_type(i, j) == pair]


def barrier_order_finding(r: SettingResults) -> dict[str, Any]:
    s = r.setting
    measured = {C.pair_label(p): measure([(j, "barrier") for j in _pairs_of_type(r, p, "geodesic")], 100, "%")
                for p in C.PAIR_TYPES}
    detail = {C.PATH_LABEL[t]: {C.pair_label(p): measure([(j, "barrier") for j in _pairs_of_type(r, p, t)], 100, "%")
                                for p in C.PAIR_TYPES} for t in C.PATH_TYPES}
    paper = {"text": "Geodesic-aligned barriers (max train error along the path, %), MLP on MNIST: about 0 for "
                     "pairs without ADV, ADV-ADV about 17; VGG16: RSGD-RSGD about 16, other pairs 60-85. Order: "
                     "RSGD-RSGD < RSGD-SGD, SGD-SGD < pairs with ADV.", "setting": "MLP MNIST",
             "values": {C.pair_label(p): v for p, v in C.PAPER_BARRIER_MLP_MNIST.items()}, "unit": "%"}
    base = mean_of(measured["RSGD-RSGD"])
    mid = [mean_of(measured[k]) for k in ("RSGD-SGD", "SGD-SGD") if mean_of(measured[k]) is not None]
    adv = [mean_of(measured[k]) for k in ("RSGD-ADV", "SGD-ADV", "ADV-ADV") if mean_of(measured[k]) is not None]
    agrees = None
    if (base is not None or mid) and adv:
        ok = True
        if base is not None and mid:
            ok &= base <= min(mid)
        ok &= max(([base] if base is not None else []) + mid) < min(adv)
        agrees = ok
    words = ", ".join(f"{k} {fmt(m)}" for k, m in measured.items() if m["n"])
    verdict = (f"Barrier order as in the paper: {words}." if agrees else
               f"Barrier order differs from the paper's (RSGD-RSGD <= RSGD-SGD, SGD-SGD < pairs with ADV): {words}.")
    return _finding(f"barrier_order/{s.key}", "Geodesic-aligned barriers by pair type", "Fig. 2", s.title, paper,
                    measured, "mean barrier RSGD-RSGD <= RSGD-SGD and SGD-SGD, all of them < every pair type with ADV",
                    agrees, verdict, "no pairs of some kinds (needs at least 2 seeds per sampler)", detail)


def alignment_barrier_finding(r: SettingResults) -> dict[str, Any]:
    s = r.setting
    measured = {C.PATH_LABEL[t]: measure([(job, "barrier") for (i, j, tt), job in sorted(r.paths.items()) if tt == t],
                                         100, "%") for t in C.PATH_TYPES}
    paper = {"text": "Removing the symmetries lowers barriers: LeNet Fashion-MNIST, RSGD-RSGD barrier 48% on the raw "
                     "linear path, 7-8% once aligned (Linear-Aligned and Geodesic-Aligned).",
             "setting": "LeNet Fashion-MNIST, RSGD-RSGD",
             "values": {"Linear": C.PAPER_ALIGNMENT_BARRIER["linear"],
                        "Linear-Aligned": C.PAPER_ALIGNMENT_BARRIER["aligned"],
                        "Geodesic-Aligned": C.PAPER_ALIGNMENT_BARRIER["aligned"]}, "unit": "%"}
    lin, lal, geo = (mean_of(measured[C.PATH_LABEL[t]]) for t in C.PATH_TYPES)
    agrees = None if None in (lin, lal, geo) else (lal < lin and geo < lin)
    words = ", ".join(f"{k} {fmt(m)}" for k, m in measured.items())
    verdict = (f"Aligned paths have lower barriers than the raw linear path: {words}." if agrees else
               f"Aligned paths do not have lower barriers than the raw linear path: {words}.")
    return _finding(f"alignment_barriers/{s.key}", "Barriers: raw linear vs aligned paths (all pairs)", "Fig. 2",
                    s.title, paper, measured, "mean barrier Linear-Aligned < Linear and Geodesic-Aligned < Linear",
                    agrees, verdict, "no path results")


def _distance_jobs(r: SettingResults, pair: tuple[str, str]) -> list[dict[str, Any]]:
    # every path job of a pair carries the same distances; read them from the geodesic one
    return _pairs_of_type(r, pair, "geodesic")


def distance_order_finding(r: SettingResults) -> dict[str, Any]:
    s = r.setting
    measured = {C.pair_label(p): measure([(j, "distances.normalized_aligned") for j in _distance_jobs(r, p)], 1,
                                         "per parameter") for p in C.PAIR_TYPES}
    paper = {"text": "Per-parameter distances between normalised and aligned minimizers, MLP on MNIST: RSGD-RSGD 0.041 "
                     "< RSGD-SGD 0.047 < SGD-SGD 0.049 < pairs with ADV 0.051 (normalised, not aligned: about 0.055).",
             "setting": "MLP MNIST", "values": {C.pair_label(p): v for p, v in C.PAPER_DISTANCE_MLP_MNIST.items()},
             "unit": "per parameter"}
    chain = [(k, mean_of(measured[k])) for k in ("RSGD-RSGD", "RSGD-SGD", "SGD-SGD")]
    chain = [(k, v) for k, v in chain if v is not None]
    adv = [(k, mean_of(measured[k])) for k in ("RSGD-ADV", "SGD-ADV", "ADV-ADV") if mean_of(measured[k]) is not None]
    agrees, words = None, ""
    if chain and adv:
        low_adv = min(adv, key=lambda kv: kv[1])
        agrees, words = _chain(chain + [(f"lowest with ADV ({low_adv[0]})", low_adv[1])])
    verdict = (f"Distance order as in the paper: {words}." if agrees else
               f"Distance order differs from the paper's RSGD-RSGD < RSGD-SGD < SGD-SGD < pairs with ADV: {words}.")
    return _finding(f"distance_order/{s.key}", "Normalised-aligned distances by pair type", "Fig. 5", s.title, paper,
                    measured,
                    "mean normalised-aligned distance RSGD-RSGD < RSGD-SGD < SGD-SGD < every pair type with ADV",
                    agrees, verdict, "no pairs of some kinds (needs at least 2 seeds per sampler)")


def alignment_distance_finding(r: SettingResults) -> dict[str, Any]:
    s = r.setting
    jobs = [job for (i, j, t), job in sorted(r.paths.items()) if t == "geodesic"]
    measured = {C.DISTANCE_LABEL[k]: measure([(job, f"distances.{k}") for job in jobs], 1, "per parameter")
                for k in C.DISTANCE_KEYS}
    detail = {C.DISTANCE_LABEL[k]: {C.pair_label(p): measure([(j, f"distances.{k}") for j in _distance_jobs(r, p)], 1,
                                                                "per parameter") for p in C.PAIR_TYPES}
              for k in C.DISTANCE_KEYS}
    paper = {"text": "Aligning removes the permutation symmetry and brings minimizers closer: MLP MNIST, normalised "
                     "distances about 0.055 for every pair, normalised-aligned 0.041-0.051.", "setting": "MLP MNIST",
             "values": {"Normalised": C.PAPER_DISTANCE_UNALIGNED, "Normalised-Aligned": 0.046}, "unit": "per parameter",
             "note": "Normalised-Aligned: midpoint of the paper's range 0.041-0.051 over pair types"}
    agrees, bad = None, []
    types = [C.pair_label(p) for p in C.PAIR_TYPES if detail["Normalised"][C.pair_label(p)]["n"]]
    if types:
        for t in types:
            for plain, aligned in (("Raw", "Aligned"), ("Normalised", "Normalised-Aligned")):
                if not mean_of(detail[aligned][t]) < mean_of(detail[plain][t]):
                    bad.append(f"{t}: {aligned} {mean_of(detail[aligned][t]):.4g} >= "
                               f"{plain} {mean_of(detail[plain][t]):.4g}")
        agrees = not bad
    words = ", ".join(f"{k} {fmt(m, 4)}" for k, m in measured.items())
    verdict = (f"Aligned distances are smaller than unaligned ones for every pair type: {words}." if agrees else
               f"Aligned distances are not always smaller: {'; '.join(bad)}.")
    return _finding(f"alignment_distances/{s.key}", "Distances Raw / Aligned / Normalised / Normalised-Aligned",
                    "Fig. 5", s.title, paper, measured,
                    "for every pair type: mean Aligned < Raw and Normalised-Aligned < Normalised", agrees, verdict,
                    "no path results", detail)


def bend_finding(r: SettingResults, missing: str | None) -> dict[str, Any]:
    s = r.setting
    pairs = sorted(r.bends)
    bends = [r.bends[p] for p in pairs]
    geos = [r.paths[(i, j, "geodesic")] for i, j in pairs if (i, j, "geodesic") in r.paths]
    measured = {"Single bend barrier": measure([(j, "barrier") for j in bends], 100, "%"),
                "Single bend barrier excess": measure([(j, "barrier_excess") for j in bends], 100,
                                                      "pp (percentage points)"),
                "Geodesic-Aligned barrier (same pairs)": measure([(j, "barrier") for j in geos], 100, "%")}
    detail = {C.pair_label(r.pair_type(i, j)) + f" ({r.nets[i].id}, {r.nets[j].id})":
              measure([(r.bends[(i, j)], "barrier")], 100, "%") for i, j in pairs}
    paper = {"text": "Single-bend paths (a trained midpoint joined to both ends by geodesics): barriers under 0.1% for "
                     "VGG16, about 0 for most pairs once aligned.", "setting": "VGG16: under 0.1%",
             "values": {"Single bend barrier": 0.1}, "unit": "%"}
    excess = measured["Single bend barrier excess"]
    agrees = None if (missing or not excess["n"]) else excess["mean"] <= C.BEND_TOLERANCE
    why = missing or "no single-bend results"
    verdict = (f"Single-bend barriers are about 0 (mean excess {fmt(excess)} over the endpoints' train error, "
               f"tolerance {C.BEND_TOLERANCE} points; geodesic barrier of the same pairs "
               f"{fmt(measured['Geodesic-Aligned barrier (same pairs)'])})." if agrees else
               f"Single-bend barriers are not about 0: mean excess {fmt(excess)} over the endpoints' train error "
               f"(tolerance {C.BEND_TOLERANCE} points).")
    return _finding(f"bend/{s.key}", "Single-bend paths", "Fig. 3", s.title, paper, measured,
                    f"mean single-bend barrier excess <= {C.BEND_TOLERANCE} percentage points [ours: 'about 0']",
                    agrees, verdict, why, detail)


def setting_findings(r: SettingResults, missing: dict[str, str]) -> list[dict[str, Any]]:
    flat_missing = missing.get("flatness")
    bend_missing = missing.get("bend")
    steps = [("test_error", lambda: error_order_finding(r)),
             ("flatness", lambda: flatness_finding(r, flat_missing)),
             ("flatness_vs_test_error", lambda: flatness_vs_test_finding(r, flat_missing)),
             ("hessian", lambda: hessian_finding(r, missing.get("hessian"))),
             ("barrier_order", lambda: barrier_order_finding(r)),
             ("alignment_barriers", lambda: alignment_barrier_finding(r)),
             ("distance_order", lambda: distance_order_finding(r)),
             ("alignment_distances", lambda: alignment_distance_finding(r)),
             ("bend", lambda: bend_finding(r, bend_missing))]
    out = [guarded(f"{name}/{r.setting.key}", r.setting.title, step) for name, step in steps]
    if r.unavailable:  # the paper's side still shown; nothing measured
        for f in out:
            why = r.unavailable if r.unavailable.startswith("not available") else f"not available: {r.unavailable}"
            f.update(agrees=None, status=why, verdict=why, setting_unavailable=True)
    return out


def guarded(fid: str, setting: str, step) -> dict[str, Any]:
    """The finding ``step()`` computes, or one saying plainly why it could not be computed (e.g. a job result
    without the keys it needs)."""
    try:
        return step()
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return _finding(fid, fid.split("/")[0].replace("_", " "), "", setting, {"text": "", "unit": ""}, {}, "", None,
                        "", f"the results could not be read ({type(exc).__name__}: {exc})")


# ---- binary networks -------------------------------------------------------------------------------

def binary_finding(r: BinaryResults) -> dict[str, Any]:
    b = r.setting
    title = "Committee machine on Hidden Manifold data: Hamming barriers vs width K"
    setting = f"committee machine on HMM {b.dataset_options}"
    paper = {"text": "Binary networks show the same qualitative picture (the paper, section 1): minimizers joined by "
                     "low barriers, lower for wider networks. Section 7 gives no number for the committee machine "
                     "(the paper's: K = 101 hidden units on HMM data with D = 501, P = 1503); the expected trend "
                     "(barriers fall as K grows) is our reading.", "setting": "committee machine K = 101, HMM",
             "values": None, "unit": "%"}
    rule = "mean Hamming-path barrier at the largest K < at the smallest K"
    if r.unavailable:
        return _finding(f"binary_barriers/{b.key}", title, "binary networks", setting, paper, {}, rule, None, "",
                        r.unavailable)
    by_width = {k: [job for (w, i, j), job in sorted(r.paths.items()) if w == k] for k in b.widths}
    measured = {f"K={k}": measure([(job, "barrier") for job in by_width[k]], 100, "%") for k in b.widths}
    detail = {"Hamming distance": {f"K={k}": measure([(job, "distances.hamming") for job in by_width[k]], 1,
                                                     "fraction of weights") for k in b.widths},
              "Train error": {f"K={k}": measure([(n.job, "train_error") for n in r.nets.get(k, [])], 100, "%")
                              for k in b.widths},
              "Test error": {f"K={k}": measure([(n.job, "test_error") for n in r.nets.get(k, [])], 100, "%")
                             for k in b.widths}}
    means = [(f"K={k}", mean_of(measured[f"K={k}"])) for k in b.widths]
    present = [(k, v) for k, v in means if v is not None]
    agrees = None
    words = ", ".join(f"{k} {v:.2f}%" for k, v in present)
    if len(present) >= 2:
        agrees = present[-1][1] < present[0][1]
    monotone = all(a[1] >= c[1] for a, c in zip(present, present[1:]))
    verdict = (f"Hamming barriers fall from the narrowest to the widest committee ({words})"
               f"{'' if monotone else ', though not monotonically'}." if agrees else
               f"Hamming barriers do not fall from the narrowest to the widest committee: {words}.")
    return _finding(f"binary_barriers/{b.key}", title, "binary networks", setting, paper, measured, rule, agrees,
                    verdict, "fewer than two widths with results", detail)
