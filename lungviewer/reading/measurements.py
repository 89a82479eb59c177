"""Measurements drawn on a plane image: ruler, ellipse and rectangle ROIs, bidirectional
(long/short axis) — their geometry in mm and, for ROIs, HU statistics.

Pure numpy. A measurement lives on one image of one plane (axial, coronal or sagittal, see
:mod:`lungviewer.imaging.planes`); its points are ``(row, col)`` pixel coordinates of that
image, a pixel's centre at integer coordinates. Pixel sizes come from
:func:`~lungviewer.imaging.planes.plane_spacing`, so lengths and areas are right with
anisotropic voxels (e.g. 0.7 mm pixels, 2.5 mm slices in a coronal view). Volumes are
``(z, y, x)`` HU arrays and spacing is ``(z, y, x)`` mm.

ROI statistics are over the pixels whose centres lie inside the shape (the ellipse's
``((r - r0)/a)² + ((c - c0)/b)² ≤ 1``, the rectangle's closed box), computed on the shape's
bounding box only. Areas are the shapes' geometric areas (π·a·b, w·h in mm²), not pixel
counts. SD is the population standard deviation.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungviewer.imaging.planes import PLANES, plane_count, plane_image, plane_spacing

KINDS: tuple[str, ...] = ("ruler", "ellipse", "rectangle", "bidirectional")
#: how many points each kind has
N_POINTS: dict[str, int] = {"ruler": 2, "ellipse": 2, "rectangle": 2, "bidirectional": 4}
_MINUS = "\u2212"


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Measurement:
    """One measurement on image ``index`` of ``plane``.

    ``points`` are ``(row, col)`` pixel coordinates on that image: ruler — its two ends;
    ellipse / rectangle — two opposite corners of the bounding box; bidirectional — the long
    axis ``p0, p1`` then the short axis ``p2, p3``."""

    kind: str
    plane: str
    index: int
    points: list[tuple[float, float]]
    id: str = field(default_factory=_new_id)
    label: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "plane": self.plane, "index": int(self.index),
                "points": [[float(r), float(c)] for r, c in self.points], "label": self.label}

    @classmethod
    def from_dict(cls, d: Any) -> Measurement:
        """A measurement from :meth:`to_dict`'s form; ValueError naming the problem for
        anything else (unknown kind or plane, wrong point count, non-finite numbers)."""
        if not isinstance(d, dict):
            raise ValueError(f"a measurement must be an object, got {type(d).__name__}")  # noqa: TRY004 - bad input is a ValueError here
        for key in ("kind", "plane", "index", "points"):
            if key not in d:
                raise ValueError(f"a measurement needs '{key}'")
        mid = d.get("id") or _new_id()
        label = d.get("label", "")
        if not isinstance(mid, str):
            raise ValueError("the measurement 'id' must be text")  # noqa: TRY004 - bad input is a ValueError here
        if not isinstance(label, str):
            raise ValueError("the measurement 'label' must be text")  # noqa: TRY004 - bad input is a ValueError here
        return cls(kind=d["kind"], plane=d["plane"], index=d["index"], points=d["points"],
                   id=mid, label=label)

    def moved(self, drow: float, dcol: float) -> Measurement:
        """The same measurement shifted by ``(drow, dcol)`` pixels (same id)."""
        return Measurement(self.kind, self.plane, self.index,
                           [(r + drow, c + dcol) for r, c in self.points], self.id, self.label)


def _finite(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {v!r}")  # noqa: TRY004 - bad input is a ValueError here
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return x


def _validate(m: Measurement) -> None:
    if m.kind not in KINDS:
        raise ValueError(f"unknown measurement kind {m.kind!r}; one of {', '.join(KINDS)}")
    if m.plane not in PLANES:
        raise ValueError(f"unknown plane {m.plane!r}; one of {', '.join(PLANES)}")
    idx = _finite(m.index, "the image index")
    if idx != int(idx) or idx < 0:
        raise ValueError(f"the image index must be an integer ≥ 0, got {m.index!r}")
    m.index = int(idx)
    pts = m.points.tolist() if isinstance(m.points, np.ndarray) else m.points
    if not isinstance(pts, (list, tuple)):
        raise ValueError(  # noqa: TRY004 - bad input is a ValueError here
            f"'points' must be a list of (row, col) pairs, got {type(pts).__name__}")
    need = N_POINTS[m.kind]
    if len(pts) != need:
        raise ValueError(f"a {m.kind} has {need} points, got {len(pts)}")
    out = []
    for i, p in enumerate(pts):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ValueError(f"point {i + 1} must be a (row, col) pair, got {p!r}")
        out.append((_finite(p[0], f"point {i + 1} row"), _finite(p[1], f"point {i + 1} col")))
    m.points = out
    if not isinstance(m.id, str) or not m.id:
        raise ValueError("the measurement id must be non-empty text")


@dataclass
class MeasurementResult:
    """A measurement's figures in mm / mm² / HU; None where they do not apply."""

    length_mm: float | None = None
    area_mm2: float | None = None
    long_mm: float | None = None
    short_mm: float | None = None
    hu_mean: float | None = None
    hu_sd: float | None = None
    hu_min: float | None = None
    hu_max: float | None = None
    n_pixels: int | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("length_mm", "area_mm2", "long_mm", "short_mm",
                                               "hu_mean", "hu_sd", "hu_min", "hu_max",
                                               "n_pixels")}

    def text(self) -> str:
        """One line for the measurement list and the overlay."""
        if self.long_mm is not None and self.short_mm is not None:
            from lungviewer.reading.lungrads import mean_diameter

            return (f"{self.long_mm:.1f} × {self.short_mm:.1f} mm "
                    f"(mean {mean_diameter(self.long_mm, self.short_mm):.1f} mm)")
        if self.area_mm2 is not None:
            s = f"area {self.area_mm2:.1f} mm²"
            if self.hu_mean is not None:
                s += (f", HU {_hu(self.hu_mean)} ± {self.hu_sd:.0f} "
                      f"[{_hu(self.hu_min)}, {_hu(self.hu_max)}]")
            else:
                s += ", no pixels inside"
            return s
        if self.length_mm is not None:
            return f"{self.length_mm:.1f} mm"
        return ""


