"""Calibration of the CAD findings and their operating points (docs/ARCHITECTURE.md,
"CAD findings"; method C of the design: Platt scaling, LUNA16 FROC operating points).

The findings are ranked by an evidence (log-odds of a hand-set score mixed with the
false-positive reduction network's logit). Here that evidence becomes a probability that
a finding is a nodule or a mass: Platt scaling, ``p = 1 / (1 + exp(-(a · evidence + b)))``,
fitted by maximum likelihood on the findings of **held-out** volumes (out-of-fold evidence:
each volume scored by a network that never saw it), each labelled by LUNA16 matching
against the volume's truth (hit 1, false positive 0; a second finding on a hit nodule or a
finding on an ignored mark is left out). Its honesty is measured by cross-fitting: each
fold's findings are scored by a calibration fitted on the other folds, and the expected
calibration error (ECE, 10 equal-width bins) and the reliability diagram are read off those.

The operating points are probability thresholds: the one for *r* false positives per scan
is the probability of the (r · scans + 1)-th most probable false positive of the held-out
volumes pooled (what :func:`lungviewer.cad.training.evaluate_real.froc` counts), so that at
the threshold about *r* false marks per scan are shown.

Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the operating points the viewer offers (false positives per scan)
RATES = (1, 2, 4)
BINS = 10


@dataclass
class FindingTable:
    """The findings of several volumes, one row each: its volume (``group``), evidence,
    LUNA16 label (1 hit, 0 false positive, −1 left out) and hit nodule (−1 none; unique
    across volumes)."""

    group: np.ndarray
    evidence: np.ndarray
    label: np.ndarray
    nodule: np.ndarray
    n_nodules: dict  # group -> nodules it holds

    def take(self, keep) -> FindingTable:
        keep = np.asarray(keep)
        gs = set(np.unique(self.group[keep]).tolist())
        return FindingTable(self.group[keep], self.evidence[keep], self.label[keep],
                            self.nodule[keep], {g: n for g, n in self.n_nodules.items()
                                                if g in gs})


def fit_platt(evidence: np.ndarray, label: np.ndarray, iters: int = 100,
              ridge: float = 1e-6) -> tuple[float, float]:
    """(a, b) of ``p = sigmoid(a · evidence + b)`` maximising the likelihood of ``label``
    (0/1), by Newton's method (a tiny ridge keeps it finite when the classes separate)."""
    x = np.asarray(evidence, float)
    y = np.asarray(label, float)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("calibration needs both hits and false positives")
    scale = max(float(np.std(x)), 1e-6)
    xs = x / scale
    w = np.array([1.0, 0.0])
    X = np.column_stack([xs, np.ones_like(xs)])
    for _ in range(iters):
        z = np.clip(X @ w, -60, 60)
        p = 1.0 / (1.0 + np.exp(-z))
        g = X.T @ (p - y) + ridge * w
        h = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0] / scale), float(w[1])


def platt(evidence: np.ndarray, a: float, b: float) -> np.ndarray:
    z = np.clip(a * np.asarray(evidence, float) + b, -60, 60)
    return 1.0 / (1.0 + np.exp(-z))


def reliability(p: np.ndarray, label: np.ndarray, bins: int = BINS) -> list[dict]:
    """The reliability diagram: per equal-width probability bin its count, mean predicted
    probability and observed share of hits (bins without findings are left out)."""
    p = np.asarray(p, float)
    y = np.asarray(label, float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        if sel.any():
            out.append({"bin": [k / bins, (k + 1) / bins], "n": int(sel.sum()),
                        "mean_probability": round(float(p[sel].mean()), 4),
                        "observed": round(float(y[sel].mean()), 4)})
    return out


def ece(p: np.ndarray, label: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |observed − predicted| over
    :func:`reliability`'s bins."""
    rows = reliability(p, label, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["observed"] - r["mean_probability"]) for r in rows) / n)


def operating_points(p: np.ndarray, label: np.ndarray, n_scans: int,
                     rates=RATES) -> dict[str, float]:
    """Probability thresholds at which about ``rate`` false positives per scan remain
    (see the module docstring): findings with a probability ≥ the threshold are shown."""
    fp = np.sort(np.asarray(p, float)[np.asarray(label) == 0])[::-1]
    out = {}
    for r in rates:
        k = int(np.floor(r * n_scans))
        t = float(fp[k]) if k < len(fp) else 0.0
        out[str(r)] = float(np.nextafter(t, 2.0)) if k < len(fp) else 0.0
    return out


