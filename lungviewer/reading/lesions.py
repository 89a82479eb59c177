"""One finding per lesion, sized by its own 3-D segmentation (docs/ARCHITECTURE.md, "CAD
findings").

The candidates of the CAD findings are blobs at the filter's scales: a lesion larger than
the largest scale, or lobulated, gives several. :func:`size_findings` walks the findings most
likely first and segments each with the semi-automatic nodule segmentation the viewer's V
key uses (:func:`lungviewer.reading.volumetry.segment_nodule`), from a box of the blob's
size that is enlarged (up to :data:`MAX_BOX_MM`) while the segmentation fills it. A later
finding whose blob reaches an earlier finding's segmentation (its centre within the blob's
radius of it, at most :data:`MAX_REACH_MM`: a lobule or the rim of a mass) or whose own
segmentation mostly overlaps one is the same lesion and merges into it. The finding then takes the
lesion's measured size: long and short axis on its axial slice of largest extent, their
mean as its diameter, the volume, the voxel extent, and ``kind`` "mass" above
:data:`MASS_MM`. Its centre moves to the segmentation's centre.

Pure numpy on ``(z, y, x)`` arrays; the findings are duck-typed (any object with the
:class:`lungviewer.cad.findings.Finding` fields).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from lungviewer.cancel import Cancelled
from lungviewer.reading.volumetry import segment_nodule

log = logging.getLogger(__name__)

#: findings segmented per study (most likely first); the rest keep the blob's scale
SIZED = 20
#: a later blob whose centre lies within its radius of an earlier lesion (capped at this,
#: mm) touches that lesion and is merged into it
MAX_REACH_MM = 10.0
#: the first box is this many times the blob's diameter (at least MIN_BOX_MM) ...
BOX_SCALE, MIN_BOX_MM = 2.0, 10.0
#: ... and grows ×2 while the lesion reaches the box's edge, up to this
MAX_BOX_MM = 90.0
#: a segmentation sharing this fraction of its voxels with an earlier lesion is that lesion
OVERLAP = 0.3
#: an enlarged segmentation is kept only while this share of it lies in the lung region (the
#: lung mask with its holes filled: vessels and nodules inside the lung); beyond, the
#: segmentation has leaked into the hilum, the mediastinum or the chest wall
MIN_IN_LUNG = 0.7
#: holes of the lung mask up to this equivalent diameter (mm) count as lung region (a mass
#: inside the lung); larger ones are the mediastinum where the two lungs touch
MAX_HOLE_MM = 70.0
#: a lesion is compact: its thickness (the largest inscribed ball's diameter) is at least
#: this share of its long axis; thinner is a vessel or a branching vessel tree at the hilum,
#: which the box is not enlarged for (and an enlargement that makes it one is undone)
MIN_THICKNESS = 0.35
#: a lesion whose long axis exceeds this (mm) is a mass (Fleischner glossary: > 3 cm)
MASS_MM = 30.0


class _Lesion:
    def __init__(self, seg, spacing) -> None:
        self.seg = seg
        z0, y0, x0 = seg.offset
        dz, dy, dx = seg.mask.shape
        self.lo = np.array([z0, y0, x0])
        self.hi = self.lo + np.array([dz, dy, dx])
        self.spacing = np.asarray(spacing, float)
        self.pad = np.ceil(MAX_REACH_MM / self.spacing).astype(int)
        self._dist = None  # mm to the lesion over its box padded by MAX_REACH_MM, on demand

    def reaches(self, zyx, reach_mm: float) -> bool:
        """Whether the point lies within ``reach_mm`` (≤ MAX_REACH_MM) of the lesion."""
        p = np.asarray(zyx, int)
        if np.any(p < self.lo - self.pad) or np.any(p >= self.hi + self.pad):
            return False
        if self._dist is None:
            from scipy import ndimage

            padded = np.pad(self.seg.mask, [(k, k) for k in self.pad])
            self._dist = ndimage.distance_transform_edt(~padded, sampling=self.spacing)
        return bool(self._dist[tuple(p - self.lo + self.pad)] <= min(reach_mm, MAX_REACH_MM))

    def overlap(self, other: _Lesion) -> int:
        lo, hi = np.maximum(self.lo, other.lo), np.minimum(self.hi, other.hi)
        if np.any(lo >= hi):
            return 0
        a = self.seg.mask[tuple(slice(lo[i] - self.lo[i], hi[i] - self.lo[i]) for i in range(3))]
        b = other.seg.mask[tuple(slice(lo[i] - other.lo[i], hi[i] - other.lo[i])
                                 for i in range(3))]
        return int(np.count_nonzero(a & b))


def lung_region(lung_mask: np.ndarray, spacing) -> np.ndarray:
    """The lung mask with each axial slice's holes up to :data:`MAX_HOLE_MM` across filled
    (vessels and nodules inside the lungs; not the mediastinum between touching lungs)."""
    from scipy import ndimage

    m = np.asarray(lung_mask, bool)
    out = m.copy()
    max_px = np.pi * (MAX_HOLE_MM / 2.0) ** 2 / (float(spacing[1]) * float(spacing[2]))
    for k in np.nonzero(m.any(axis=(1, 2)))[0]:
        holes = ndimage.binary_fill_holes(m[k]) & ~m[k]
        if holes.any():
            lab, n = ndimage.label(holes)
            size = np.bincount(lab.ravel(), minlength=n + 1)
            keep = size <= max_px
            keep[0] = False
            out[k] |= keep[lab]
    return out


def _in_region(seg, region: np.ndarray | None) -> float:
    """The share of the segmentation's voxels inside ``region`` (1 without one)."""
    if region is None:
        return 1.0
    z0, y0, x0 = seg.offset
    dz, dy, dx = seg.mask.shape
    n = int(seg.mask.sum())
    inside = int(np.count_nonzero(seg.mask & region[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx]))
    return inside / n if n else 0.0