def _hu(v: float | None) -> str:
    s = f"{v:.0f}"
    return s.replace("-", _MINUS) if s != "-0" else "0"


def _dist_mm(p: tuple[float, float], q: tuple[float, float], px: tuple[float, float]) -> float:
    return float(math.hypot((q[0] - p[0]) * px[0], (q[1] - p[1]) * px[1]))


def _roi_stats(img: np.ndarray, kind: str, p: tuple[float, float],
               q: tuple[float, float]) -> tuple[np.ndarray, int]:
    """HU values of the pixels inside the ellipse / rectangle with corners ``p``, ``q``."""
    lo_r, hi_r = sorted((p[0], q[0]))
    lo_c, hi_c = sorted((p[1], q[1]))
    h, w = img.shape
    r0, r1 = max(math.ceil(lo_r), 0), min(math.floor(hi_r), h - 1)
    c0, c1 = max(math.ceil(lo_c), 0), min(math.floor(hi_c), w - 1)
    if r0 > r1 or c0 > c1:
        return np.zeros(0, dtype=np.float64), 0
    block = img[r0:r1 + 1, c0:c1 + 1]
    if kind == "rectangle":
        vals = block.ravel()
    else:
        rr = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
        cc = np.arange(c0, c1 + 1, dtype=np.float64)[None, :]
        rc, cc0 = (lo_r + hi_r) / 2.0, (lo_c + hi_c) / 2.0
        a, b = (hi_r - lo_r) / 2.0, (hi_c - lo_c) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            er = np.where(rr == rc, 0.0, ((rr - rc) / a) ** 2) if a == 0 else ((rr - rc) / a) ** 2
            ec = np.where(cc == cc0, 0.0, ((cc - cc0) / b) ** 2) if b == 0 else (
                (cc - cc0) / b) ** 2
        inside = (er + ec) <= 1.0 + 1e-9
        vals = block[inside]
    return vals.astype(np.float64, copy=False), int(vals.size)


def measure(m: Measurement, hu: np.ndarray,
            spacing: tuple[float, float, float]) -> MeasurementResult:
    """The figures of ``m`` on the volume ``hu`` (z, y, x) with voxel ``spacing`` (z, y, x) mm.

    Ruler: ``length_mm``. Ellipse / rectangle: ``area_mm2`` and HU mean / SD / min / max over
    the ``n_pixels`` inside (None when no pixel centre is inside). Bidirectional: ``long_mm``
    and ``short_mm``. ValueError when the image index is outside the volume."""
    if not isinstance(m, Measurement):
        raise ValueError(f"not a measurement: {type(m).__name__}")  # noqa: TRY004 - bad input is a ValueError here
    vol = np.asarray(hu)
    if vol.ndim != 3:
        raise ValueError(f"the volume must be (z, y, x), got shape {vol.shape}")
    n = plane_count(vol.shape, m.plane)
    if not 0 <= m.index < n:
        raise ValueError(f"{m.plane} image {m.index} is outside 0..{n - 1}")
    px = plane_spacing(spacing, m.plane)
    pts = m.points
    if m.kind == "ruler":
        return MeasurementResult(length_mm=_dist_mm(pts[0], pts[1], px))
    if m.kind == "bidirectional":
        return MeasurementResult(long_mm=_dist_mm(pts[0], pts[1], px),
                                 short_mm=_dist_mm(pts[2], pts[3], px))
    h_mm = abs(pts[1][0] - pts[0][0]) * px[0]
    w_mm = abs(pts[1][1] - pts[0][1]) * px[1]
    area = math.pi * h_mm * w_mm / 4.0 if m.kind == "ellipse" else h_mm * w_mm
    vals, count = _roi_stats(plane_image(vol, m.plane, m.index), m.kind, pts[0], pts[1])
    if count == 0:
        return MeasurementResult(area_mm2=float(area), n_pixels=0)
    return MeasurementResult(area_mm2=float(area), hu_mean=float(vals.mean()),
                             hu_sd=float(vals.std()), hu_min=float(vals.min()),
                             hu_max=float(vals.max()), n_pixels=count)


