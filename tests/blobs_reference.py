"""The find_blobs of commit 9d844b0, kept verbatim (below this note) as the reference the
block-wise find_blobs must reproduce exactly: the fpr network was trained on its candidates.
Tests and bench/bench_blobs_memory.py only; never imported by lungviewer.

Original module docstring follows.

3-D nodule candidates of a CT volume: blobs told apart from tubes (pure numpy/scipy).

Classic lung CAD (Li et al. 2003, "selective enhancement filters for nodules, vessels and
airway walls"): a nodule is a bright *blob*, a vessel a bright *tube*, the pleura and
fissures bright *sheets*. The eigenvalues λ1 ≤ λ2 ≤ λ3 of the intensity's Hessian tell them
apart: a blob has all three strongly negative (|λ3| ≈ |λ1|), a tube only two (λ3 ≈ 0), a
sheet one.

Steps (:func:`find_blobs`), arrays ``(z, y, x)``, HU ``int16``, spacing ``(z, y, x)`` mm:

1. The search region: the lung mask (threshold method) dilated (a box) by ``margin_mm``, and
   for a blob of diameter d by up to d/2 + 2 mm (at most ``MAX_MARGIN_MM``), so nodules on
   the pleura or the mediastinum (which the mask leaves out) are still reached. The volume
   is cropped to the region's bounding box and block-averaged in-plane to about ``grid_mm``
   (1.25 mm on a 0.625 mm scan); slices are kept.
2. Scale space: Gaussians of σ = 0.8 … 9 mm (anisotropic in voxels, isotropic in mm) of the
   HU clipped to −1000…150 (so padding, bone and contrast do not dominate); the difference
   of neighbouring Gaussians approximates the scale-normalised Laplacian (a blob of diameter
   d answers most at σ ≈ d / (2√3)). Each voxel keeps its strongest scale.
3. Local maxima of that response inside the region, above ``min_response`` HU, at least
   ``min_hu`` in the smoothed image, suppressed within the radius of a stronger one.
4. At each maximum: the Hessian at its scale (central differences of the smoothed image one
   σ apart, trilinear), its eigenvalues, and from them the dot measure ``λ3 / λ1`` (1 for a
   sphere, 0 for a tube, < 0 where one curvature is convex) and Li's dot / line
   enhancement values. Maxima near the edge of the reconstruction circle (voxels below
   −1024 HU, the padding value, within ``fov_margin_mm`` in-plane) are dropped, and so are,
   with ``min_lung_shell``, those with less than that share of a shell of 1.25 radii around
   them in the lung mask (:func:`lung_shell`).

About 1–2 s for a 133-slice study on two cores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

#: Gaussian scales (mm): neighbouring pairs give the Laplacian at their geometric mean,
#: i.e. blob diameters of about 3 … 26 mm (a larger one answers at the largest scale)
#: a blob of diameter d may lie up to max(margin, d/2 + 2 mm) outside the lung mask (a nodule
#: on the pleura is left out of the mask), at most this far (mm)
MAX_MARGIN_MM = 16.0
SIGMAS_MM = (0.8, 1.13, 1.6, 2.26, 3.2, 4.5, 6.4, 9.0)
CLIP_HU = (-1000.0, 150.0)
#: below this a voxel is padding outside the reconstruction circle, never air
PADDING_HU = -1024


@dataclass
class Blobs:
    """Candidate blobs, strongest first. ``centre`` (n, 3) float voxel (z, y, x) of the
    input volume; ``diameter_mm`` from the answering scale; ``response`` the Laplacian
    response (HU); ``dot`` = λ3/λ1 (1 sphere, 0 tube); ``dot_li`` / ``line_li`` Li's
    enhancement values (|λ3|²/|λ1| and |λ2|(|λ2|−|λ3|)/|λ1|, HU/mm²); ``hu`` the smoothed HU
    at the centre; ``eig`` (n, 3) the Hessian eigenvalues λ1 ≤ λ2 ≤ λ3 (HU/mm²)."""

    centre: np.ndarray
    diameter_mm: np.ndarray
    response: np.ndarray
    dot: np.ndarray
    dot_li: np.ndarray
    line_li: np.ndarray
    hu: np.ndarray
    eig: np.ndarray
    lung_shell: np.ndarray  # (n,) share of a shell around the blob (1.25 radii) in the lungs
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.response)

    def take(self, idx) -> Blobs:
        return Blobs(self.centre[idx], self.diameter_mm[idx], self.response[idx],
                     self.dot[idx], self.dot_li[idx], self.line_li[idx], self.hu[idx],
                     self.eig[idx], self.lung_shell[idx], self.seconds)

    @staticmethod
    def empty() -> Blobs:
        z = np.zeros(0, np.float32)
        return Blobs(np.zeros((0, 3)), z, z, z, z, z, z, np.zeros((0, 3)), z)


def dilate_box(mask: np.ndarray, radius_vox: tuple[int, int, int]) -> np.ndarray:
    """Dilation of a boolean (z, y, x) mask by a box of half-sizes ``radius_vox`` (separable
    maximum filters: a fraction of the cost of a ball-shaped dilation)."""
    m = np.asarray(mask, bool).view(np.uint8)
    for axis, r in enumerate(radius_vox):
        if r > 0:
            m = ndimage.maximum_filter1d(m, 2 * int(r) + 1, axis=axis, mode="constant")
    return m.view(bool)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f``×``f`` in-plane blocks of a (z, y, x) array, float32."""
    if f == 1:
        return np.asarray(a, np.float32)
    z, h, w = a.shape
    h2, w2 = h // f * f, w // f * f
    out = np.zeros((z, h2 // f, w2 // f), np.float32)
    for i in range(f):
        for j in range(f):
            out += a[:, i:h2:f, j:w2:f]
    out /= f * f
    return out


def _directions(n: int = 48) -> np.ndarray:
    """``n`` unit vectors spread evenly over the sphere (Fibonacci lattice), (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([z, r * np.sin(phi), r * np.cos(phi)])


def lung_shell(mask: np.ndarray, centres: np.ndarray, radius_mm: np.ndarray,
               spacing: tuple[float, float, float]) -> np.ndarray:
    """Share of points on a sphere of ``radius_mm`` around each centre (z, y, x voxel) that
    fall in ``mask``; outside the volume counts as not in it."""
    c = np.asarray(centres, float).reshape(-1, 3)
    if not len(c):
        return np.zeros(0, np.float32)
    d = _directions()
    p = np.rint(c[:, None, :] + d[None] * (np.asarray(radius_mm, float)[:, None, None]
                                           / np.asarray(spacing, float))).astype(int)
    inside = np.all((p >= 0) & (p < np.asarray(mask.shape)), axis=2)
    p = np.where(inside[..., None], p, 0)
    return (mask[p[..., 0], p[..., 1], p[..., 2]] & inside).mean(1).astype(np.float32)


def _sample(vol: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(vol, pts.T, order=1, mode="nearest")


def _hessian_at(g: np.ndarray, pts: np.ndarray, step_vox: np.ndarray,
                step_mm: np.ndarray) -> np.ndarray:
    """Hessian (n, 3, 3) of the smoothed volume ``g`` at ``pts`` (n, 3) voxel, by central
    differences ``step_vox`` (n, 3) voxels apart (``step_mm`` the same in mm)."""
    n = len(pts)
    f0 = _sample(g, pts)
    e = np.eye(3)
    H = np.zeros((n, 3, 3))
    plus, minus = {}, {}
    for a in range(3):
        d = step_vox * e[a]
        plus[a], minus[a] = _sample(g, pts + d), _sample(g, pts - d)
        H[:, a, a] = (plus[a] - 2 * f0 + minus[a]) / step_mm[:, a] ** 2
    for a in range(3):
        for b in range(a + 1, 3):
            da, db = step_vox * e[a], step_vox * e[b]
            v = (_sample(g, pts + da + db) - _sample(g, pts + da - db)
                 - _sample(g, pts - da + db) + _sample(g, pts - da - db))
            H[:, a, b] = H[:, b, a] = v / (4 * step_mm[:, a] * step_mm[:, b])
    return H


def find_blobs(hu: np.ndarray, lung_mask: np.ndarray, spacing: tuple[float, float, float],
               margin_mm: float = 4.0, grid_mm: float = 1.25, min_response: float = 40.0,
               min_hu: float = -750.0, fov_margin_mm: float = 6.0,
               max_candidates: int = 20000, min_lung_shell: float = 0.0,
               sigmas_mm: tuple[float, ...] = SIGMAS_MM) -> Blobs:
    """Blob candidates of ``hu`` (z, y, x) int16 inside ``lung_mask`` dilated by
    ``margin_mm``; ``spacing`` (z, y, x) mm. See the module docstring."""
    t0 = time.perf_counter()
    hu = np.asarray(hu)
    if hu.ndim != 3 or hu.shape != np.shape(lung_mask):
        raise ValueError(f"hu {hu.shape} and lung mask {np.shape(lung_mask)} must be the same "
                         "3-D shape")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive mm values (z, y, x), got {spacing}")
    mask = np.asarray(lung_mask, bool)
    if not mask.any():
        return Blobs.empty()
    f = max(1, round(grid_mm / max(spacing[1], spacing[2])))
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
           for ax in range(3)]
    margins = np.unique(np.clip([margin_mm, margin_mm + 4, margin_mm + 8, MAX_MARGIN_MM],
                                margin_mm, max(margin_mm, MAX_MARGIN_MM)))
    mz = int(np.ceil(margins[-1] / spacing[0]))
    pad = int(np.ceil((margins[-1] + 2 * sigmas_mm[-1]) / spacing[1]))  # context beyond lungs
    z0, z1 = max(0, idx[0][0] - mz), min(hu.shape[0], idx[0][-1] + 1 + mz)
    y0 = max(0, idx[1][0] - pad) // f * f
    x0 = max(0, idx[2][0] - pad) // f * f
    y1, x1 = min(hu.shape[1], idx[1][-1] + 1 + pad), min(hu.shape[2], idx[2][-1] + 1 + pad)
    sub_hu = hu[z0:z1, y0:y1, x0:x1]
    vsp = np.array([spacing[0], spacing[1] * f, spacing[2] * f])
    padding = _block_mean(sub_hu < PADDING_HU, f) > 0
    img = _block_mean(np.clip(sub_hu, int(CLIP_HU[0]), int(CLIP_HU[1])), f)
    lungs = _block_mean(mask[z0:z1, y0:y1, x0:x1], f) >= 0.5
    regs = [dilate_box(lungs, tuple(round(m / v) for v in vsp)) for m in margins]
    # scale space: keep each Gaussian (the Hessian is read off it at the maxima)
    gs = [ndimage.gaussian_filter(img, s / vsp, mode="nearest", truncate=3.0)
          for s in sigmas_mm]
    best = np.full(img.shape, -np.inf, np.float32)
    scale = np.zeros(img.shape, np.int8)
    k = sigmas_mm[1] / sigmas_mm[0]
    for i in range(len(sigmas_mm) - 1):
        dog = (gs[i] - gs[i + 1]) / (k - 1.0)  # ≈ −σ² ∇²G (scale-normalised)
        up = dog > best
        best[up] = dog[up]
        scale[up] = i
    size = (3, 3, 3)
    peak = (best == ndimage.maximum_filter(best, size=size, mode="nearest")) & regs[-1] \
        & (best > min_response)
    pz, py, px = np.nonzero(peak)
    if pz.size == 0:
        return Blobs.empty()
    si = scale[pz, py, px].astype(int)
    sig = np.sqrt(np.asarray(sigmas_mm)[si] * np.asarray(sigmas_mm)[si + 1])
    pts = np.stack([pz, py, px], 1).astype(float)
    g_at = np.array([gs[s][z, y, x] for s, z, y, x in zip(si, pz, py, px)])
    keep = g_at > min_hu
    # near enough to the lungs for its size
    allowed = np.maximum(margin_mm, np.sqrt(3.0) * sig + 2.0)
    level = np.minimum(np.searchsorted(margins, allowed - 1e-6), len(margins) - 1)
    for j, r in enumerate(regs):
        m = level == j
        keep[m] &= r[pz[m], py[m], px[m]]
    # off the reconstruction circle's edge
    if padding.any():
        near = dilate_box(padding, (0, *(int(np.ceil(fov_margin_mm / v)) for v in vsp[1:])))
        keep &= ~near[pz, py, px]
    pts, si, sig, resp, g_at = pts[keep], si[keep], sig[keep], best[pz, py, px][keep], g_at[keep]
    # non-maximum suppression: within the radius of a stronger blob (mm)
    order = np.argsort(-resp, kind="stable")
    pts, si, sig, resp, g_at = pts[order], si[order], sig[order], resp[order], g_at[order]
    radius = sig * np.sqrt(3.0)
    tree = cKDTree(pts * vsp)
    alive = np.ones(len(pts), bool)
    for i in range(len(pts)):  # greedy over maxima (hundreds), not voxels
        if alive[i]:
            nb = tree.query_ball_point(pts[i] * vsp, max(radius[i], 2.0))
            nb = np.asarray(nb)
            alive[nb[nb > i]] = False
    sel = np.nonzero(alive)[0][:max_candidates]
    pts, si, sig, resp, g_at = pts[sel], si[sel], sig[sel], resp[sel], g_at[sel]
    # Hessian at each maximum, at its scale
    eig = np.zeros((len(pts), 3))
    for s in np.unique(si):
        m = si == s
        sm = np.sqrt(sigmas_mm[s] * sigmas_mm[s + 1])
        step_vox = np.maximum(sm / vsp, 1.0)
        H = _hessian_at(gs[s], pts[m], np.tile(step_vox, (m.sum(), 1)),
                        np.tile(step_vox * vsp, (m.sum(), 1)))
        eig[m] = np.linalg.eigvalsh(H) * sm ** 2  # ascending λ1 ≤ λ2 ≤ λ3, scale-normalised
    l1, l2, l3 = eig[:, 0], eig[:, 1], eig[:, 2]
    a1 = np.maximum(np.abs(l1), 1e-6)
    dot = np.clip(l3 / np.where(l1 < 0, l1, -1e-6), -1.0, 1.0)  # λ3/λ1: both < 0 → positive
    dot_li = np.where(l3 < 0, l3 ** 2 / a1, 0.0)
    line_li = np.where(l2 < 0, np.abs(l2) * (np.abs(l2) - np.abs(np.minimum(l3, 0))) / a1, 0.0)
    centre = pts * np.array([1.0, f, f]) + np.array([z0, y0 + (f - 1) / 2, x0 + (f - 1) / 2])
    diam = (2 * np.sqrt(3.0) * sig).astype(np.float32)
    shell = lung_shell(mask, centre, np.maximum(1.25 * diam / 2.0, 3.0), spacing)
    out = Blobs(centre, diam, resp.astype(np.float32),
                dot.astype(np.float32), dot_li.astype(np.float32), line_li.astype(np.float32),
                g_at.astype(np.float32), eig.astype(np.float32), shell,
                time.perf_counter() - t0)
    if min_lung_shell > 0:
        out = out.take(np.nonzero(shell >= min_lung_shell)[0])
        out.seconds = time.perf_counter() - t0
    log.debug("%d blob candidates in %.2f s", len(out), out.seconds)
    return out