def _compact(seg, spacing) -> bool:
    """Whether a segmentation is a compact lesion rather than a vessel or a vessel tree
    (:data:`MIN_THICKNESS`)."""
    from scipy import ndimage

    d = ndimage.distance_transform_edt(np.pad(seg.mask, 1), sampling=spacing)
    return 2.0 * float(d.max()) >= MIN_THICKNESS * max(seg.long_axis_mm, 1e-3)


def _segment(hu, spacing, lung_mask, f, region=None):
    """The lesion at finding ``f``: segmentation from a box around its centre, enlarged
    while the segmentation reaches the box's edge and stays in the lung ``region``; None
    when nothing is there."""
    dz, dy, dx = (float(v) for v in spacing)
    side = max(BOX_SCALE * float(f.diameter_mm), MIN_BOX_MM)
    seg = None
    while True:
        hr, hc = side / 2.0 / dy, side / 2.0 / dx
        box = (int(f.slice), max(int(round(f.row - hr)), 0), max(int(round(f.col - hc)), 0),
               min(int(round(f.row + hr)) + 1, hu.shape[1]),
               min(int(round(f.col + hc)) + 1, hu.shape[2]))
        try:
            new = segment_nodule(hu, spacing, box, lung_mask)
        except ValueError:  # VolumetryError: nothing denser than the lung there
            return seg
        compact = _compact(new, spacing)
        if seg is not None and (_in_region(new, region) < MIN_IN_LUNG or not compact):
            return seg  # the larger box leaked (out of the lung, or along vessels)
        seg = new
        ext = np.array(seg.mask.shape) * np.array([dz, dy, dx])
        reach = max(ext[1], ext[2], ext[0])
        if reach < 0.8 * side or side >= MAX_BOX_MM or not compact:
            return seg
        side = min(2.0 * side, MAX_BOX_MM)


def size_findings(hu: np.ndarray, spacing, lung_mask: np.ndarray | None, findings: list,
                  sized: int = SIZED, cancel: Callable[[], bool] | None = None) -> list:
    """The findings (most likely first) with one finding per lesion: the first ``sized``
    segmented and measured, later ones on an earlier lesion merged into it (see the module docstring). Returns a new list in the same order;
    the objects are updated in place."""
    lesions: list[_Lesion] = []
    out = []
    region = (lung_region(lung_mask, spacing) if lung_mask is not None and len(findings)
              else None)
    for i, f in enumerate(findings):
        if cancel is not None and cancel():
            raise Cancelled("the CAD findings were cancelled")
        host = next((j for j, les in enumerate(lesions)
                     if les.reaches((f.slice, f.row, f.col), f.diameter_mm / 2.0)), None)
        if host is not None:
            out[host].merged += 1
            continue
        if i >= sized:
            out.append(f)
            lesions.append(_Null())
            continue
        seg = _segment(hu, spacing, lung_mask, f, region)
        if seg is None:
            out.append(f)
            lesions.append(_Null())
            continue
        les = _Lesion(seg, spacing)
        n = int(seg.mask.sum())
        host = next((j for j, other in enumerate(lesions)
                     if n and other.overlap(les) >= OVERLAP * n), None)
        if host is not None:
            out[host].merged += 1
            continue
        _measure(f, seg)
        lesions.append(les)
        out.append(f)
    return out


class _Null:
    """A finding without a segmentation: merges nothing."""

    def reaches(self, zyx, reach_mm: float) -> bool:
        return False

    def overlap(self, other) -> int:
        return 0


def _measure(f, seg) -> None:
    zs, ys, xs = np.nonzero(seg.mask)
    z0, y0, x0 = seg.offset
    f.slice, f.row, f.col = (int(round(zs.mean())) + z0, int(round(ys.mean())) + y0,
                             int(round(xs.mean())) + x0)
    f.long_axis_mm = float(seg.long_axis_mm)
    f.short_axis_mm = float(seg.short_axis_mm)
    f.diameter_mm = float(seg.mean_diameter_mm)
    f.volume_mm3 = float(seg.volume_mm3)
    f.extent = (int(zs.min()) + z0, int(zs.max()) + z0 + 1, int(ys.min()) + y0,
                int(ys.max()) + y0 + 1, int(xs.min()) + x0, int(xs.max()) + x0 + 1)
    f.kind = "mass" if f.long_axis_mm > MASS_MM else "nodule"


def finding_at(findings: list | None, k: int, box) -> object | None:
    """The most likely finding a box ``(row0, col0, row1, col1)`` on slice ``k`` lies on:
    one whose extent holds the box's centre (or, unsized, whose centre lies in the box on a
    slice within its radius)."""
    if not findings:
        return None
    r0, c0, r1, c1 = box
    cr, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    for f in findings:  # most likely first
        e = getattr(f, "extent", None)
        if e is not None:
            if e[0] <= k < e[1] and e[2] <= cr < e[3] and e[4] <= cc < e[5]:
                return f
        elif abs(f.slice - k) <= 1 and r0 <= f.row < r1 and c0 <= f.col < c1:
            return f
    return None
