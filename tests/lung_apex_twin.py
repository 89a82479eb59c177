"""A tapering lung apex beside the trachea, with shoulder streaks: the twin of the real
scan whose lung mask was empty on its top 11 slices (imported by tests/test_lung_apex.py).

Geometry of a real apex on 2.5 mm slices at 0.78 mm pixels: each lung's cross-section
grows about linearly with the depth below its tip (a dome), 85 px per slice, so it is
under 1000 px on the top 11 slices of the lung and only 8–9 % smaller than the slice
below it there; the apices lie 5 px from the trachea (the closing bridges that wall), and
the humeral heads throw dark streaks across the chest. HU ``int16`` ``(z, y, x)``, slice
0 the lowest; the volume goes on above the apices into the neck (trachea only)."""

from __future__ import annotations

import numpy as np

SIZE = 512
TRACHEA = (215, 256, 11)  # row, column, radius (px): about 380 px
AREA_PER_SLICE = 85  # px of lung per slice below the tip, each side
BELOW, APEX, NECK = 4, 12, 3  # slices: full lungs, the apex (depth 12 .. 1), the neck


def _lung(r, c, depth: int, side: int, wall: int = 5):
    area = AREA_PER_SLICE * depth
    b = np.sqrt(area / (1.3 * np.pi))  # half-height; half-width 1.3 b
    a = 1.3 * b
    ty, tx, tr = TRACHEA
    cx = tx + side * (tr + wall + a)  # the medial edge ``wall`` px from the trachea
    cy = ty + 0.3 * b
    return ((c - cx) / a) ** 2 + ((r - cy) / b) ** 2 < 1


def _streaks(r, c):
    """Dark bands (3 px) between the humeral heads, as beam hardening draws them."""
    out = np.zeros(r.shape, bool)
    for slope, off in ((0.0, 0.0), (0.08, -6.0), (-0.08, 6.0)):
        y = 256 + off + slope * (c - 256)
        out |= np.abs(r - y) <= 1.5
    return out


def apex_stack(streaks: bool = True, seed: int = 0, wall: int = 5):
    """(hu, true lungs): BELOW + APEX + NECK slices."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    body = ((c - 256) / 205) ** 2 + ((r - 250) / 135) ** 2 < 1
    heads = ((c - 92) ** 2 + (r - 256) ** 2 < 30 ** 2) | ((c - 420) ** 2 + (r - 256) ** 2 < 30 ** 2)
    spine = (c - 256) ** 2 + (r - 320) ** 2 < 22 ** 2
    ty, tx, tr = TRACHEA
    trachea = (c - tx) ** 2 + (r - ty) ** 2 < tr ** 2
    depths = list(range(APEX + BELOW, APEX, -1)) + list(range(APEX, 0, -1)) + [0] * NECK
    hus, lungs = [], []
    for d in depths:
        sl = np.full((SIZE, SIZE), -1000.0)
        sl[body] = 40
        sl[heads | spine] = 900
        lung = np.zeros((SIZE, SIZE), bool)
        if d > 0:
            lung = _lung(r, c, d, -1, wall) | _lung(r, c, d, 1, wall)
        sl[lung] = -860
        if streaks:
            sl[_streaks(r, c) & body & ~heads] -= 330
        sl[trachea] = -1000
        sl += rng.normal(0, 30, sl.shape)
        hus.append(np.clip(sl, -1024, None).astype(np.int16))
        lungs.append(lung)
    return np.stack(hus), np.stack(lungs)
