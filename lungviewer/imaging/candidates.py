"""Nodule candidates of a study for the 2-D slice scan: bright blobs in and at the edge of
the lungs, found on every slice at once (pure numpy/scipy, arrays ``(z, y, x)``).

A candidate is a local maximum of a difference of two in-plane Gaussians (a blob brighter
than its surroundings) at two scales (σ 2/6 px for small nodules, 5/15 px for large ones),
inside the lung mask dilated by ``margin_px`` (so nodules touching the pleura or the
mediastinum, which the lung mask leaves out, are still reached), where the smoothed HU is
above ``min_hu``. The strongest ``per_slice`` are kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SCALES = ((1.0, 3.0, 6), (2.5, 7.5, 6))  # (σ inner, σ outer, kept per slice), half-resolution px


def _dilate_square(mask: np.ndarray, r: int) -> np.ndarray:
    m = ndimage.maximum_filter1d(mask.view(np.uint8), 2 * r + 1, axis=1)
    return ndimage.maximum_filter1d(m, 2 * r + 1, axis=2).view(bool)


def find_candidates(hu: np.ndarray, lung_mask: np.ndarray, margin_px: int = 12,
                    min_hu: float = -500.0) -> tuple[np.ndarray, np.ndarray]:
    """``(points (n, 3) int [slice, row, col], strength (n,))`` sorted by slice.

    Works at half resolution inside the bounding box of the (dilated) lungs, only on the
    slices that have lung, so a 133-slice study takes well under a second."""
    if hu.shape != lung_mask.shape or hu.ndim != 3:
        raise ValueError(f"hu {hu.shape} and lung mask {lung_mask.shape} must be the same "
                         "3-D shape")
    region = _dilate_square(lung_mask, margin_px)
    ks_all = np.nonzero(region.any(axis=(1, 2)))[0]
    if ks_all.size == 0:
        return np.zeros((0, 3), int), np.zeros(0, np.float32)
    rows = np.nonzero(region.any(axis=(0, 2)))[0]
    cols = np.nonzero(region.any(axis=(0, 1)))[0]
    r0, c0 = rows[0] & ~1, cols[0] & ~1
    r1, c1 = r0 + ((rows[-1] + 2 - r0) & ~1), c0 + ((cols[-1] + 2 - c0) & ~1)
    r1, c1 = min(r1, hu.shape[1] - hu.shape[1] % 2), min(c1, hu.shape[2] - hu.shape[2] % 2)
    sub = hu[ks_all, r0:r1, c0:c1].astype(np.float32)
    half = sub.reshape(len(ks_all), sub.shape[1] // 2, 2, sub.shape[2] // 2, 2).mean((2, 4))
    reg = region[ks_all, r0:r1:2, c0:c1:2][:, :half.shape[1], :half.shape[2]]
    found = []
    for s1, s2, keep_n in SCALES:
        g1 = ndimage.gaussian_filter(half, (0, s1, s1), truncate=2.5)
        dog = g1 - ndimage.gaussian_filter(half, (0, s2, s2), truncate=2.5)
        size = int(2 * s2) | 1
        peak = (dog == ndimage.maximum_filter(dog, size=(1, size, size))) & reg \
            & (g1 > min_hu) & (dog > 20.0)
        ks, rs, cs = np.nonzero(peak)
        strength = dog[ks, rs, cs]
        order = np.lexsort((-strength, ks))  # by slice, strongest first
        ks, rs, cs, strength = ks[order], rs[order], cs[order], strength[order]
        keep = (np.arange(ks.size) - np.searchsorted(ks, ks, side="left")) < keep_n
        found.append((ks_all[ks[keep]], rs[keep] * 2 + r0 + 1, cs[keep] * 2 + c0 + 1,
                      strength[keep]))
    ks, rs, cs, strength = (np.concatenate(v) for v in zip(*found))
    order = np.argsort(ks, kind="stable")
    return np.stack([ks, rs, cs], 1)[order], strength[order]