# --------------------------------------------------------------------------- from a mask
Point = tuple[float, float]


def _boundary_points(mask2d: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sub-pixel outline of the mask (the 0.5 level between inside and outside pixel
    centres, ``skimage.measure.find_contours``): all points (n, 2) and the closed contours,
    in (row, col) pixel coordinates."""
    from skimage.measure import find_contours

    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask2d[r0:rows[-1] + 1, c0:cols[-1] + 1]
    pad = np.pad(crop, 1).astype(np.float32)
    contours = [c + (r0 - 1, c0 - 1) for c in find_contours(pad, 0.5)]
    return np.concatenate(contours), contours


def bidirectional_from_mask(mask2d: np.ndarray, pixel_mm: tuple[float, float]
                            ) -> tuple[tuple[Point, Point], tuple[Point, Point], float, float]:
    """Long and short axis of a 2-D mask (Lung-RADS / RECIST convention).

    The long axis is the greatest distance between two points of the outline (maximum Feret
    diameter, over the outline's convex hull); the short axis the longest chord of the
    outline perpendicular to it. The outline is the sub-pixel boundary half-way between
    inside and outside pixel centres, so a digital disk of radius R measures ≈ 2R.

    Args:
        mask2d: bool (row, col) image.
        pixel_mm: pixel size (row_mm, col_mm).

    Returns ``(long_points, short_points, long_mm, short_mm)``, points as ``(row, col)``
    pixel coordinates. ValueError for an empty or non-2-D mask.
    """
    m = np.asarray(mask2d, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"the mask must be 2-D, got shape {m.shape}")
    if not m.any():
        raise ValueError("the mask is empty: nothing to measure")
    sr, sc = (float(v) for v in pixel_mm)
    scale = np.array([sr, sc])
    pts, contours = _boundary_points(m)
    p_mm = pts * scale
    hull = p_mm
    if len(p_mm) >= 4:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = p_mm[ConvexHull(p_mm).vertices]
        except QhullError:  # collinear outline: all points are candidates
            hull = p_mm
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    a, b = hull[i], hull[j]
    long_mm = float(math.sqrt(d2[i, j]))
    if long_mm == 0.0:
        c = tuple(float(v) for v in pts.mean(0))
        return (c, c), (c, c), 0.0, 0.0
    e = (b - a) / long_mm
    nrm = np.array([-e[1], e[0]])
    # chords perpendicular to the long axis: crossings of each outline segment
    seg_a = np.concatenate([c[:-1] for c in contours]) * scale
    seg_b = np.concatenate([c[1:] for c in contours]) * scale
    ua, ub = (seg_a - a) @ e, (seg_b - a) @ e
    va, vb = (seg_a - a) @ nrm, (seg_b - a) @ nrm
    step = min(sr, sc) / 4.0
    t = np.linspace(0.0, long_mm, max(int(long_mm / step), 8) + 1)[1:-1]
    if t.size == 0:
        t = np.array([long_mm / 2.0])
    lo, hi = np.minimum(ua, ub), np.maximum(ua, ub)
    cross = (lo[None, :] <= t[:, None]) & (t[:, None] <= hi[None, :]) & (hi > lo)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (t[:, None] - ua[None, :]) / (ub - ua)[None, :]
    v = va[None, :] + f * (vb - va)[None, :]
    vmax = np.where(cross, v, -np.inf).max(axis=1)
    vmin = np.where(cross, v, np.inf).min(axis=1)
    width = np.where(np.isfinite(vmax) & np.isfinite(vmin), vmax - vmin, 0.0)
    k = int(np.argmax(width))
    short_mm = float(width[k])
    s0 = (a + t[k] * e + vmin[k] * nrm) / scale if short_mm > 0 else (a + t[k] * e) / scale
    s1 = (a + t[k] * e + vmax[k] * nrm) / scale if short_mm > 0 else s0
    long_pts = (tuple(float(x) for x in a / scale), tuple(float(x) for x in b / scale))
    short_pts = (tuple(float(x) for x in s0), tuple(float(x) for x in s1))
    return long_pts, short_pts, long_mm, short_mm  # type: ignore[return-value]
