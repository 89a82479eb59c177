"""Lung parenchyma segmentation by the threshold method of Chi et al. 2022.

Per axial slice (arrays ``(z, y, x)``, HU ``int16``):

1. padding: pixels below −1024 HU (``PixelPaddingValue`` outside the scanner's
   reconstruction circle, −2000 / −2048 / −3024) and, when a slice's corners outside the
   reconstruction circle hold one constant value ≤ −1000 HU, that circle's exterior are no
   image: they never count as air, as dark, or in the threshold;
2. iterative global threshold on the remaining pixels: ``T0 = (max + min) / 2``, then
   ``T = (mean above T + mean at or below T) / 2`` until T stops changing (computed on the
   slice's HU histogram, so each iteration costs O(bins));
3. keep the dark side (``HU <= T``): lungs, airways and the air around the body;
4. morphological closing with a disk of radius 5 (fills vessels and nodules up to about
   10 px across inside the lung, and smooths the pleural border);
5. remove what lies outside the body. The body is the slice's largest bright component
   after an opening with a disk of radius 2 (so blankets, sheets and the table's thin
   shell, which touch the skin, are not body). Every region of the slice that is not body
   is inside when the body encloses it, and outside when it reaches the image edge or the
   padding — unless at least half of it lies within the body's convex hull: a lung cut by
   a field of view smaller than the patient reaches the edge too, but it lies between body
   contacts on that edge, inside the hull, whereas the air around the patient lies
   outside the convex body outline. ``ParenchymaParams(outside="border")`` gives the
   method's literal rule instead: drop every component touching the image border (or the
   padding);
6. remove components smaller than 1000 px (trachea, noise).

On a volume (``segment_lungs``), three rules that look at the neighbouring slices follow
(``ParenchymaParams(volume_rules=False)`` turns them off, leaving the slices independent):

7. the kept components are grouped in 3-D (a component and one of an adjacent slice belong
   together when they overlap by at least a quarter of the smaller); groups with less than
   15 % of the largest group's volume are removed: gas in the stomach and bowel below the
   diaphragm, air pockets under the back or a blanket, a trachea above 1000 px — none of
   them continues into a lung;
8. tips (an apex, a costophrenic recess): the pieces of the dark side before the closing
   whose component is under 1000 px are linked across slices where they overlap by at
   least half the smaller; a group of them that continues a kept lung (one piece lies at
   least half on a kept one), never grows away from it (no piece over 1.25 times its
   largest piece touching the lung) and ends inside the volume (nothing on its first or
   last slice) is lung. A real apex on 2.5 mm slices shrinks by only 8–9 % a slice where
   it is under 1000 px, so the rule below alone lost the top 11 slices (28 mm) of both
   lungs on a real scan; the trachea leaves the volume, and before the closing it is a
   piece apart from an apex beside it. ``ParenchymaParams(tips=False)`` turns this off.
   Then components under 1000 px are put back where they continue a kept lung component: at
   least half of one overlaps a kept component of an adjacent slice at least 1.25 times
   its size (repeated, so the lung apex and the costophrenic recesses, which shrink slice
   by slice, come back; a trachea, of about the same size from slice to slice, does not);
9. airways: the closing merges the trachea and main bronchi into a lung wherever their
   wall is thinner than the disk. Pieces of the dark side inside the body before the
   closing (30–999 px) whose component steps 6–8 removed (the trachea above the apex) seed
   an airway; it continues into a piece of an adjacent slice that lies at least half on it
   and is at most 1.5 times as large (a tube, never the lung it enters). The airway's
   lumen, and what the closing added within 6 px of it, leave the mask.

10. a mass on the pleura: the threshold leaves a mass out and it cuts a notch into the
   lung's outline; each side of the mask (split at its middle) is closed with a 15 mm disk
   at half resolution, and the tissue it adds goes back into the lung where it lies on the
   chest wall (near a rib) and out from the middle (not the hilum or the mediastinum); see
   :func:`fill_pleural_masses` (``ParenchymaParams(mass_radius_mm=0)`` turns it off).

The parameters live in :class:`ParenchymaParams` with the method's values as defaults; the
per-slice thresholds are returned for inspection.

Speed: steps 1–5 are vectorised over a chunk of slices (one histogram per slice, all slices
iterated together; in-plane labelling that never connects slices; the closing and opening on
bit-packed slices, the closing restricted to the body's box; one small convex hull per
slice) and chunks run in a thread pool, which also labels each chunk's components and
their overlaps; steps 6–9 then work on the small graph of components (and paint the mask
back chunk by chunk in the pool). The result is identical to the plain version of
``bench/bench_parenchyma.py`` (scikit-image per slice, Python loops over components).

Known limits: air that the body itself encloses and that continues into a lung in 3-D is
kept; a body region left open by the field of view is judged by the convex hull alone (a
deep concavity of the skin cut by the field of view, e.g. between the arm and the chest,
can count as inside: step 7 removes it when it does not continue into a lung); an airway
is only found from a piece of trachea that the size rule removed (a scan that starts
below the apex has none).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError

from lungviewer.cancel import Cancelled

log = logging.getLogger(__name__)

HU_MIN, HU_MAX = -1024, 3071  # histogram range; values above are clipped into it
PADDING_BELOW_HU = -1024  # values below this are padding, never air


@dataclass(frozen=True)
class ParenchymaParams:
    """Parameters of the lung mask (threshold method); the defaults are the method's values
    and those of the robust "outside the body" rule (see the module docstring).

    ``outside``: ``"body"`` (default) keeps what lies inside the body; ``"border"`` is the
    method's literal rule, dropping every component that touches the image border or the
    padding (it loses lungs that reach the image edge). ``body_opening_radius``: the disk
    (px) that detaches thin bright layers (blankets, table shell) from the body.
    ``hull_fraction``: a region reaching the image edge or padding is inside when at least
    this fraction of it lies in the body's convex hull. ``volume_rules``: the 3-D grouping
    and the putting back of small components that continue a lung (volumes only), and the
    airway rule; ``group_fraction``, ``link_overlap``, ``continue_overlap`` and
    ``continue_ratio`` are their numbers (see the module docstring); ``tips`` the rule that
    keeps an apex or a recess tapering slowly to its tip (step 8); ``mass_radius_mm`` the
    disk that takes a mass on the pleura back into its lung (step 10; 0 turns it off)."""

    closing_radius: int = 5  # disk radius (px) of the morphological closing
    min_component_px: int = 1000  # smaller components are removed
    tolerance_hu: float = 0.5  # the iteration stops when T moves less than this
    max_iterations: int = 100
    outside: str = "body"  # "body" or "border", see above
    body_opening_radius: int = 2
    hull_fraction: float = 0.5
    volume_rules: bool = True
    group_fraction: float = 0.15
    link_overlap: float = 0.25
    continue_overlap: float = 0.5
    continue_ratio: float = 1.25
    tips: bool = True
    mass_radius_mm: float = 15.0

    def __post_init__(self) -> None:
        if self.outside not in ("body", "border"):
            raise ValueError(f"ParenchymaParams.outside must be 'body' or 'border', "
                             f"got {self.outside!r}")
        if self.closing_radius < 0 or self.min_component_px < 0 or self.body_opening_radius < 0:
            raise ValueError("ParenchymaParams: closing_radius, min_component_px and "
                             "body_opening_radius must be >= 0, got "
                             f"{self.closing_radius}, {self.min_component_px} and "
                             f"{self.body_opening_radius}")
        for name in ("hull_fraction", "group_fraction", "link_overlap", "continue_overlap"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"ParenchymaParams.{name} must be in (0, 1], got {v}")
        if self.tolerance_hu <= 0 or self.max_iterations < 1:
            raise ValueError("ParenchymaParams: tolerance_hu must be > 0 and "
                             "max_iterations >= 1")
        if self.continue_ratio < 1.0:
            raise ValueError(f"ParenchymaParams.continue_ratio must be >= 1, "
                             f"got {self.continue_ratio}")


@dataclass
class ParenchymaResult:
    """The lung mask of a volume.

    Attributes:
        mask: bool ``(z, y, x)``, True in the lung parenchyma.
        thresholds: float ``(z,)``, the converged iterative threshold of every slice (HU;
            −1024 on a slice that is all padding).
        seconds: wall time of :func:`segment_lungs`.
        params: the parameters used.
        spacing: voxel size in mm ``(z, y, x)`` when the caller gave it (for volumes).
    """

    mask: np.ndarray
    thresholds: np.ndarray
    seconds: float = 0.0
    params: ParenchymaParams = field(default_factory=ParenchymaParams)
    spacing: tuple[float, float, float] | None = None

    def volume_ml(self, spacing: tuple[float, float, float] | None = None) -> float:
        """Lung volume in mL, from ``spacing`` (mm, z y x) or the one given when segmenting."""
        sp = spacing if spacing is not None else self.spacing
        if sp is None:
            raise ValueError("volume_ml needs the voxel spacing (mm, z y x)")
        return float(self.mask.sum()) * float(np.prod(sp)) / 1000.0

    @property
    def slices_with_lung(self) -> int:
        return int(self.mask.any(axis=(1, 2)).sum())


def disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def disk_rectangles(radius: int) -> list[tuple[int, int]]:
    """The digital disk of ``radius`` as a union of centred rectangles (half-height,
    half-width): dilating by the disk is the OR of the rectangles' (separable) dilations,
    eroding by it the AND of their erosions."""
    widths = [int(np.floor(np.sqrt(radius * radius - dy * dy))) for dy in range(radius + 1)]
    return [(max(dy for dy in range(radius + 1) if widths[dy] >= w), w)
            for w in sorted(set(widths), reverse=True)]


def _filter_rect(mask: np.ndarray, rects: list[tuple[int, int]], op) -> np.ndarray:
    """OR (max filters) or AND (min filters) of separable rectangle filters on (z, y, x)."""
    out = None
    for h, w in rects:
        m = op(mask, size=2 * w + 1, axis=2, mode="nearest") if w else mask
        m = op(m, size=2 * h + 1, axis=1, mode="nearest") if h else m
        out = m if out is None else (np.maximum(out, m) if op is ndimage.maximum_filter1d
                                     else np.minimum(out, m))
    return out


_U64 = np.dtype("<u8")


def _shift_x(words: np.ndarray, s: int, fill: bool) -> np.ndarray:
    """Bit-packed rows (..., K) of little-endian uint64 (bit j of word i = pixel 64i + j):
    the image moved by ``s`` pixels along x (out[x] = in[x - s]), ``fill`` shifted in."""
    if s == 0:
        return words
    k = abs(s)
    edge = np.array(~np.uint64(0) if fill else 0, dtype=_U64)
    if s > 0:
        out = words << np.uint64(k)
        out[..., 1:] |= words[..., :-1] >> np.uint64(64 - k)
        out[..., 0] |= edge >> np.uint64(64 - k)
    else:
        out = words >> np.uint64(k)
        out[..., :-1] |= words[..., 1:] << np.uint64(64 - k)
        out[..., -1] |= edge << np.uint64(64 - k)
    return out


def _run_filter(words: np.ndarray, rects: list[tuple[int, int]], dilate: bool) -> np.ndarray:
    """Dilation (OR) or erosion (AND) of bit-packed slices (z, y, K) by the union of
    centred rectangles ``rects`` (half-height, half-width)."""
    comb = np.bitwise_or if dilate else np.bitwise_and
    fill = not dilate  # what lies beyond the array: absent for OR, present for AND
    by_w: dict[int, np.ndarray] = {0: words}
    acc = words
    for s in range(1, max(w for _, w in rects) + 1):  # x runs grow by one pixel a step
        acc = comb(comb(acc, _shift_x(words, s, fill)), _shift_x(words, -s, fill))
        by_w[s] = acc
    out = None
    for h, w in rects:
        hx = by_w[w]
        r = hx.copy()
        for d in range(1, h + 1):  # y runs: rows are whole (z, y) lines of words
            comb(r[:, d:], hx[:, :-d], out=r[:, d:])
            comb(r[:, :-d], hx[:, d:], out=r[:, :-d])
        # rows beyond the array are left out of the OR / AND, i.e. absent / present
        out = r if out is None else (out | r if dilate else out & r)
    return out


def closing_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing of every slice of ``mask`` (z, y, x) with a disk of ``radius``.

    Exactly ``ndimage.binary_closing(slice, disk(radius))`` on the slice padded by
    2·radius + 1 replicated edge pixels (so the image border does not erode what touches
    it) and cropped back (tested). The disk is a union of rectangles, so dilating by it
    is the OR of separable rectangle dilations (eroding: the AND); these run on the
    slices packed 64 pixels to a machine word, so a one-pixel step along x or y is one
    shift or one slice of the array for 64 pixels at once."""
    return _morph_disk(mask, radius, closing=True)


