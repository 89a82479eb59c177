"""Nodules of two exams paired through the registration, with growth, VDT and Lung-RADS.

- :func:`measure_at` sizes a nodule at a point with the one segmentation the viewer and the
  CAD findings use (:func:`lungviewer.reading.lesions` → ``volumetry.segment_nodule``), so
  both exams' volumes come from the same method.
- :func:`match_nodules` pairs the current and the prior nodules one-to-one
  (``scipy.optimize.linear_sum_assignment`` on the distance in mm after mapping the prior
  centres into the current exam) with a distance gate (:func:`gate_mm`); the unpaired are
  **new** (current only) or **resolved** (prior only).
- :func:`assess_pair` gives the change: mean diameter (0.1 mm), % volume change, the volume
  doubling time ``VDT = ln2 · Δt / ln(V2 / V1)`` with the reasons it cannot be trusted (no
  growth or shrinking, interval under 30 days, slices thicker than 2.5 mm), its NELSON/BTS
  class (< 400 d suspicious, 400–600 indeterminate, > 600 likely benign), the status and the
  Lung-RADS v2022 follow-up category (:func:`lungviewer.reading.lungrads.lung_rads_followup`).

Status: **growing** when the volume grew by at least 25 % (NELSON) or the mean diameter by
more than 1.5 mm (Lung-RADS), **shrinking** when the volume fell by 25 % of the larger one
(ratio ≤ 0.8) or the diameter by more than 1.5 mm, else **stable**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from lungviewer.reading.lungrads import lung_rads_followup, mean_diameter, round1

GATE_MM = 10.0  #: the distance gate: this plus half the larger diameter
GROWTH_RATIO = 1.25  #: NELSON / BTS: a volume increase of at least 25 % is growth
MIN_VDT_DAYS_INTERVAL = 30  #: shorter intervals: VDT not trusted
MAX_VDT_SLICE_MM = 2.5  #: thicker slices: VDT not trusted
GROWTH_MM = 1.5


@dataclass
class Nodule:
    """A nodule on one exam: centre voxel ``(slice, row, col)`` (0-based), its size from
    the segmentation (mean diameter per Lung-RADS, volume), type; ``source`` says where it
    was found (CAD finding, reading, annotation)."""

    slice: float
    row: float
    col: float
    diameter_mm: float
    volume_mm3: float = 0.0
    long_axis_mm: float = 0.0
    short_axis_mm: float = 0.0
    type: str = "solid"
    solid_diameter_mm: float | None = None
    source: str = ""
    measured: bool = False

    @property
    def zyx(self) -> tuple[float, float, float]:
        return (float(self.slice), float(self.row), float(self.col))

    def as_dict(self) -> dict:
        return {"slice": int(round(self.slice)), "row": int(round(self.row)),
                "col": int(round(self.col)), "diameter_mm": round1(self.diameter_mm),
                "volume_mm3": float(round(self.volume_mm3)),
                "long_axis_mm": round1(self.long_axis_mm),
                "short_axis_mm": round1(self.short_axis_mm), "type": self.type,
                "measured": self.measured, "source": self.source}

    @staticmethod
    def from_dict(d: dict) -> Nodule:
        return Nodule(float(d["slice"]), float(d["row"]), float(d["col"]),
                      float(d["diameter_mm"]), float(d.get("volume_mm3", 0.0)),
                      float(d.get("long_axis_mm", 0.0)), float(d.get("short_axis_mm", 0.0)),
                      str(d.get("type", "solid")), d.get("solid_diameter_mm"),
                      str(d.get("source", "")), bool(d.get("measured", False)))


def measure_at(hu: np.ndarray, spacing, lung_mask: np.ndarray | None, zyx,
               hint_mm: float = 6.0, source: str = "") -> Nodule | None:
    """The nodule at voxel ``zyx`` segmented and measured (the findings' segmentation, its
    box grown while the lesion fills it); None when nothing denser than the lung is there."""
    from lungviewer.reading.lesions import _segment, lung_region

    k, r, c = (int(round(v)) for v in zyx)
    if not (0 <= k < hu.shape[0] and 0 <= r < hu.shape[1] and 0 <= c < hu.shape[2]):
        return None
    region = lung_region(lung_mask, spacing) if lung_mask is not None else None
    f = SimpleNamespace(slice=k, row=r, col=c, diameter_mm=max(float(hint_mm), 3.0))
    seg = _segment(hu, spacing, lung_mask, f, region)
    if seg is None:
        return None
    zs, ys, xs = np.nonzero(seg.mask)
    z0, y0, x0 = seg.offset
    return Nodule(float(zs.mean() + z0), float(ys.mean() + y0), float(xs.mean() + x0),
                  seg.mean_diameter_mm, float(seg.volume_mm3), float(seg.long_axis_mm),
                  float(seg.short_axis_mm), "calcified" if seg.calcified else seg.type,
                  seg.solid_diameter_mm, source, True)


def nodules_from_findings(findings, threshold: float | None = None) -> list[Nodule]:
    """CAD findings (shown at ``threshold``) as :class:`Nodule` s."""
    out = []
    for f in findings or []:
        if threshold is not None and f.score < threshold:
            continue
        d = (mean_diameter(f.long_axis_mm, f.short_axis_mm) if getattr(f, "extent", None)
             else float(f.diameter_mm))
        out.append(Nodule(f.slice, f.row, f.col, d, float(getattr(f, "volume_mm3", 0.0)),
                          float(getattr(f, "long_axis_mm", 0.0)),
                          float(getattr(f, "short_axis_mm", 0.0)), source="CAD finding",
                          measured=bool(getattr(f, "extent", None))))
    return out


def gate_mm(a: Nodule | None, b: Nodule | None) -> float:
    """The largest centre distance (mm) at which two nodules may be paired."""
    d = max(a.diameter_mm if a else 0.0, b.diameter_mm if b else 0.0)
    return GATE_MM + 0.5 * d


def match_nodules(current: list[Nodule], prior: list[Nodule], reg) -> list[tuple]:
    """One-to-one pairs ``(i_current | None, j_prior | None, distance_mm | None)``: the
    assignment of least total distance (prior centres mapped into the current exam by
    ``reg``) among pairs within :func:`gate_mm`; then the unpaired current (new) and prior
    (resolved) ones."""
    from scipy.optimize import linear_sum_assignment

    pairs: list[tuple] = []
    used_c: set[int] = set()
    used_p: set[int] = set()
    if current and prior:
        pc = reg.current.to_patient(np.array([n.zyx for n in current], float))
        pp_cur = reg.prior_to_current(np.array([n.zyx for n in prior], float))
        pp = reg.current.to_patient(np.atleast_2d(pp_cur))
        dist = np.linalg.norm(np.atleast_2d(pc)[:, None, :] - pp[None, :, :], axis=2)
        gates = np.array([[gate_mm(a, b) for b in prior] for a in current])
        big = 1e6
        cost = np.where(dist <= gates, dist, big)
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            if cost[i, j] < big:
                pairs.append((int(i), int(j), float(dist[i, j])))
                used_c.add(int(i))
                used_p.add(int(j))
    pairs.sort(key=lambda p: p[0])
    pairs += [(i, None, None) for i in range(len(current)) if i not in used_c]
    pairs += [(None, j, None) for j in range(len(prior)) if j not in used_p]
    return pairs


def vdt_days(v_prior: float, v_current: float, interval_days: float) -> float | None:
    """Volume doubling time ``ln2 · Δt / ln(V2 / V1)`` (days); None without growth."""
    if v_prior <= 0 or v_current <= 0 or interval_days <= 0 or v_current <= v_prior:
        return None
    return math.log(2.0) * interval_days / math.log(v_current / v_prior)


def vdt_untrusted(v_prior: float, v_current: float, interval_days: float,
                  slice_mm: tuple[float, float]) -> list[str]:
    """Why a VDT cannot be trusted (empty: it can)."""
    why = []
    if v_prior <= 0 or v_current <= 0:
        why.append("a volume is missing")
    elif v_current <= v_prior:
        why.append("no growth or shrinking (negative or infinite VDT)")
    if interval_days < MIN_VDT_DAYS_INTERVAL:
        why.append(f"interval under {MIN_VDT_DAYS_INTERVAL} days")
    thick = max(slice_mm)
    if thick > MAX_VDT_SLICE_MM:
        why.append(f"slices thicker than {MAX_VDT_SLICE_MM} mm ({thick:.1f} mm)")
    return why


def vdt_class(vdt: float | None) -> str:
    """NELSON / BTS reading of a VDT."""
    if vdt is None:
        return ""
    if vdt < 400:
        return "suspicious (< 400 days)"
    if vdt <= 600:
        return "indeterminate (400–600 days)"
    return "likely benign (> 600 days)"


@dataclass
class PairResult:
    """One nodule across the two exams (``current`` / ``prior`` None: new / resolved)."""

    current: Nodule | None
    prior: Nodule | None
    status: str
    distance_mm: float | None = None
    diameter_change_mm: float | None = None
    volume_ratio: float | None = None
    volume_change_pct: float | None = None
    vdt_days: float | None = None
    vdt_trusted: bool = False
    vdt_why_not: list[str] = field(default_factory=list)
    vdt_class: str = ""
    lung_rads: dict = field(default_factory=dict)
    verdict: str = ""  # the reader's: "" | "confirmed" | "rejected"

    def as_dict(self) -> dict:
        def r(v, n=3):
            return None if v is None else round(float(v), n)

        return {"current": self.current.as_dict() if self.current else None,
                "prior": self.prior.as_dict() if self.prior else None,
                "status": self.status, "distance_mm": r(self.distance_mm, 1),
                "diameter_change_mm": (None if self.diameter_change_mm is None
                                       else round1(self.diameter_change_mm)),
                "volume_ratio": r(self.volume_ratio), "volume_change_pct": r(
                    self.volume_change_pct, 1),
                "vdt_days": r(self.vdt_days, 0), "vdt_trusted": self.vdt_trusted,
                "vdt_why_not": list(self.vdt_why_not), "vdt_class": self.vdt_class,
                "lung_rads": dict(self.lung_rads), "verdict": self.verdict}

    @staticmethod
    def from_dict(d: dict) -> PairResult:
        return PairResult(Nodule.from_dict(d["current"]) if d.get("current") else None,
                          Nodule.from_dict(d["prior"]) if d.get("prior") else None,
                          str(d["status"]), d.get("distance_mm"), d.get("diameter_change_mm"),
                          d.get("volume_ratio"), d.get("volume_change_pct"), d.get("vdt_days"),
                          bool(d.get("vdt_trusted", False)), list(d.get("vdt_why_not", [])),
                          str(d.get("vdt_class", "")), dict(d.get("lung_rads", {})),
                          str(d.get("verdict", "")))


def assess_pair(current: Nodule | None, prior: Nodule | None, interval_days: float,
                slice_mm: tuple[float, float] = (1.0, 1.0),
                distance_mm: float | None = None) -> PairResult:
    """The change of one nodule between the exams (see the module docstring)."""
    if current is None and prior is None:
        raise ValueError("a pair needs a current or a prior nodule")
    if prior is None:
        lr = lung_rads_followup(current.type, current.diameter_mm, None, interval_days,
                                current.solid_diameter_mm)
        return PairResult(current, None, "new", lung_rads={"category": lr.category,
                                                            "rule": lr.rule})
    if current is None:
        lr = lung_rads_followup(prior.type, prior.diameter_mm, resolved=True)
        return PairResult(None, prior, "resolved", lung_rads={"category": lr.category,
                                                              "rule": lr.rule})
    dd = round1(round1(current.diameter_mm) - round1(prior.diameter_mm))
    v1, v2 = prior.volume_mm3, current.volume_mm3
    ratio = v2 / v1 if v1 > 0 and v2 > 0 else None
    if (ratio is not None and ratio >= GROWTH_RATIO) or dd > GROWTH_MM:
        status = "growing"
    elif (ratio is not None and ratio <= 1.0 / GROWTH_RATIO) or dd < -GROWTH_MM:
        status = "shrinking"
    else:
        status = "stable"
    vdt = vdt_days(v1, v2, interval_days)
    why = vdt_untrusted(v1, v2, interval_days, slice_mm)
    lr = lung_rads_followup(current.type, current.diameter_mm, prior.diameter_mm,
                            interval_days, current.solid_diameter_mm, current.volume_mm3)
    return PairResult(current, prior, status, distance_mm, dd, ratio,
                      None if ratio is None else 100.0 * (ratio - 1.0), vdt, not why, why,
                      vdt_class(vdt) if not why else "",
                      {"category": lr.category, "rule": lr.rule})


def remeasure(nodules: list[Nodule], hu, spacing, lung_mask, source: str = "") -> list[Nodule]:
    """Each nodule measured again at its centre with the common segmentation (kept as it
    was where nothing can be segmented there); duplicates (same lesion) dropped."""
    out: list[Nodule] = []
    for n in nodules:
        m = measure_at(hu, spacing, lung_mask, n.zyx, n.diameter_mm or 6.0,
                       source or n.source)
        m = m or n
        sp = np.asarray(spacing, float)
        if any(np.linalg.norm((np.array(m.zyx) - np.array(o.zyx)) * sp)
               < 0.5 * max(m.diameter_mm, o.diameter_mm, 2.0) for o in out):
            continue
        out.append(m)
    return out


@dataclass
class Comparison:
    """The follow-up comparison of a current exam with its prior."""

    pairs: list[PairResult]
    registration: dict
    interval_days: int
    current: dict = field(default_factory=dict)  # StudyInfo.as_dict()
    prior: dict = field(default_factory=dict)
    label: str = ""  # SYNTHETIC / HYBRID / "" (real)
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"interval_days": int(self.interval_days), "current_study": dict(self.current),
                "prior_study": dict(self.prior), "label": self.label,
                "pairs": [p.as_dict() for p in self.pairs],
                "registration": dict(self.registration), "messages": list(self.messages)}

    @staticmethod
    def from_dict(d: dict) -> Comparison:
        return Comparison([PairResult.from_dict(p) for p in d.get("pairs", [])],
                          dict(d.get("registration", {})), int(d.get("interval_days", 0)),
                          dict(d.get("current_study", {})), dict(d.get("prior_study", {})),
                          str(d.get("label", "")), list(d.get("messages", [])))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.status] = out.get(p.status, 0) + 1
        return out


def compare(current, prior, current_nodules: list[Nodule], prior_nodules: list[Nodule],
            interval_days: int, reg=None, current_mask=None, prior_mask=None,
            remeasure_nodules: bool = True) -> Comparison:
    """Pair and assess the nodules of two exams (``current`` / ``prior``: Volumes); ``reg``
    a :class:`~lungviewer.followup.registration.Registration` (None: registered here; when
    that fails, RegistrationError propagates and the caller shows them unlinked)."""
    from lungviewer.followup.registration import lung_mask_of, register

    if current_mask is None:
        current_mask = lung_mask_of(current.hu, current.spacing)
    if prior_mask is None:
        prior_mask = lung_mask_of(prior.hu, prior.spacing)
    if reg is None:
        reg = register(current, prior, current_mask, prior_mask)
    if remeasure_nodules:
        current_nodules = remeasure(current_nodules, current.hu, current.spacing, current_mask)
        prior_nodules = remeasure(prior_nodules, prior.hu, prior.spacing, prior_mask)
    slices = (float(current.spacing[0]), float(prior.spacing[0]))
    pairs = [assess_pair(current_nodules[i] if i is not None else None,
                         prior_nodules[j] if j is not None else None, interval_days,
                         slices, dist)
             for i, j, dist in match_nodules(current_nodules, prior_nodules, reg)]
    return Comparison(pairs, reg.as_dict(), interval_days)
