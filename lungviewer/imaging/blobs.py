"""3-D nodule candidates of a CT volume: blobs told apart from tubes (pure numpy/scipy).

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

About 1–2 s for a 133-slice study on two cores. Memory: the scale space is computed in
blocks of slices (:func:`find_blobs`), about half the int16 volume's size (at least
``BLOCK_BYTES``) instead of eight float32 copies of it; the candidates are bit for bit those
of the whole-volume computation (tests/blobs_reference.py).
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


def dilate_box(mask: np.ndarray, radius_vox: tuple[int, int, int],
               rows: tuple[int, int] | None = None) -> np.ndarray:
    """Dilation of a boolean (z, y, x) mask by a box of half-sizes ``radius_vox`` (separable
    maximum filters: a fraction of the cost of a ball-shaped dilation). ``rows`` (a, b):
    only slices a…b of it (the in-plane passes run on those alone)."""
    m = np.asarray(mask, bool).view(np.uint8)
    for axis, r in enumerate(radius_vox):
        if axis == 1 and rows is not None:
            m = m[rows[0]:rows[1]]
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
               spacing: tuple[float, float, float], chunk: int = 1024) -> np.ndarray:
    """Share of points on a sphere of ``radius_mm`` around each centre (z, y, x voxel) that
    fall in ``mask``; outside the volume counts as not in it."""
    c = np.asarray(centres, float).reshape(-1, 3)
    if not len(c):
        return np.zeros(0, np.float32)
    d = _directions()
    rad = np.broadcast_to(np.asarray(radius_mm, float), (len(c),))
    out = np.zeros(len(c), np.float32)
    for i in range(0, len(c), chunk):  # in chunks: 48 points × 3 coordinates per centre
        p = np.rint(c[i:i + chunk, None, :] + d[None] * (rad[i:i + chunk, None, None]
                                                         / np.asarray(spacing, float))).astype(int)
        inside = np.all((p >= 0) & (p < np.asarray(mask.shape)), axis=2)
        p = np.where(inside[..., None], p, 0)
        out[i:i + chunk] = (mask[p[..., 0], p[..., 1], p[..., 2]] & inside).mean(1)
    return out


def _sample(vol: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(vol, pts.T, order=1, mode="nearest")


def _hessian_at(g: np.ndarray, pts: np.ndarray, step_vox: np.ndarray,
                step_mm: np.ndarray, z_offset: int = 0) -> np.ndarray:
    """Hessian (n, 3, 3) of the smoothed volume ``g`` at ``pts`` (n, 3) voxel, by central
    differences ``step_vox`` (n, 3) voxels apart (``step_mm`` the same in mm). ``g`` may be
    rows ``z_offset…`` of the volume ``pts`` refer to: each sample point is computed in the
    volume's coordinates and then shifted (an exact subtraction of an integer), so the
    interpolation weights, hence the result, are bit for bit those on the whole volume."""
    n = len(pts)
    off = np.array([float(z_offset), 0.0, 0.0])

    def sample(p: np.ndarray) -> np.ndarray:
        return _sample(g, p - off)

    f0 = sample(pts)
    e = np.eye(3)
    H = np.zeros((n, 3, 3))
    plus, minus = {}, {}
    for a in range(3):
        d = step_vox * e[a]
        plus[a], minus[a] = sample(pts + d), sample(pts - d)
        H[:, a, a] = (plus[a] - 2 * f0 + minus[a]) / step_mm[:, a] ** 2
    for a in range(3):
        for b in range(a + 1, 3):
            da, db = step_vox * e[a], step_vox * e[b]
            v = (sample(pts + da + db) - sample(pts + da - db)
                 - sample(pts - da + db) + sample(pts - da - db))
            H[:, a, b] = H[:, b, a] = v / (4 * step_mm[:, a] * step_mm[:, b])
    return H


#: working memory of one block of slices of the scale space, as a share of the int16
#: volume's size, and at least BLOCK_BYTES (bytes, about): the scale space is computed block
#: by block (see :func:`find_blobs`), so the candidates' peak memory is about this, not
#: the 17× the volume's size that all Gaussians of the volume at once took
BLOCK_SHARE = 0.5
BLOCK_BYTES = 32 * 2**20
#: fewest slices of a block (below this the halo's recomputation costs more than it saves)
MIN_BLOCK_SLICES = 12


def _gaussian_rows(rows, n: int, u: int, v: int, sigma_vox: np.ndarray) -> np.ndarray:
    """Rows ``u…v`` of ``ndimage.gaussian_filter(img, sigma_vox, mode="nearest",
    truncate=3.0)`` of the ``n``-row image whose rows ``rows(a, b)`` returns, bit for bit,
    from only the rows the z pass reaches: the same three 1-D passes in the same order (z,
    y, x), each point's sum computed by scipy from the same neighbours."""
    r = int(3.0 * float(sigma_vox[0]) + 0.5)  # scipy's kernel radius for truncate=3
    w0, w1 = max(0, u - r), min(n, v + r)
    win = rows(w0, w1)
    zp = ndimage.gaussian_filter1d(win, sigma_vox[0], axis=0, mode="nearest", truncate=3.0)
    del win
    out = np.empty((v - u,) + zp.shape[1:], np.float32)
    ndimage.gaussian_filter1d(zp[u - w0:v - w0], sigma_vox[1], axis=1, output=out,
                              mode="nearest", truncate=3.0)
    del zp
    ndimage.gaussian_filter1d(out, sigma_vox[2], axis=2, output=out, mode="nearest",
                              truncate=3.0)
    return out


