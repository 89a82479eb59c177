"""Lung parenchyma segmentation by the threshold method of Chi et al. 2022 (DESIGN M1).

Per axial slice:

1. iterative global threshold: ``T0 = (max + min) / 2``, then
   ``T = (mean of pixels above T + mean of pixels at or below T) / 2`` until T stops
   changing (computed on the slice's HU histogram, so each iteration costs O(bins);
   values below −1024 HU, e.g. the scanner's padding outside its reconstruction circle,
   count as −1024 there);
2. keep the dark side (``HU <= T``): lungs, airways and the air around the body;
3. morphological closing with a disk of radius 5 (fills vessels and nodules up to about
   10 px across inside the lung, and smooths the pleural border);
4. remove the outside air and the table: keep only what lies inside the body (each
   slice's largest bright component with its holes filled; the image edge counts as
   closed where the field of view cuts through the body, so lungs reaching the image edge
   survive). ``ParenchymaParams(outside="border")`` gives the method's literal rule
   instead: drop every component touching the image border;
5. remove components smaller than 1000 px (trachea, bowel gas, noise).

Arrays are ``(z, y, x)``; HU ``int16``. The parameters live in :class:`ParenchymaParams`
with the method's values as defaults; the per-slice thresholds are returned for inspection.

Speed: every step is vectorised over a chunk of slices (one histogram per slice, all
slices iterated together; in-plane labelling that never connects slices; the closing on
bit-packed slices, restricted to the body's box) and chunks run in a thread pool. The
result is identical to the plain per-slice version of ``bench/bench_parenchyma.py``.

Known limits: the field of view is taken to be the image rectangle (a body cut by a
circular reconstruction field, with padding outside it, loses the lungs touching the
circle); air the body encloses besides the lungs (bowel gas, air between body and table
where they touch) is kept when it survives the size limit.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

HU_MIN, HU_MAX = -1024, 3071  # histogram range; values outside are clipped into it


@dataclass(frozen=True)
class ParenchymaParams:
    """Parameters of M1; the defaults are the method's values.

    ``outside`` chooses how the air around the patient (and the table) is removed:
    ``"body"`` (default) keeps only what lies inside the body — each slice's largest bright
    component with its holes filled, the image edge counted as closed where the field of
    view cuts through the body (bright pieces touching the edge and at least
    ``body_fraction`` of the largest count as body then, their own holes excepted);
    ``"border"`` is the method's literal rule, dropping every component that touches the
    image border (it loses lungs that reach the image edge)."""

    closing_radius: int = 5  # disk radius (px) of the morphological closing
    min_component_px: int = 1000  # smaller components are removed
    tolerance_hu: float = 0.5  # the iteration stops when T moves less than this
    max_iterations: int = 100
    outside: str = "body"  # "body" or "border", see above
    body_fraction: float = 0.25  # bright pieces this large relative to the largest are body

    def __post_init__(self) -> None:
        if self.outside not in ("body", "border"):
            raise ValueError(f"ParenchymaParams.outside must be 'body' or 'border', "
                             f"got {self.outside!r}")
        if self.closing_radius < 0 or self.min_component_px < 0:
            raise ValueError("ParenchymaParams: closing_radius and min_component_px must be "
                             f">= 0, got {self.closing_radius} and {self.min_component_px}")
        if not 0.0 < self.body_fraction <= 1.0:
            raise ValueError(f"ParenchymaParams.body_fraction must be in (0, 1], "
                             f"got {self.body_fraction}")
        if self.tolerance_hu <= 0 or self.max_iterations < 1:
            raise ValueError("ParenchymaParams: tolerance_hu must be > 0 and "
                             "max_iterations >= 1")


@dataclass
class ParenchymaResult:
    """The M1 mask of a volume.

    Attributes:
        mask: bool ``(z, y, x)``, True in the lung parenchyma.
        thresholds: float ``(z,)``, the converged iterative threshold of every slice (HU).
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
    if radius <= 0:
        return mask.copy()
    if radius > 60:  # beyond one word's shift; never needed for the method (radius 5)
        return _closing_disk_filters(mask, radius)
    rects = disk_rectangles(radius)
    pad = 2 * radius + 1  # deep enough that the padded image's own edge never matters
    n, h, w = mask.shape
    wp = w + 2 * pad
    extra = (-wp) % 64  # whole words; the extra columns lie beyond the pad (no effect)
    m = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    if extra:
        m = np.pad(m, ((0, 0), (0, 0), (0, extra)))
    words = np.packbits(m, axis=2, bitorder="little").view(_U64)
    closed = _run_filter(_run_filter(words, rects, True), rects, False)
    bits = np.unpackbits(closed.view(np.uint8), axis=2, bitorder="little")
    return bits[:, pad:pad + h, pad:pad + w].view(bool)


