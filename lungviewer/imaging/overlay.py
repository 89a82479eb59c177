"""Pure numpy helpers for what the viewer draws over a slice: the lung mask as a translucent
fill with an opaque outline, and hit-testing the readers' outlines under the cursor.

Coordinates: ``(row, col)`` pixel indices; polygon vertices are pixel centres.
"""

from __future__ import annotations

import numpy as np


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a 2-D boolean mask that have a 4-neighbour outside it (the image
    border counts as outside)."""
    m = np.asarray(mask, dtype=bool)
    inner = np.zeros_like(m)
    inner[1:-1, 1:-1] = (m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1]
                         & m[1:-1, :-2] & m[1:-1, 2:])
    return m & ~inner


def mask_rgba(mask: np.ndarray, colour: tuple[int, int, int], fill_alpha: float,
              outline_alpha: float = 1.0) -> np.ndarray:
    """``(h, w, 4)`` uint8 image of a 2-D mask: ``colour`` at ``fill_alpha`` (0…1) inside,
    at ``outline_alpha`` on its outline, transparent outside."""
    m = np.asarray(mask, dtype=bool)
    # one table look-up (0 outside, 1 inside, 2 outline) instead of three masked writes
    code = m.view(np.uint8) if m.flags.c_contiguous else m.astype(np.uint8)
    code = code + mask_outline(m).view(np.uint8)
    fill = round(float(np.clip(fill_alpha, 0.0, 1.0)) * 255)
    edge = round(float(np.clip(outline_alpha, 0.0, 1.0)) * 255)
    lut = np.array([(0, 0, 0, 0), (*colour, fill), (*colour, edge)], dtype=np.uint8)
    # each RGBA pixel as one uint32: a 4-byte gather per pixel
    return lut.view(np.uint32).ravel().take(code).view(np.uint8).reshape(m.shape + (4,))


def polygon_hit(points_rc: np.ndarray, row: float, col: float) -> tuple[bool, float]:
    """Whether ``(row, col)`` lies inside the closed polygon ``points_rc`` (n, 2) and its
    distance (pixels) to the polygon's outline; a polygon of one point is a point."""
    p = np.asarray(points_rc, dtype=float)
    if len(p) == 0:
        return False, float("inf")
    a = p
    b = np.roll(p, -1, axis=0)
    # distance to each edge segment
    ab = b - a
    ap = np.array([row, col]) - a
    t = np.clip((ap * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0.0, 1.0)
    d = np.hypot(*(ap - t[:, None] * ab).T).min()
    if len(p) < 3:
        return False, float(d)
    # even-odd ray casting along +col
    (r0, c0), (r1, c1) = a.T, b.T
    crosses = (r0 > row) != (r1 > row)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_at = c0 + (row - r0) * (c1 - c0) / (r1 - r0)
    inside = bool(np.count_nonzero(crosses & (col < c_at)) % 2)
    return inside, float(d)