#: the 26 neighbours of a voxel, the face ones first (they rule out most non-maxima)
_NEIGHBOURS = sorted(((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                      if dz or dy or dx), key=lambda d: abs(d[0]) + abs(d[1]) + abs(d[2]))


def _local_max_at(a: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Whether ``a`` at the voxels (z, y, x) equals its 3×3×3 maximum, borders as
    ``ndimage.maximum_filter(a, size=3, mode="nearest")`` treats them (the same test as
    ``a == maximum_filter(a)`` there, read at a few voxels instead of filtering all)."""
    n = len(z)
    out = np.zeros(n, bool)
    if not n:
        return out
    hi = np.array(a.shape) - 1
    edge = (z == 0) | (z == hi[0]) | (y == 0) | (y == hi[1]) | (x == 0) | (x == hi[2])
    # inside: the neighbours by flat offsets
    idx = np.nonzero(~edge)[0]  # the voxels still possibly a maximum (most fail early)
    flat_a = np.ascontiguousarray(a).reshape(-1)
    sz, sy = a.shape[1] * a.shape[2], a.shape[2]
    f = (z[idx] * a.shape[1] + y[idx]) * a.shape[2] + x[idx]
    v = flat_a[f]
    for dz, dy, dx in _NEIGHBOURS:
        ok = v >= flat_a[f + (dz * sz + dy * sy + dx)]
        if not ok.all():
            idx, f, v = idx[ok], f[ok], v[ok]
    out[idx] = True
    # on the border: clamped neighbours, as mode="nearest"
    idx = np.nonzero(edge)[0]
    z, y, x = z[idx], y[idx], x[idx]
    v = a[z, y, x]
    for dz, dy, dx in _NEIGHBOURS:
        ok = v >= a[np.clip(z + dz, 0, hi[0]), np.clip(y + dy, 0, hi[1]),
                    np.clip(x + dx, 0, hi[2])]
        if not ok.all():
            idx, z, y, x, v = idx[ok], z[ok], y[ok], x[ok], v[ok]
    out[idx] = True
    return out


def _carried_gaussian(carry: list, s: int, lo: int, hi: int, nxt: int | None, rows, n: int,
                      sigma_vox: np.ndarray) -> np.ndarray:
    """Rows ``lo…hi`` of the Gaussian of scale ``s`` (:func:`_gaussian_rows`), reusing the
    rows ``carry[s]`` = (first row, rows) the block before computed; keeps rows ``nxt…`` in
    ``carry[s]`` for the next block (``nxt`` None: the last block)."""
    done = carry[s]
    old = done[1][lo - done[0]:] if done is not None and done[0] <= lo else None
    if old is None or not len(old):
        g = _gaussian_rows(rows, n, lo, hi, sigma_vox)
    elif lo + len(old) >= hi:
        g = old[:hi - lo]
    else:
        g = np.concatenate([old, _gaussian_rows(rows, n, lo + len(old), hi, sigma_vox)])
    carry[s] = None if nxt is None else (nxt, g[nxt - lo:].copy())
    return g


def find_blobs(hu: np.ndarray, lung_mask: np.ndarray, spacing: tuple[float, float, float],
               margin_mm: float = 4.0, grid_mm: float = 1.25, min_response: float = 40.0,
               min_hu: float = -750.0, fov_margin_mm: float = 6.0,
               max_candidates: int = 20000, min_lung_shell: float = 0.0,
               sigmas_mm: tuple[float, ...] = SIGMAS_MM,
               block_slices: int | None = None) -> Blobs:
    """Blob candidates of ``hu`` (z, y, x) int16 inside ``lung_mask`` dilated by
    ``margin_mm``; ``spacing`` (z, y, x) mm. See the module docstring.

    Memory: the scale space is computed in blocks of ``block_slices`` slices (default: what
    :data:`BLOCK_BYTES` allows), two Gaussians alive at a time, each block with a halo of
    slices on either side for the 3×3×3 maximum and the Hessian's differences (carried over
    from the block before, not recomputed) and the z pass reading as many more slices of the
    image as its kernel reaches. The result is bit for bit that of smoothing the whole
    volume at every scale at once (tests/blobs_reference.py, tests/test_blobs_memory.py)."""
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
    nz, ny, nx = z1 - z0, (y1 - y0) // f, (x1 - x0) // f  # the grid of _block_mean

    def img_rows(a: int, b: int) -> np.ndarray:  # the clipped HU on the grid, rows a…b
        return _block_mean(np.clip(sub_hu[a:b], int(CLIP_HU[0]), int(CLIP_HU[1])), f)

    radii = [tuple(round(m / v) for v in vsp) for m in margins]
    rz = max(r[0] for r in radii)
    fov_r = (0, *(int(np.ceil(fov_margin_mm / v)) for v in vsp[1:]))
    n_sc = len(sigmas_mm)
    k = sigmas_mm[1] / sigmas_mm[0]
    sig_sc = np.sqrt(np.asarray(sigmas_mm)[:-1] * np.asarray(sigmas_mm)[1:])  # per DoG scale
    allowed = np.maximum(margin_mm, np.sqrt(3.0) * sig_sc + 2.0)
    level_sc = np.minimum(np.searchsorted(margins, allowed - 1e-6), len(margins) - 1)
    steps = []  # the Hessian's differences at each DoG scale: voxels and mm
    for s in range(n_sc - 1):
        sm = np.sqrt(sigmas_mm[s] * sigmas_mm[s + 1])
        step_vox = np.maximum(sm / vsp, 1.0)
        steps.append((step_vox, step_vox * vsp))
    # halo: rows beside a block whose Gaussians must be exact (the 3×3×3 maximum, the
    # Hessian's central differences and their linear interpolation)
    halo = max(1, int(np.ceil(max(st[0][0] for st in steps))) + 1)
    r_max = max(int(3.0 * float(sg / vsp[0]) + 0.5) for sg in sigmas_mm)  # z pass radius
    if block_slices is None:  # measured on the real dev scan: ~38 bytes per voxel of a slice
        per_row = 38 * ny * nx  # of the block (Gaussians, DoG, maxima, regions, windows…)
        fixed = (n_sc * 2 * halo * 4 + 2 * r_max * 10 + 2 * halo * 38) * ny * nx  # carried
        budget = max(BLOCK_BYTES, BLOCK_SHARE * hu.nbytes)  # rows, z windows, the halo
        block_slices = int((budget - fixed) // per_row)
    block = max(MIN_BLOCK_SLICES, int(block_slices))
    log.debug("grid %s, blocks of %d slices, halo %d", (nz, ny, nx), block, halo)

    carry: list[tuple[int, np.ndarray] | None] = [None] * n_sc
    found = []  # per block: z, y, x (grid), scale, response, g at the maximum, Hessian
    for a in range(0, nz, block):
        b = min(nz, a + block)
        lo, hi = max(0, a - halo), min(nz, b + halo)
        ia, ib = a - lo, b - lo

        lw0, lw1 = max(0, a - rz), min(nz, b + rz)
        lungs = _block_mean(mask[z0 + lw0:z0 + lw1, y0:y1, x0:x1], f) >= 0.5
        regs = [dilate_box(lungs, r, rows=(a - lw0, b - lw0)) for r in radii]
        del lungs
        padding = _block_mean(sub_hu[a:b] < PADDING_HU, f) > 0
        near = dilate_box(padding, fov_r) if padding.any() else None
        best = np.full((hi - lo, ny, nx), -np.inf, np.float32)
        scale = np.zeros(best.shape, np.int8)
        cand = []  # per scale: flat index in the block, g there, Hessian (NaN if not needed)
        nxt = max(0, b - halo) if b < nz else None  # the next block's first row

        # the image rows the z passes of this block's new Gaussian rows read, made once
        u = lo if a == 0 else min(nz, a + halo)  # rows before u are carried over
        c0, c1 = max(0, u - r_max), min(nz, hi + r_max)
        win = img_rows(c0, c1)

        def rows(p: int, q: int, win=win, c0=c0) -> np.ndarray:
            if p < c0 or q > c0 + len(win):
                raise RuntimeError("find_blobs: image rows outside the block's window")
            return win[p - c0:q - c0]

        def gauss(s: int, lo=lo, hi=hi, nxt=nxt, rows=rows) -> np.ndarray:
            return _carried_gaussian(carry, s, lo, hi, nxt, rows, nz, sigmas_mm[s] / vsp)

        g_prev = gauss(0)
        for i in range(n_sc - 1):
            g_next = gauss(i + 1)
            dog = np.subtract(g_prev, g_next)
            dog /= (k - 1.0)  # ≈ −σ² ∇²G (scale-normalised)
            up = dog > best
            np.copyto(best, dog, where=up)
            scale[up] = i
            # a maximum of `best` whose scale is i is a maximum of this DoG that beats the
            # smaller scales; the ones find_blobs keeps are also above min_hu there, near
            # enough to the lungs for their size and off the reconstruction circle's edge.
            # Keep those, their g and their Hessian while this Gaussian is alive.
            c = up[ia:ib]
            del up
            c &= dog[ia:ib] > min_response
            c &= regs[-1]
            c &= g_prev[ia:ib] > min_hu
            c &= regs[level_sc[i]]
            if near is not None:
                c &= ~near
            cz, cy, cx = np.nonzero(c)
            del c
            is_max = _local_max_at(dog, cz + ia, cy, cx)
            del dog
            cz, cy, cx = cz[is_max], cy[is_max], cx[is_max]
            if len(cz):
                pts = np.stack([cz + a, cy, cx], 1).astype(float)
                m = len(pts)
                H = _hessian_at(g_prev, pts, np.tile(steps[i][0], (m, 1)),
                                np.tile(steps[i][1], (m, 1)), z_offset=lo)
                cand.append((cz, cy, cx, np.full(m, i), g_prev[cz + ia, cy, cx], H))
            g_prev = g_next
        del g_prev, g_next, win, rows, gauss
        if not cand:
            continue
        # the maxima of `best` (3×3×3, inside the region, above min_response) among them,
        # in the order np.nonzero lists voxels
        pz, py, px, si, g_at, H = (np.concatenate(v) for v in zip(*cand))
        ok = scale[pz + ia, py, px] == si
        ok[ok] = _local_max_at(best, pz[ok] + ia, py[ok], px[ok])
        order = np.argsort(((pz * ny + py) * nx + px)[ok], kind="stable")
        pz, py, px, si, g_at, H = (v[ok][order] for v in (pz, py, px, si, g_at, H))
        found.append((pz + a, py, px, si, best[pz + ia, py, px], g_at, H))
    if not found:
        return Blobs.empty()
    pz, py, px, si, resp, g_at, H_all = (np.concatenate(v) for v in zip(*found))
    pts = np.stack([pz, py, px], 1).astype(float)
    sig = sig_sc[si]
    # non-maximum suppression: within the radius of a stronger blob (mm)
    order = np.argsort(-resp, kind="stable")
    pts, si, sig, resp, g_at = pts[order], si[order], sig[order], resp[order], g_at[order]
    H_all = H_all[order]
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
    H_all = H_all[sel]
    # Hessian at each maximum, at its scale (sampled while that block's Gaussian was alive)
    eig = np.zeros((len(pts), 3))
    for s in np.unique(si):
        m = si == s
        sm = np.sqrt(sigmas_mm[s] * sigmas_mm[s + 1])
        eig[m] = np.linalg.eigvalsh(H_all[m]) * sm ** 2  # ascending λ1 ≤ λ2 ≤ λ3, scale-normalised
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