def _closing_disk_filters(mask: np.ndarray, radius: int) -> np.ndarray:
    """:func:`closing_disk` with scipy's running max/min filters (any radius)."""
    rects = disk_rectangles(radius)
    pad = 2 * radius + 1
    m = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)), mode="edge").view(np.uint8)
    dil = _filter_rect(m, rects, ndimage.maximum_filter1d)
    out = _filter_rect(dil, rects, ndimage.minimum_filter1d).view(bool)
    return out[:, pad:-pad, pad:-pad]


def thresholds_of(hu: np.ndarray, tolerance: float = 0.5,
                  max_iterations: int = 100) -> np.ndarray:
    """The iterative (intermeans) threshold of every slice of ``hu`` (z, y, x), in HU.

    One histogram per slice; each iteration updates all slices at once in O(bins)."""
    nz_, nb = hu.shape[0], HU_MAX - HU_MIN + 1
    v = np.clip(hu.reshape(nz_, -1), HU_MIN, HU_MAX).astype(np.int64) - HU_MIN
    v += (np.arange(nz_, dtype=np.int64) * nb)[:, None]
    hist = np.bincount(v.ravel(), minlength=nz_ * nb).reshape(nz_, nb).astype(np.float64)
    values = np.arange(nb, dtype=np.float64)
    csum, cval = np.cumsum(hist, axis=1), np.cumsum(hist * values, axis=1)
    total, total_val = csum[:, -1], cval[:, -1]
    present = hist > 0
    lo = np.argmax(present, axis=1)
    hi = nb - 1 - np.argmax(present[:, ::-1], axis=1)
    t = (lo + hi) / 2.0
    active = np.ones(nz_, dtype=bool)
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
    """The iterative (intermeans) global threshold of one slice, in HU."""
    return float(thresholds_of(np.asarray(hu2d)[None], tolerance, max_iterations)[0])