def opening_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening of every slice of ``mask`` (z, y, x) with a disk of ``radius``, the
    image edge replicated as in :func:`closing_disk` (what touches the border is not
    eroded from it)."""
    return _morph_disk(mask, radius, closing=False)


def _morph_disk(mask: np.ndarray, radius: int, closing: bool) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    if radius > 60:  # beyond one word's shift; never needed for the method (radius 5)
        return _morph_disk_filters(mask, radius, closing)
    rects = disk_rectangles(radius)
    pad = 2 * radius + 1  # deep enough that the padded image's own edge never matters
    _, h, w = mask.shape
    wp = w + 2 * pad
    extra = (-wp) % 64  # whole words; the extra columns lie beyond the pad (no effect)
    m = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    if extra:
        m = np.pad(m, ((0, 0), (0, 0), (0, extra)))
    words = np.packbits(m, axis=2, bitorder="little").view(_U64)
    out = _run_filter(_run_filter(words, rects, closing), rects, not closing)
    bits = np.unpackbits(out.view(np.uint8), axis=2, bitorder="little")
    return bits[:, pad:pad + h, pad:pad + w].view(bool)


def _morph_disk_filters(mask: np.ndarray, radius: int, closing: bool) -> np.ndarray:
    """:func:`_morph_disk` with scipy's running max/min filters (any radius)."""
    rects = disk_rectangles(radius)
    pad = 2 * radius + 1
    m = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)), mode="edge").view(np.uint8)
    first, second = ((ndimage.maximum_filter1d, ndimage.minimum_filter1d) if closing
                     else (ndimage.minimum_filter1d, ndimage.maximum_filter1d))
    out = _filter_rect(_filter_rect(m, rects, first), rects, second).view(bool)
    return out[:, pad:-pad, pad:-pad]