def sensitivity_at(p: np.ndarray, table: FindingTable, threshold: float) -> tuple[float, float]:
    """(sensitivity, false positives per scan) of ``table``'s findings at ``threshold``."""
    shown = np.asarray(p, float) >= threshold
    n_nod = sum(table.n_nodules.values())
    hits = len(set(table.nodule[shown & (table.label == 1)].tolist()))
    n_scans = max(len(table.n_nodules), 1)
    return (hits / n_nod if n_nod else float("nan"),
            float((shown & (table.label == 0)).sum()) / n_scans)


def cross_fitted(table: FindingTable, folds: list[list[str]]) -> np.ndarray:
    """Each fold's findings' probabilities by a Platt calibration fitted on the others."""
    out = np.full(len(table.label), np.nan)
    use = table.label >= 0
    for fold in folds:
        test = np.isin(table.group, fold)
        train = ~test & use
        a, b = fit_platt(table.evidence[train], table.label[train])
        out[test] = platt(table.evidence[test], a, b)
    return out


def calibrate(table: FindingTable, folds: list[list[str]], rates=RATES,
              fit_on: str | None = "hybrid") -> dict:
    """The calibration stored with the network (``method``, ``a``, ``b``), its held-out
    figures (cross-fitted ECE and reliability diagram; the operating points' sensitivity
    and false positives per scan, pooled and per kind of volume) and the operating points.

    The Platt fit and the operating points use the volumes whose kind starts with
    ``fit_on`` — by default the hybrid volumes, real CT of the hosts around inserted
    nodules, because the viewer reads real CT: a synthetic twin has far fewer vessels that
    look like nodules, and pooling its findings would set thresholds that show several
    times the intended false marks on a real scan. Every kind is reported at those
    thresholds; the cross-fitted figures of the fitted kinds come from calibrations fitted
    without their fold (their host), the others' from the full fit (they are not in it)."""
    fit_sel = np.array([fit_on is None or _kind(g).startswith(fit_on) for g in table.group],
                       bool)
    if not fit_sel.any():
        raise ValueError(f"calibration: no held-out volumes of the kind {fit_on!r}")
    fit = table.take(fit_sel)
    use_fit = fit.label >= 0
    a, b = fit_platt(fit.evidence[use_fit], fit.label[use_fit])
    p_all = platt(table.evidence, a, b)
    fit_folds = [f for f in folds if np.isin(fit.group, f).any()]
    p_cf = p_all.copy()
    p_cf[fit_sel] = cross_fitted(fit, fit_folds)
    ops = operating_points(p_all[fit_sel][use_fit], fit.label[use_fit], len(fit.n_nodules),
                           rates)
    use = table.label >= 0
    per_kind = {}
    for kind in sorted({_kind(g) for g in table.n_nodules}):
        sel = np.array([_kind(g) == kind for g in table.group])
        sub = table.take(sel)
        per_kind[kind] = {r: dict(zip(("sensitivity", "fp_per_scan"),
                                      (round(v, 4) for v in sensitivity_at(p_all[sel], sub,
                                                                           t))))
                          for r, t in ops.items()}
        per_kind[kind]["scans"] = len(sub.n_nodules)
        per_kind[kind]["nodules"] = int(sum(sub.n_nodules.values()))
        per_kind[kind]["ece_cross_fitted"] = round(ece(p_cf[sel & use],
                                                       table.label[sel & use]), 4)
    fitted = {r: dict(zip(("sensitivity", "fp_per_scan"),
                          (round(v, 4) for v in sensitivity_at(p_all[fit_sel], fit, t))))
              for r, t in ops.items()}
    return {"method": "platt", "a": a, "b": b, "fit_on": fit_on or "all",
            "operating_points": ops,
            "ece_cross_fitted": round(ece(p_cf[fit_sel][use_fit], fit.label[use_fit]), 4),
            "reliability_cross_fitted": reliability(p_cf[fit_sel][use_fit],
                                                    fit.label[use_fit]),
            "ece_cross_fitted_all": round(ece(p_cf[use], table.label[use]), 4),
            "findings": int(use_fit.sum()), "scans": len(fit.n_nodules),
            "at_operating_points": fitted,
            "per_kind": per_kind}


def _kind(group: str) -> str:
    """The kind of volume a group is: ``hybrid-<host>`` for a hybrid volume, else its
    prefix (``realistic``, ``twin``, ``host``)."""
    parts = group.split("-")
    if parts[0] == "hybrid" and len(parts) > 2:
        return "hybrid-" + "-".join(parts[1:-1])
    return parts[0]
