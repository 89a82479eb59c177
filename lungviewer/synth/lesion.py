"""How a nodule looks in CT, shared by the realistic LIDC twin and the hybrid training
images (real lungs with inserted nodules): a soft edge, HU from the readers' texture
rating, internal texture, a dense core when calcified, and spicules from the spiculation
rating. Pure numpy/scipy on ``(z, y, x)`` arrays; spacing ``(z, y, x)`` mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import line_aa

#: soft edge: Gaussian (mm) of the outline (partial volume)
EDGE_MM = 0.6
#: longest spicule (mm) at spiculation rating 5 (rating 1–2: none)
SPICULE_MM = 8.0


def soft_edge(mask: np.ndarray, spacing) -> np.ndarray:
    """Occupancy 0..1 (float32) of a (z, y, x) mask or occupancy with a soft edge of
    :data:`EDGE_MM` (at least 0.3 voxel)."""
    sig = [max(EDGE_MM / float(s), 0.3) for s in spacing]
    return np.clip(ndimage.gaussian_filter(np.asarray(mask, np.float32), sig), 0, 1
                   ).astype(np.float32)


def nodule_hu(occ: np.ndarray, texture: float, calcified: bool, spacing,
              rng: np.random.Generator) -> np.ndarray:
    """Target HU (float32, the shape of ``occ``) of a nodule from its readers' texture
    rating (1 ground glass … 5 solid): solid −50…+50, ground glass −650…−400, part-solid
    (rating between) a solid core in ground glass; calcified a dense core (250…600); plus
    25 HU of internal texture at 1.5 mm."""
    inside = occ > 0.5
    depth = ndimage.distance_transform_edt(inside, sampling=spacing)
    core = depth > 0.45 * max(depth.max(), 1e-3)
    solid, ggo = rng.uniform(-50, 50), rng.uniform(-650, -400)
    if texture >= 4.5:
        target = np.full(occ.shape, solid, np.float32)
    elif texture <= 2.0:
        target = np.full(occ.shape, ggo, np.float32)
    else:  # part-solid: a solid core in ground glass
        target = np.where(core, solid, ggo).astype(np.float32)
    if calcified:
        target = np.where(core, rng.uniform(250, 600), target).astype(np.float32)
    tex = ndimage.gaussian_filter(rng.standard_normal(occ.shape).astype(np.float32),
                                  [1.5 / s for s in spacing])
    target += 25.0 * tex / max(float(tex.std()), 1e-6)
    return target


def spicules(mask: np.ndarray, spiculation: float, spacing,
             rng: np.random.Generator) -> np.ndarray:
    """Occupancy (float32, the shape of ``mask``) of thin strands running out of a nodule's
    outline in each slice: none at spiculation rating ≤ 2, more and longer (up to
    :data:`SPICULE_MM`) towards rating 5. Leave room around the mask for them."""
    out = np.zeros(mask.shape, np.float32)
    level = float(spiculation) - 2.0
    if level <= 0:
        return out
    px = float(spacing[1])
    h, w = mask.shape[1:]
    for i, sl in enumerate(np.asarray(mask, bool)):
        edge = np.argwhere(sl & ~ndimage.binary_erosion(sl))
        if len(edge) == 0:
            continue
        centre = np.argwhere(sl).mean(0)
        for _ in range(int(round(2 + 2 * level))):
            p = edge[rng.integers(len(edge))].astype(float)
            d = p - centre
            d = d / max(np.linalg.norm(d), 1e-6) + rng.normal(0, 0.25, 2)
            d /= max(np.linalg.norm(d), 1e-6)
            length = rng.uniform(0.4, 1.0) * SPICULE_MM * level / 3.0 / px
            q = np.clip(np.rint(p + d * length), 0, [h - 1, w - 1]).astype(int)
            rr, cc, val = line_aa(int(p[0]), int(p[1]), int(q[0]), int(q[1]))
            np.maximum.at(out[i], (rr, cc), 0.8 * val.astype(np.float32))
    return out