def thresholds_of(hu: np.ndarray, tolerance: float = 0.5, max_iterations: int = 100,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """The iterative (intermeans) threshold of every slice of ``hu`` (z, y, x), in HU.

    Only the pixels where ``valid`` (bool, same shape) is True count; by default those not
    below −1024 HU (padding). One histogram per slice; each iteration updates all slices at
    once in O(bins). A slice without valid pixels gets −1024."""
    if valid is None:
        valid = hu >= PADDING_BELOW_HU
    nz_, nb = hu.shape[0], HU_MAX - HU_MIN + 2  # the last bin takes what is not valid
    v = np.clip(hu.reshape(nz_, -1), HU_MIN, HU_MAX).astype(np.int64) - HU_MIN
    v[~valid.reshape(nz_, -1)] = nb - 1
    v += (np.arange(nz_, dtype=np.int64) * nb)[:, None]
    hist = np.bincount(v.ravel(), minlength=nz_ * nb).reshape(nz_, nb)[:, :-1]
    hist = hist.astype(np.float64)
    nb -= 1
    values = np.arange(nb, dtype=np.float64)
    csum, cval = np.cumsum(hist, axis=1), np.cumsum(hist * values, axis=1)
    total, total_val = csum[:, -1], cval[:, -1]
    present = hist > 0
    lo = np.argmax(present, axis=1)
    hi = nb - 1 - np.argmax(present[:, ::-1], axis=1)
    t = np.where(total > 0, (lo + hi) / 2.0, 0.0)
    active = total > 0
    rows = np.arange(nz_)
    for _ in range(max_iterations):
        i = np.floor(t).astype(np.int64)
        n_lo, s_lo = csum[rows, i], cval[rows, i]
        n_hi, s_hi = total - n_lo, total_val - s_lo
        ok = active & (n_lo > 0) & (n_hi > 0)
        new = np.where(ok, (s_lo / np.maximum(n_lo, 1) + s_hi / np.maximum(n_hi, 1)) / 2.0, t)
        moved = np.abs(new - t)
        t = new
        active = ok & (moved >= tolerance)
        if not active.any():
            break
    return t + HU_MIN


def iterative_threshold(hu2d: np.ndarray, tolerance: float = 0.5,
                        max_iterations: int = 100) -> float:
    """The iterative (intermeans) global threshold of one slice, in HU (padding below
    −1024 HU left out)."""
    return float(thresholds_of(np.asarray(hu2d)[None], tolerance, max_iterations)[0])


def reconstruction_exterior(shape: tuple[int, int]) -> np.ndarray:
    """Bool (y, x): the pixels outside the reconstruction circle, the largest circle centred
    in the image."""
    h, w = shape
    r = min(h, w) / 2.0
    yy = (np.arange(h) - (h - 1) / 2.0) ** 2
    xx = (np.arange(w) - (w - 1) / 2.0) ** 2
    return yy[:, None] + xx[None, :] > r * r


def padding_mask(hu: np.ndarray) -> np.ndarray:
    """Bool (z, y, x): what is no image. Pixels below −1024 HU, and on every slice whose
    four corners (outside the reconstruction circle) hold one value ≤ −1000 HU (real air
    is noisy) the whole exterior of the reconstruction circle."""
    pad = hu < PADDING_BELOW_HU
    h, w = hu.shape[1:]
    c = max(1, min(h, w) // 32)  # a corner patch, well outside the circle
    if min(h, w) >= 32:
        corners = np.concatenate([hu[:, :c, :c], hu[:, :c, -c:], hu[:, -c:, :c],
                                  hu[:, -c:, -c:]], axis=1).reshape(len(hu), -1)
        low = corners.min(axis=1)
        const = (corners.max(axis=1) == low) & (low <= -1000) & (low >= PADDING_BELOW_HU)
        if const.any():
            pad[const] |= reconstruction_exterior((h, w))
    return pad


_SLICE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_SLICE_CROSS[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected, never across z


def _slice_label_ranges(labels: np.ndarray) -> np.ndarray:
    """(z + 1,) label bounds: slice k's components are labels ``lo[k] + 1 .. lo[k + 1]``.

    ``ndimage.label`` numbers components in raster order and our structure never connects
    slices, so every slice owns one contiguous run of labels."""
    top = labels.reshape(labels.shape[0], -1).max(axis=1)
    return np.concatenate([[0], np.maximum.accumulate(top)])


def _largest_per_slice(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Bool per label: the largest component of its slice."""
    bounds = _slice_label_ranges(labels)
    largest = np.zeros(len(sizes), dtype=bool)
    for k in range(labels.shape[0]):  # a loop over slices, not pixels
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        if hi > lo:
            largest[lo + 1 + int(np.argmax(sizes[lo + 1:hi + 1]))] = True
    return largest


def _edges(a: np.ndarray) -> list[np.ndarray]:
    """The four image edges of every slice of ``a`` (z, y, x): top, bottom, left, right."""
    return [a[:, 0, :], a[:, -1, :], a[:, :, 0], a[:, :, -1]]


def _open_labels(labels: np.ndarray, n: int, pad: np.ndarray) -> np.ndarray:
    """Bool per label (0..n): the component reaches the image edge or a padding pixel
    (4-neighbour)."""
    touch = np.zeros(n + 1, dtype=bool)
    for e in _edges(labels):
        touch[e.ravel()] = True
    if pad.any():
        near = np.zeros(pad.shape, dtype=bool)
        near[:, 1:] |= pad[:, :-1]
        near[:, :-1] |= pad[:, 1:]
        near[:, :, 1:] |= pad[:, :, :-1]
        near[:, :, :-1] |= pad[:, :, 1:]
        touch[labels[near & ~pad]] = True
    touch[0] = False
    return touch


def convex_hull_fill(solid: np.ndarray) -> np.ndarray:
    """Bool (z, y, x): every slice's convex hull of ``solid`` (pixel centres), filled.

    The hull of a slice is that of its rows' leftmost and rightmost pixels (at most two
    points a row, one qhull call a slice); each row of the hull is one run of pixels."""
    out = np.zeros(solid.shape, dtype=bool)
    n, h, w = solid.shape
    xs = np.arange(w)
    for k in range(n):  # a loop over slices; the work inside is vectorised
        rows = np.flatnonzero(solid[k].any(axis=1))
        if rows.size == 0:
            continue
        sl = solid[k, rows]
        left = np.argmax(sl, axis=1)
        right = w - 1 - np.argmax(sl[:, ::-1], axis=1)
        pts = np.concatenate([np.stack([rows, left], 1), np.stack([rows, right], 1)])
        pts = pts.astype(np.float64)
        lo_x = np.full(h, np.inf)
        hi_x = np.full(h, -np.inf)
        try:
            verts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):  # a line or a point: the rows' runs are the hull
            lo_x[rows], hi_x[rows] = left, right
        else:
            y0, x0 = verts[:, 0], verts[:, 1]
            y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
            ys = np.arange(h, dtype=np.float64)[:, None]
            dy = y1 - y0
            within = (ys >= np.minimum(y0, y1)) & (ys <= np.maximum(y0, y1))
            with np.errstate(divide="ignore", invalid="ignore"):
                tpar = np.where(dy != 0, (ys - y0) / np.where(dy != 0, dy, 1), 0.0)
            xat = x0 + tpar * (x1 - x0)
            flat = within & (dy == 0)  # a horizontal edge: both its ends
            lo_x = np.minimum(np.where(within, xat, np.inf).min(axis=1),
                              np.where(flat, np.minimum(x0, x1), np.inf).min(axis=1))
            hi_x = np.maximum(np.where(within, xat, -np.inf).max(axis=1),
                              np.where(flat, np.maximum(x0, x1), -np.inf).max(axis=1))
        eps = 1e-6
        out[k] = (xs[None, :] >= np.ceil(lo_x - eps)[:, None]) & \
                 (xs[None, :] <= np.floor(hi_x + eps)[:, None])
    return out


def body_inside(bright: np.ndarray, pad: np.ndarray, opening_radius: int = 2,
                hull_fraction: float = 0.5) -> np.ndarray:
    """Bool (z, y, x): what lies inside the body on every slice.

    ``bright`` (bool, HU above the threshold, padding excluded) and ``pad`` (bool, padding)
    are ``(z, y, x)``. The body is each slice's largest 4-connected component of ``bright``
    opened with a disk of ``opening_radius`` (thin layers that touch the skin — blankets,
    the table's shell — drop off). Each 4-connected region of the rest (padding excluded)
    is inside when the body encloses it; a region reaching the image edge or the padding
    is inside only when at least ``hull_fraction`` of it lies in the body's convex hull
    (a lung cut by the field of view does; the air around the patient does not)."""
    core = opening_disk(bright, opening_radius) if opening_radius > 0 else bright
    labels, n = ndimage.label(core, structure=_SLICE_CROSS)
    if n == 0:
        return np.zeros(bright.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    largest = _largest_per_slice(labels, sizes)
    largest[0] = False
    body = largest[labels]
    rest, m = ndimage.label(~body & ~pad, structure=_SLICE_CROSS)
    inside = np.ones(m + 1, dtype=bool)
    is_open = _open_labels(rest, m, pad)
    if is_open.any():
        total = np.bincount(rest.ravel(), minlength=m + 1)
        hull = convex_hull_fill(body)
        in_hull = np.bincount(rest[hull], minlength=m + 1)
        inside[is_open] = in_hull[is_open] >= hull_fraction * total[is_open]
    inside[0] = True  # label 0 is the body (and the padding, removed below)
    return inside[rest] & ~pad


def _bbox(inside: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """In-plane bounding box (all slices of the chunk) of ``inside``, grown by ``margin``."""
    ys = np.flatnonzero(inside.any(axis=(0, 2)))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(inside.any(axis=(0, 1)))
    h, w = inside.shape[1:]
    return (slice(max(0, ys[0] - margin), min(h, ys[-1] + 1 + margin)),
            slice(max(0, xs[0] - margin), min(w, xs[-1] + 1 + margin)))


def _candidates(hu: np.ndarray, p: ParenchymaParams,
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Steps 1–5 on a chunk of slices (z, y, x): the closed dark side inside the body (or,
    for ``outside="border"``, without the components touching the border or the padding),
    the dark side inside the body before the closing (None for ``"border"``), and the
    thresholds. Nothing connects slices."""
    pad = padding_mask(hu)
    t = thresholds_of(hu, p.tolerance_hu, p.max_iterations, valid=~pad)
    dark = (hu <= t[:, None, None]) & ~pad
    out = np.zeros(hu.shape, dtype=bool)
    if p.outside == "body":
        inside = body_inside(~dark & ~pad, pad, p.body_opening_radius, p.hull_fraction)
        # only the body's box needs the closing: a pixel's closing depends on pixels
        # within 2·radius of it, so a margin of 2·radius + 1 keeps the result exact
        box = _bbox(inside, 2 * p.closing_radius + 1)
        if box is None:
            return out, out, t
        ys, xs = box
        out[:, ys, xs] = closing_disk(dark[:, ys, xs], p.closing_radius) & inside[:, ys, xs]
        return out, dark & inside, t
    closed = closing_disk(dark, p.closing_radius) & ~pad
    labels, n = ndimage.label(closed, structure=_SLICE_CROSS)
    if n:
        drop = _open_labels(labels, n, pad)
        drop[0] = True
        out = ~drop[labels]
    return out, None, t


def _overlaps(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of components of adjacent slices that overlap: (label a in slice k, label b
    in slice k + 1, overlapping pixels); ``labels`` from an in-plane labelling."""
    bounds = _slice_label_ranges(labels)
    out_a, out_b, out_c = [], [], []
    for k in range(labels.shape[0] - 1):  # a loop over slices, not pixels
        lo_a, lo_b = int(bounds[k]), int(bounds[k + 1])
        na, nb = lo_b - lo_a, int(bounds[k + 2]) - lo_b
        if na == 0 or nb == 0:
            continue
        la, lb = labels[k], labels[k + 1]
        both = (la > 0) & (lb > 0)
        key = (la[both] - lo_a - 1).astype(np.int64) * nb + (lb[both] - lo_b - 1)
        counts = np.bincount(key, minlength=na * nb)
        hit = np.flatnonzero(counts)
        out_a.append(hit // nb + lo_a + 1)
        out_b.append(hit % nb + lo_b + 1)
        out_c.append(counts[hit])
    if not out_a:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_c)


@dataclass
class _Parts:
    """In-plane components of a bool chunk cut to a box: labels, sizes (index 0:
    background), overlaps inside the chunk (local labels of adjacent slices, overlap) and
    the offset that makes the labels global (``offset + local``; ``offset`` itself stands
    for the background)."""

    labels: np.ndarray
    sizes: np.ndarray
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
    offset: int = 0

    @classmethod
    def of(cls, m: np.ndarray, volume: bool) -> _Parts:
        labels, n = ndimage.label(m, structure=_SLICE_CROSS)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        if n < np.iinfo(np.uint16).max:  # kept until the mask is painted: keep it small
            labels = labels.astype(np.uint16)
        e = np.zeros(0, dtype=np.int64)
        return cls(labels, sizes, _overlaps(labels) if volume and n else (e, e, e))

    def full_slice(self, k: int, box: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
        """Global labels of the chunk's slice ``k`` (0-based in the chunk) on the image."""
        out = np.zeros(shape, dtype=np.int64)
        lab = self.labels[k]
        out[box] = np.where(lab > 0, lab.astype(np.int64) + self.offset, 0)
        return out

    def local(self, flags: np.ndarray) -> np.ndarray:
        out = flags[self.offset:self.offset + len(self.sizes)].copy()
        out[0] = False
        return out


@dataclass
class _Block:
    """A chunk of slices after steps 1–5: the components of the candidates and, for the
    airway rule, of the dark side inside the body before the closing (``raw``, a subset of
    the candidates: ``raw_to_cand`` maps each raw component to the candidate holding it),
    all in the candidates' box (``ys``, ``xs``)."""

    k0: int
    ys: slice
    xs: slice
    cand: _Parts
    raw: _Parts | None
    raw_to_cand: np.ndarray | None

    @classmethod
    def of(cls, k0: int, cand: np.ndarray, raw: np.ndarray | None, volume: bool) -> _Block:
        ys, xs = _bbox(cand, 0) or (slice(0, 0), slice(0, 0))
        c = _Parts.of(cand[:, ys, xs], volume)
        if raw is None or not volume:
            return cls(k0, ys, xs, c, None, None)
        r = _Parts.of(raw[:, ys, xs] & cand[:, ys, xs], volume)
        to_cand = np.zeros(len(r.sizes), dtype=np.int64)
        on = r.labels > 0
        to_cand[r.labels[on]] = c.labels[on]
        return cls(k0, ys, xs, c, r, to_cand)

    @property
    def n_slices(self) -> int:
        return self.cand.labels.shape[0]


def _global_pairs(parts: list[_Parts], blocks: list[_Block], shape: tuple[int, int],
                  ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Give ``parts`` (one per block) global offsets; return the number of global labels,
    the background flags and all overlaps (inside chunks and across chunk boundaries)."""
    offset = 0
    for q in parts:
        q.offset = offset
        offset += len(q.sizes)
    background = np.zeros(offset, dtype=bool)
    background[[q.offset for q in parts]] = True
    found = [[q.pairs[0] + q.offset, q.pairs[1] + q.offset, q.pairs[2]] for q in parts]
    for i in range(len(blocks) - 1):  # overlaps across chunk boundaries
        prev, nxt = blocks[i], blocks[i + 1]
        la = parts[i].full_slice(prev.n_slices - 1, (prev.ys, prev.xs), shape)
        lb = parts[i + 1].full_slice(0, (nxt.ys, nxt.xs), shape)
        both = (la > 0) & (lb > 0)
        if both.any():
            key, cnt = np.unique(la[both] * offset + lb[both], return_counts=True)
            found.append([key // offset, key % offset, cnt])
    a, b, c = (np.concatenate([f[i] for f in found]).astype(np.int64) for i in range(3))
    return offset, background, a, b, c


def _keep(blocks: list[_Block], p: ParenchymaParams, shape: tuple[int, int],
          volume: bool) -> np.ndarray:
    """Steps 6–8 over all blocks: which (global) candidate labels are lung."""
    parts = [b.cand for b in blocks]
    n, background, a, b, c = _global_pairs(parts, blocks, shape)
    sizes = np.concatenate([q.sizes for q in parts])
    keep = (sizes >= p.min_component_px) & ~background
    if not (volume and p.volume_rules and keep.any()):
        return keep
    # 7. groups of kept components that continue one another; small groups go
    link = keep[a] & keep[b] & (c >= p.link_overlap * np.minimum(sizes[a], sizes[b]))
    graph = coo_matrix((np.ones(int(link.sum())), (a[link], b[link])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    volume_of = np.bincount(group, weights=np.where(keep, sizes, 0))
    keep &= volume_of[group] >= p.group_fraction * volume_of.max()
    # 8a. tips: small pieces that taper away from a kept lung and end inside the volume
    if p.tips and all(bl.raw is not None for bl in blocks):
        keep |= _tips(blocks, keep, sizes, p, shape)
    # 8b. small components continuing a kept one that is not smaller come back
    small = (sizes < p.min_component_px) & (sizes > 0) & ~background
    while True:
        grow = np.zeros(n, dtype=bool)
        for u, v in ((a, b), (b, a)):  # u is put back by v
            ok = small[u] & ~keep[u] & keep[v] & (sizes[v] >= p.continue_ratio * sizes[u]) & \
                 (c >= p.continue_overlap * sizes[u])
            grow[u[ok]] = True
        if not grow.any():
            return keep
        keep |= grow


def _slice_of(parts: _Parts, k0: int) -> np.ndarray:
    """The slice (volume index) of each local label of ``parts`` (index 0: -1)."""
    bounds = _slice_label_ranges(parts.labels)
    z = np.searchsorted(bounds, np.arange(len(parts.sizes)), side="left") - 1 + k0
    z[0] = -1
    return z


def _tips(blocks: list[_Block], keep: np.ndarray, cand_sizes: np.ndarray,
          p: ParenchymaParams, shape: tuple[int, int]) -> np.ndarray:
    """Step 8a over all blocks: which (global) candidate labels hold a lung's tip (an apex,
    a costophrenic recess). The pieces of the dark side before the closing (``raw``) whose
    candidate is small and not kept are linked across slices where they overlap by at
    least ``continue_overlap`` of the smaller: a group of them is a tip when it continues
    a kept lung (one of its pieces lies at least ``continue_overlap`` on a raw piece of a
    kept candidate that is not smaller than its own), never grows away from it (no piece
    over ``continue_ratio`` times the largest piece touching the lung), and ends inside
    the volume (no piece on its first or last slice). A trachea leaves the volume; an apex
    or a recess tapers to nothing inside it. The raw pieces keep an apex and the trachea
    beside it apart even where the closing merged them."""
    parts = [bl.raw for bl in blocks]
    n, background, a, b, c = _global_pairs(parts, blocks, shape)
    sizes = np.concatenate([q.sizes for q in parts]).astype(np.int64)
    cand_of = np.concatenate([np.where(bl.raw_to_cand > 0, bl.raw_to_cand + bl.cand.offset, 0)
                              for bl in blocks])
    z = np.concatenate([_slice_of(q, bl.k0) for q, bl in zip(parts, blocks)])
    n_slices = sum(bl.n_slices for bl in blocks)
    csize = cand_sizes[cand_of]
    small = ~background & (cand_of > 0) & ~keep[cand_of] & (csize < p.min_component_px)
    out = np.zeros(len(keep), dtype=bool)
    if not small.any():
        return out
    link = small[a] & small[b] & (c >= p.continue_overlap * np.minimum(sizes[a], sizes[b]))
    graph = coo_matrix((np.ones(int(link.sum())), (a[link], b[link])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    touching = np.zeros(n, dtype=np.int64)  # per group: its largest piece touching a lung
    for u, v in ((a, b), (b, a)):  # u continues the kept v
        ok = small[u] & ~small[v] & ~background[v] & keep[cand_of[v]] & \
            (csize[v] >= csize[u]) & (c >= p.continue_overlap * sizes[u])
        np.maximum.at(touching, group[u[ok]], sizes[u[ok]])
    largest = np.zeros(n, dtype=np.int64)
    np.maximum.at(largest, group[small], sizes[small])
    ends = np.zeros(n, dtype=bool)
    at_end = small & ((z == 0) | (z == n_slices - 1))
    ends[group[at_end]] = True
    tip = (touching > 0) & ~ends & (largest <= p.continue_ratio * touching)
    out[cand_of[small & tip[group]]] = True
    out[0] = False
    return out


AIRWAY_SEED_PX = 30  # smaller dark pieces do not start an airway
AIRWAY_OVERLAP = 0.5  # the next slice's piece lies at least this much on the airway
AIRWAY_GROWTH = 1.5  # ... and is at most this much larger than it


def _airway(blocks: list[_Block], keep: np.ndarray, p: ParenchymaParams,
            shape: tuple[int, int]) -> np.ndarray:
    """Step 9 (airways), over all blocks: which global raw labels (dark side inside the
    body, before the closing) are trachea or bronchi. Seeds: raw pieces whose candidate
    component steps 6–8 removed (the trachea above the apex); an airway continues into a raw piece of an adjacent slice that
    lies at least half on it and is at most 1.5 times as large as it and as the airway's
    seed (a tube keeps its calibre; never the lung it enters, not even on thin slices,
    where a lung grows from its apex by less than 1.5 times a slice)."""
    parts = [b.raw for b in blocks]
    n, background, a, b, c = _global_pairs(parts, blocks, shape)
    sizes = np.concatenate([q.sizes for q in parts])
    cand_of = np.concatenate([np.where(bl.raw_to_cand > 0, bl.raw_to_cand + bl.cand.offset, 0)
                              for bl in blocks])
    airway = (sizes >= AIRWAY_SEED_PX) & (sizes < p.min_component_px) & ~background & \
        ~keep[cand_of]
    seed = np.where(airway, sizes, 0)  # the size of the seed each airway piece grew from
    while True:
        grow = np.zeros(n, dtype=bool)
        for u, v in ((a, b), (b, a)):  # v continues the airway u
            ok = airway[u] & ~airway[v] & (c >= AIRWAY_OVERLAP * sizes[v]) & \
                 (sizes[v] <= AIRWAY_GROWTH * np.minimum(sizes[u], seed[u]))
            grow[v[ok]] = True
            seed[v[ok]] = seed[u[ok]]
        if not grow.any():
            return airway
        airway |= grow


def _paint(block: _Block, keep: np.ndarray, airway: np.ndarray | None,
           p: ParenchymaParams, shape: tuple[int, int]) -> np.ndarray:
    """The block's mask: kept candidates, less the airways that the closing merged into
    a lung (their lumen, and what the closing added within ``closing_radius + 1`` px)."""
    out = np.zeros((block.n_slices,) + shape, dtype=bool)
    sub = block.cand.local(keep)[block.cand.labels]
    if airway is not None and block.raw is not None:
        lumen = block.raw.local(airway)[block.raw.labels] & sub
        added = (block.cand.labels > 0) & (block.raw.labels == 0)
        ring = disk(p.closing_radius + 1)
        m = p.closing_radius + 1
        for k in np.flatnonzero(lumen.any(axis=(1, 2))):  # slices with an airway
            ys, xs = _bbox(lumen[k:k + 1], m)
            near = ndimage.binary_dilation(lumen[k, ys, xs], structure=ring)
            sub[k, ys, xs] &= ~(lumen[k, ys, xs] | (near & added[k, ys, xs]))
    out[:, block.ys, block.xs] = sub
    return out


# cancelling raises lungviewer.cancel.Cancelled (one exception for every job)


def _as_hu(hu: np.ndarray, ndim: int, what: str) -> np.ndarray:
    hu = np.asarray(hu)
    if hu.ndim != ndim:
        axes = "(z, y, x)" if ndim == 3 else "(y, x)"
        raise ValueError(f"{what} needs a {ndim}-D {axes} array of HU, got shape {hu.shape}")
    if min(hu.shape) == 0:
        raise ValueError(f"{what}: empty image, shape {hu.shape}")
    if hu.dtype == bool or not (np.issubdtype(hu.dtype, np.integer)
                                or np.issubdtype(hu.dtype, np.floating)):
        raise ValueError(f"{what} needs HU numbers (int16), got dtype {hu.dtype}")
    if np.issubdtype(hu.dtype, np.floating):
        if not np.isfinite(hu).all():
            raise ValueError(f"{what}: the HU array holds NaN or infinite values")
        hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return hu


ASSUMED_PIXEL_MM = 0.7  # in-plane pixel size when the caller gives no spacing
ASSUMED_SLICE_MM = 2.5  # slice spacing when the caller gives none
RIB_REACH_MM = 10.0  # a rib within this distance along z counts (ribs run obliquely)


def rib_slices(slice_mm: float) -> int:
    """Slices either side within :data:`RIB_REACH_MM`."""
    return max(1, int(round(RIB_REACH_MM / max(float(slice_mm), 0.1))))


BONE_HU = 300  # ribs, spine, sternum: the chest wall a mass on the pleura lies against
WALL_FRACTION = 0.75  # the filled piece comes this many mass radii near bone (11 mm)
MIDDLE_FRACTION = 0.45  # ... and its centre lies this far out from the middle to the lung's side


def _slice_of_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """(n + 1,) the slice of each label 0..n of an in-plane labelling (label 0: 0)."""
    bounds = _slice_label_ranges(labels)
    z = np.searchsorted(bounds, np.arange(n + 1), side="left") - 1
    z[0] = 0
    return np.clip(z, 0, labels.shape[0] - 1)


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of every slice of ``mask`` (z, y, x) with a disk of ``radius``
    (nothing beyond the image), on bit-packed slices as :func:`closing_disk`."""
    if radius <= 0:
        return mask.copy()
    _, h, w = mask.shape
    pad = radius + 1
    wp = w + 2 * pad
    m = np.pad(mask, ((0, 0), (pad, pad), (pad, pad + (-wp) % 64)))
    words = np.packbits(m, axis=2, bitorder="little").view(_U64)
    out = _run_filter(words, disk_rectangles(radius), True)
    bits = np.unpackbits(out.view(np.uint8), axis=2, bitorder="little")
    return bits[:, pad:pad + h, pad:pad + w].view(bool)


def fill_pleural_masses(mask: np.ndarray, hu: np.ndarray, thresholds: np.ndarray,
                        radius_px: float, rib_slices: int = 4) -> np.ndarray:
    """Step 10: tissue in a lung's notch goes back into the lung — a mass on the pleura,
    which the threshold leaves out and which cuts the lung's outline.

    ``mask`` (bool), ``hu`` (z, y, x) and ``thresholds`` (z,) from steps 1–9. The columns are
    split at the middle of the mask's extent (one lung each side, so the mediastinum between
    the lungs is never bridged); each side is closed with a disk of ``radius_px`` (at half
    resolution: 2 × 2 blocks, any pixel of lung makes a block lung, the disk halved). The
    pieces (in-plane components) of blocks the closing adds count where they come within
    :data:`WALL_FRACTION` × the radius of a rib (bone, > :data:`BONE_HU`, apart from the
    bone that crosses the middle: the spine, the sternum) on the slice or one of the
    ``rib_slices`` either side (:data:`RIB_REACH_MM`: ribs run obliquely) — the chest wall a pleural mass
    lies on — and whose centre lies at least :data:`MIDDLE_FRACTION` of the way from the
    middle to the lung's lateral edge on that slice: the hilum's vessels and the
    mediastinum, which the closing also bridges, lie in the medial part. (A mass in the
    paravertebral gutter or behind the sternum is therefore left to the radius-5 closing.) The pixels of those blocks, and of the lung blocks beside them (4-
    neighbours: the mass's rim), that are brighter than the slice's threshold join the
    mask (the air of a notch stays out; elsewhere a block holding lung adds nothing, so
    the outline is not grown)."""
    if radius_px <= 0 or not mask.any():
        return mask
    r = max(1, int(round(radius_px / 2.0)))
    rb = max(1, int(round(radius_px * WALL_FRACTION / 2.0)))
    out = mask.copy()
    n, h, w = mask.shape
    # only what can matter: slices with lung (and their ribs' reach), rows of the lungs
    # widened by what the closing and the rib reach can see (even, so the 2 × 2 blocks
    # are the image's)
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    mid = int(xs[0] + xs[-1]) // 2 + 1
    z0, z1 = max(int(zs[0]) - rib_slices, 0), min(int(zs[-1]) + rib_slices + 1, n)
    margin = 2 * (2 * r + rb + 3)
    y0 = max(int(ys[0]) - margin, 0) // 2 * 2
    y1 = min(int(ys[-1]) + 1 + margin, h)

    def side(c0: int, c1: int) -> None:
        if c1 <= c0:
            return
        m = mask[z0:z1, y0:y1, c0:c1]
        sub = hu[z0:z1, y0:y1, c0:c1]
        small = _blocks(m)
        closed = closing_disk(small, r)
        new = closed & ~small  # blocks the closing adds, in pieces lying on the chest wall
        bone = _blocks(sub > BONE_HU)
        # ribs only: the spine and the sternum cross the middle (the medial edge here)
        blab, nb = ndimage.label(bone, structure=_SLICE_CROSS)
        axial = np.zeros(nb + 1, dtype=bool)
        axial[(blab[:, :, -1] if c0 == 0 else blab[:, :, 0]).ravel()] = True
        axial[0] = True
        bone &= ~axial[blab]
        ribs = bone.copy()  # ribs run obliquely: one on this slice or a neighbour
        for d in range(1, rib_slices + 1):
            ribs[d:] |= bone[:-d]
            ribs[:-d] |= bone[d:]
        labels, k = ndimage.label(new, structure=_SLICE_CROSS)
        if k == 0:
            return
        ok = np.zeros(k + 1, dtype=bool)
        ok[labels[new & dilate_disk(ribs, rb)]] = True
        # ... and away from the middle: the hila lie in the medial part of each side
        wb = small.shape[2]
        medial = wb - 1 if c0 == 0 else 0
        cols_any = small.any(axis=1)  # (z, x)
        has = cols_any.any(axis=1)
        lateral = np.where(has, np.argmax(cols_any, axis=1) if c0 == 0
                           else wb - 1 - np.argmax(cols_any[:, ::-1], axis=1), medial)
        zi, yi, xi = np.nonzero(labels)
        li = labels[zi, yi, xi]
        size = np.bincount(li, minlength=k + 1)
        mean_col = np.bincount(li, weights=xi, minlength=k + 1) / np.maximum(size, 1)
        z_of = np.zeros(k + 1, dtype=np.int64)
        z_of[li] = zi
        span = np.abs(lateral[z_of] - medial).astype(np.float64)
        ok &= np.abs(mean_col - medial) >= MIDDLE_FRACTION * np.maximum(span, 1.0)
        ok[0] = False
        new = ok[labels]
        grown = np.zeros_like(new)  # ... and lung blocks beside them (the mass's rim)
        grown[:, 1:] |= new[:, :-1]
        grown[:, :-1] |= new[:, 1:]
        grown[:, :, 1:] |= new[:, :, :-1]
        grown[:, :, :-1] |= new[:, :, 1:]
        new |= grown & closed
        up = new.repeat(2, axis=1).repeat(2, axis=2)[:, :m.shape[1], :m.shape[2]]
        out[z0:z1, y0:y1, c0:c1] |= up & ~m & (sub > thresholds[z0:z1, None, None])

    with ThreadPoolExecutor(max_workers=2) as pool:  # the two sides share no pixel
        list(pool.map(lambda c: side(*c), ((0, mid), (mid, w))))
    return out


def _blocks(m: np.ndarray) -> np.ndarray:
    """2 × 2 blocks of bool (z, y, x) slices: a block is set when any of its pixels is (an
    odd last row or column makes blocks of its own)."""
    a = m[:, ::2, ::2].copy()
    a[:, :m[:, 1::2].shape[1]] |= m[:, 1::2, ::2]
    a[:, :, :m[:, :, 1::2].shape[2]] |= m[:, ::2, 1::2]
    b = m[:, 1::2, 1::2]
    a[:, :b.shape[1], :b.shape[2]] |= b
    return a


def segment_slice(hu2d: np.ndarray, params: ParenchymaParams = ParenchymaParams(),
                  ) -> tuple[np.ndarray, float]:
    """Lung mask (bool ``(y, x)``) and converged threshold (HU) of one axial slice of HU
    (``int16`` ``(y, x)``; floats are rounded): steps 1–6, no neighbouring slices. A slice
    without lung (above the apex, below the bases, all air) gives an empty mask."""
    hu2d = _as_hu(hu2d, 2, "segment_slice")
    cand, _, t = _candidates(hu2d[None], params)
    block = _Block.of(0, cand, None, volume=False)
    keep = _keep([block], params, hu2d.shape, False)
    mask = _paint(block, keep, None, params, hu2d.shape)
    mask = fill_pleural_masses(mask, hu2d[None], t, params.mass_radius_mm / ASSUMED_PIXEL_MM,
                               0)
    return mask[0], float(t[0])


def segment_lungs(hu: np.ndarray, params: ParenchymaParams = ParenchymaParams(),
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  spacing: tuple[float, float, float] | None = None,
                  chunk: int = 16) -> ParenchymaResult:
    """Lung parenchyma mask of a whole volume of HU, ``int16`` ``(z, y, x)`` (threshold
    method, steps 1–8 of the module docstring).

    Steps 1–5 run on chunks of ``chunk`` slices at once (vectorised over the chunk, chunks
    in a thread pool: scipy releases the GIL); with ``params.volume_rules=False`` the
    result is identical to :func:`segment_slice` on every slice (tested).
    ``progress(done, total)`` is called after each chunk; ``cancel()`` returning True
    stops the work with :class:`lungviewer.cancel.Cancelled`. ``spacing`` (mm, z y x) is kept
    in the result for :meth:`ParenchymaResult.volume_ml`.

    What it captures: the air-filled lung (about −950…−500 HU) with the vessels and the
    nodules that the radius-5 closing bridges (up to ~10 px across) inside it, also where
    the field of view cuts the lung. A nodule on the pleura stays inside only where a
    radius-5 disk does not fit in the tissue: most of a small one (~6 px across: 80 % in
    the tests), almost none of a large one. What it does not capture: larger nodules and
    consolidation (left as holes, or cut off at the pleura, since a threshold method sees
    them as tissue), the trachea and main bronchi (removed by the size rule where they are
    apart from the lungs and by the airway rule where the closing merged them in), and on
    single slices whatever air the body encloses besides the lungs (bowel gas, air under a
    blanket); on volumes the 3-D grouping removes such air unless it continues into a
    lung."""
    hu = _as_hu(hu, 3, "segment_lungs")
    t0 = time.perf_counter()
    n = hu.shape[0]
    chunk = max(1, int(chunk))
    mask = np.zeros(hu.shape, dtype=bool)
    thresholds = np.zeros(n)
    starts = list(range(0, n, chunk))
    blocks: dict[int, _Block] = {}

    def work(k0: int) -> int:
        if cancel is not None and cancel():
            return -1
        k1 = min(n, k0 + chunk)
        cand, raw, thresholds[k0:k1] = _candidates(hu[k0:k1], params)
        blocks[k0] = _Block.of(k0, cand, raw, volume=params.volume_rules)
        return k1

    def paint(block: _Block) -> None:
        k0 = block.k0
        mask[k0:k0 + block.n_slices] = _paint(block, keep, airway, params, hu.shape[1:])

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for k1 in pool.map(work, starts):
            if k1 < 0 or (cancel is not None and cancel()):
                pool.shutdown(cancel_futures=True)
                raise Cancelled("lung segmentation was cancelled")
            if progress is not None and k1 < n:
                progress(k1, n)
        ordered = [blocks[k0] for k0 in starts]
        keep = _keep(ordered, params, hu.shape[1:], True)
        airway = None
        if params.volume_rules and n > 1 and all(b.raw is not None for b in ordered):
            airway = _airway(ordered, keep, params, hu.shape[1:])
        list(pool.map(paint, ordered))
    px = ASSUMED_PIXEL_MM if spacing is None else float(min(spacing[1], spacing[2]))
    dz = ASSUMED_SLICE_MM if spacing is None else float(spacing[0])
    mask = fill_pleural_masses(mask, hu, thresholds, params.mass_radius_mm / px,
                               rib_slices(dz))
    if progress is not None:
        progress(n, n)
    seconds = time.perf_counter() - t0
    log.debug("lung mask of %d slices in %.2f s", n, seconds)
    sp = None if spacing is None else tuple(float(v) for v in spacing)
    return ParenchymaResult(mask, thresholds, seconds, params, sp)  # type: ignore[arg-type]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two boolean masks of the same shape (1.0 when
    both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"dice: masks of different shapes {a.shape} and {b.shape}")
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)


def evaluate_against(mask_true: np.ndarray,
                     result: ParenchymaResult | np.ndarray) -> dict[str, float]:
    """Agreement of a segmentation (``ParenchymaResult`` or bool ``(z, y, x)`` mask) with a
    reference lung mask of the same shape: Dice, sensitivity, precision, the relative
    volume error, and the worst per-slice Dice among slices where either mask has lung."""
    t = np.asarray(mask_true, bool)
    m = np.asarray(result.mask if isinstance(result, ParenchymaResult) else result, bool)
    if t.shape != m.shape:
        raise ValueError(f"evaluate_against: reference {t.shape} and mask {m.shape} differ")
    tp = float(np.logical_and(t, m).sum())
    nt, nm = float(t.sum()), float(m.sum())
    out = {"dice": dice(t, m), "sensitivity": tp / max(nt, 1.0),
           "precision": tp / max(nm, 1.0), "volume_error": (nm - nt) / max(nt, 1.0)}
    if t.ndim == 3:
        inter = np.logical_and(t, m).sum(axis=(1, 2)).astype(float)
        tot = (t.sum(axis=(1, 2)) + m.sum(axis=(1, 2))).astype(float)
        has = tot > 0
        per = 2 * inter[has] / tot[has]
        out["worst_slice_dice"] = float(per.min()) if per.size else 1.0
    return out