_SLICE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_SLICE_CROSS[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected, never across z


def _slice_label_ranges(labels: np.ndarray) -> np.ndarray:
    """(z + 1,) label bounds: slice k's components are labels ``lo[k] + 1 .. lo[k + 1]``.

    ``ndimage.label`` numbers components in raster order and our structure never connects
    slices, so every slice owns one contiguous run of labels."""
    top = labels.reshape(labels.shape[0], -1).max(axis=1)
    return np.concatenate([[0], np.maximum.accumulate(top)])


def _body_labels(labels: np.ndarray, sizes: np.ndarray,
                 fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Bool per label: (the largest component of its slice, a component touching the
    image edge that is at least ``fraction`` of its slice's largest one but not it)."""
    bounds = _slice_label_ranges(labels)
    slice_max = np.zeros(len(sizes), dtype=np.int64)
    largest = np.zeros(len(sizes), dtype=bool)
    for k in range(labels.shape[0]):  # a loop over slices, not pixels
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        if hi > lo:
            slice_max[lo + 1:hi + 1] = sizes[lo + 1:hi + 1].max()
            largest[lo + 1 + int(np.argmax(sizes[lo + 1:hi + 1]))] = True
    touches = np.zeros(len(sizes), dtype=bool)
    for e in _edges(labels):
        touches[e.ravel()] = True
    extra = touches & (sizes >= fraction * slice_max) & ~largest
    extra[0] = False
    return largest, extra


def _holes(solid: np.ndarray, closed_edges: list[np.ndarray] | None = None) -> np.ndarray:
    """Bool (z, y, x): the pixels outside ``solid`` that are enclosed by it in their slice
    (4-connected background not reaching the image edge). ``closed_edges`` (top, bottom,
    left, right; (z, L) bool each) marks stretches of edge that count as walls."""
    rest, m = ndimage.label(~solid, structure=_SLICE_CROSS)
    outside = np.zeros(m + 1, dtype=bool)
    for i, edge_rest in enumerate(_edges(rest)):
        outside[edge_rest.ravel() if closed_edges is None
                else edge_rest[~closed_edges[i]]] = True
    outside[0] = False  # label 0 is the solid itself
    return ~outside[rest] & ~solid


def _edges(a: np.ndarray) -> list[np.ndarray]:
    """The four image edges of every slice of ``a`` (z, y, x): top, bottom, left, right."""
    return [a[:, 0, :], a[:, -1, :], a[:, :, 0], a[:, :, -1]]


def _clipped_spans(on_edge: np.ndarray) -> np.ndarray:
    """(z, L) bool: along one edge, the stretch from the body's first to its last contact.

    Where the field of view cuts through the body, what lies on the edge between two
    contacts of the body (typically a lung reaching the image edge) is inside the body."""
    n, length = on_edge.shape
    has = on_edge.any(axis=1)
    first = np.argmax(on_edge, axis=1)
    last = length - 1 - np.argmax(on_edge[:, ::-1], axis=1)
    i = np.arange(length)[None, :]
    return has[:, None] & (i >= first[:, None]) & (i <= last[:, None])


def body_interior(bright: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """The inside of the body on every slice of ``bright`` (z, y, x, bool: HU above T).

    The body is each slice's largest bright 4-connected component. Its inside is the body
    with its holes filled. Where the body runs off the image (a field of view smaller than
    the patient) the image edge between the body's first and last contact along it counts
    as closed, so lungs cut by the field of view stay inside, and other bright pieces that
    touch the image edge and are at least ``fraction`` of the largest count as body too
    (the body cut in two by a field of view that crosses both lungs). What such a piece
    encloses on its own (the dark core of a wide table) stays outside; the outside air
    keeps its open stretch of edge."""
    labels, n = ndimage.label(bright, structure=_SLICE_CROSS)
    if n == 0:
        return np.zeros(bright.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    largest, extra = _body_labels(labels, sizes, fraction)
    body = (largest | extra)[labels]
    spans = [_clipped_spans(e) for e in _edges(body)]
    inside = body | _holes(body, spans)
    if extra.any():
        inside &= ~_holes(extra[labels])
    return inside


def _bbox(inside: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """In-plane bounding box (all slices of the chunk) of ``inside``, grown by ``margin``."""
    ys = np.flatnonzero(inside.any(axis=(0, 2)))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(inside.any(axis=(0, 1)))
    h, w = inside.shape[1:]
    return (slice(max(0, ys[0] - margin), min(h, ys[-1] + 1 + margin)),
            slice(max(0, xs[0] - margin), min(w, xs[-1] + 1 + margin)))


def _segment_block(hu: np.ndarray, p: ParenchymaParams) -> tuple[np.ndarray, np.ndarray]:
    """M1 on a chunk of slices (z, y, x); nothing connects slices."""
    t = thresholds_of(hu, p.tolerance_hu, p.max_iterations)
    dark = hu <= t[:, None, None]
    out = np.zeros(hu.shape, dtype=bool)
    if p.outside == "body":
        inside = body_interior(~dark, p.body_fraction)
        # only the body's box needs the closing: a pixel's closing depends on pixels
        # within 2·radius of it, so a margin of 2·radius + 1 keeps the result exact
        box = _bbox(inside, 2 * p.closing_radius + 1)
        if box is None:
            return out, t
        ys, xs = box
        closed = closing_disk(dark[:, ys, xs], p.closing_radius)
        closed &= inside[:, ys, xs]
    else:
        ys, xs = slice(None), slice(None)
        closed = closing_disk(dark, p.closing_radius)
    labels, n = ndimage.label(closed, structure=_SLICE_CROSS)
    if n == 0:
        return out, t
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= p.min_component_px
    keep[0] = False
    if p.outside == "border":
        keep[np.unique(np.concatenate([e.ravel() for e in _edges(labels)]))] = False
    out[:, ys, xs] = keep[labels]
    return out, t


class SegmentationCancelled(InterruptedError):
    """Raised by :func:`segment_lungs` when its ``cancel`` callback answers True."""


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


def segment_slice(hu2d: np.ndarray, params: ParenchymaParams = ParenchymaParams(),
                  ) -> tuple[np.ndarray, float]:
    """Lung mask (bool ``(y, x)``) and converged threshold (HU) of one axial slice of HU
    (``int16`` ``(y, x)``; floats are rounded). A slice without lung (above the apex,
    below the bases, all air) gives an empty mask."""
    hu2d = _as_hu(hu2d, 2, "segment_slice")
    mask, t = _segment_block(hu2d[None], params)
    return mask[0], float(t[0])


def segment_lungs(hu: np.ndarray, params: ParenchymaParams = ParenchymaParams(),
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  spacing: tuple[float, float, float] | None = None,
                  chunk: int = 16) -> ParenchymaResult:
    """Lung parenchyma mask of a whole volume of HU, ``int16`` ``(z, y, x)`` (method M1).

    Slices are processed in chunks of ``chunk`` slices at once (vectorised over the chunk,
    chunks in a thread pool: scipy releases the GIL); the result is identical to
    :func:`segment_slice` on every slice (tested), since nothing connects slices.
    ``progress(done, total)`` is called after each chunk; ``cancel()`` returning True
    stops the work with :class:`SegmentationCancelled`. ``spacing`` (mm, z y x) is kept
    in the result for :meth:`ParenchymaResult.volume_ml`.

    What it captures: the air-filled lung (about −950…−500 HU) with the vessels and the
    nodules that the radius-5 closing bridges (up to ~10 px across) inside it. A nodule on
    the pleura stays inside only where a radius-5 disk does not fit in the tissue: most of
    a small one (~6 px across: 80 % in the tests), almost none of a large one. What it
    does not capture:
    larger nodules and consolidation (left as holes, or cut off at the pleura, since a
    threshold method sees them as tissue), the trachea and main bronchi while under
    ``min_component_px`` (they are removed), lungs in slices where they are under that size
    (the apex tip, the costophrenic recesses), and whatever air the body encloses besides
    the lungs (bowel gas above ``min_component_px``, air pockets between body and table
    when they touch: the method has no anatomy)."""
    hu = _as_hu(hu, 3, "segment_lungs")
    t0 = time.perf_counter()
    n = hu.shape[0]
    chunk = max(1, int(chunk))
    mask = np.zeros(hu.shape, dtype=bool)
    thresholds = np.zeros(n)
    starts = list(range(0, n, chunk))

    def work(k0: int) -> int:
        if cancel is not None and cancel():
            return -1
        k1 = min(n, k0 + chunk)
        mask[k0:k1], thresholds[k0:k1] = _segment_block(hu[k0:k1], params)
        return k1

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        done = 0
        for k1 in pool.map(work, starts):
            if k1 < 0 or (cancel is not None and cancel()):
                pool.shutdown(cancel_futures=True)
                raise SegmentationCancelled("lung segmentation cancelled")
            done = k1
            if progress is not None:
                progress(done, n)
    seconds = time.perf_counter() - t0
    log.debug("M1 segmentation of %d slices in %.2f s", n, seconds)
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
