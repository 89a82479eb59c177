"""Analytic chest anatomy for the LIDC twin: every structure is a function of patient
coordinates, so any sub-volume can be rendered on its own and equals the same crop of the
whole scan.

Coordinates: ``(k, row, col)`` voxel indices of the twin's 512×512 slices, ``t`` the
normalised height of a slice in the scan (0 = lowest z / feet end, 1 = highest / head end).
All sizes are in pixels derived from millimetres and the scan's pixel spacing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

AIR, FAT, MUSCLE, BLOOD, LUNG = -1000.0, -100.0, 40.0, 40.0, -860.0
CORTEX, MARROW, TABLE = 750.0, 250.0, 150.0


def patient_seed(text: str) -> int:
    """A stable 63-bit seed from a string (patient ID, series UID)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class ChestShape:
    """Per-patient shape parameters (pixels), seeded from the patient ID."""

    cx: float  # body centre column
    cy: float  # body centre row
    body_a: float  # half width
    body_b: float  # half depth (anterior-posterior)
    lung_a: float  # one lung's half width
    lung_b: float  # lung half depth
    lung_dx: float  # lung centre offset from midline
    lung_dy: float  # lung centre offset (negative = anterior)
    t_apex: float  # normalised height of the lung apex
    t_base: float  # normalised height of the lung bases (dome top)
    table_row: float
    px_mm: float  # pixels per mm

    @staticmethod
    def for_patient(seed: int, pixel_spacing: float, nodule_points: np.ndarray | None = None,
                    t_range: tuple[float, float] | None = None) -> "ChestShape":
        """``nodule_points``: (n, 3) (t, row, col) of annotated nodule voxels; the lungs are
        made large enough to contain them."""
        rng = np.random.default_rng(seed)
        px = 1.0 / pixel_spacing
        body_a = rng.uniform(150, 175) * px
        body_b = rng.uniform(105, 125) * px
        cx = 256 + rng.uniform(-6, 6)
        cy = 250 + rng.uniform(-8, 8)
        lung_a = body_a * rng.uniform(0.30, 0.34)
        lung_b = body_b * rng.uniform(0.66, 0.72)
        lung_dx = body_a * rng.uniform(0.45, 0.49)
        lung_dy = body_b * rng.uniform(0.04, 0.10)  # the lungs reach deep posteriorly
        t_apex = rng.uniform(0.90, 0.97)
        t_base = rng.uniform(0.10, 0.18)
        if t_range is not None:
            t_apex = max(t_apex, min(0.995, t_range[1] + 0.04))
            t_base = min(t_base, max(0.0, t_range[0] - 0.04))
        shape = ChestShape(cx, cy, body_a, body_b, lung_a, lung_b, lung_dx, lung_dy,
                           t_apex, t_base, 0.0, px)
        if nodule_points is not None and len(nodule_points):
            # adapt the chest to the real nodules: shift it towards voxels left outside the
            # lungs (posterior / anterior / medial), grow it only for what shifting cannot fix
            t_n, r_n, c_n = nodule_points[:, 0], nodule_points[:, 1], nodule_points[:, 2]
            for _ in range(60):
                inside = shape.lung_inside(t_n, r_n, c_n, margin=2.0 * px)
                if inside.all():
                    break
                out_r, out_c = r_n[~inside], c_n[~inside]
                lung_row = shape.cy + shape.lung_dy
                f = {k: getattr(shape, k) for k in (
                    "cx", "cy", "body_a", "body_b", "lung_a", "lung_b", "lung_dx", "lung_dy",
                    "t_apex", "t_base")}
                d_row = float(np.mean(out_r - lung_row)) / shape.lung_b
                if abs(d_row) > 0.55:  # beyond the front or back of the lungs: move the chest
                    f["cy"] += np.sign(d_row) * 2.0 * px
                off = np.abs(out_c - shape.cx)
                if np.mean(off) < shape.lung_dx:  # towards the midline
                    f["lung_dx"] *= 0.985
                else:  # lateral
                    f["lung_a"] *= 1.015
                    f["body_a"] *= 1.008
                f["lung_b"] *= 1.005
                # the chest wall stays around the lungs, the body inside the image
                f["body_b"] = max(f["body_b"], abs(f["lung_dy"]) + f["lung_b"] + 30 * px)
                f["cy"] = min(f["cy"], 500 - f["body_b"] - 14 * px)
                shape = ChestShape(**f, table_row=0.0, px_mm=px)
        table_row = shape.cy + shape.body_b * 1.04 + 6 * px
        return ChestShape(*[getattr(shape, f) for f in (
            "cx", "cy", "body_a", "body_b", "lung_a", "lung_b", "lung_dx", "lung_dy",
            "t_apex", "t_base")], table_row, px)

    # -- profiles along the body axis ------------------------------------------------
    def lung_scale(self, t: np.ndarray | float) -> np.ndarray:
        """Relative lung cross-section size (0 above the apex, 1 at its widest)."""
        t = np.asarray(t, dtype=float)
        u = (t - self.t_base) / max(self.t_apex - self.t_base, 1e-3)  # 0 at base, 1 at apex
        up = np.sqrt(np.clip((1.0 - u) / 0.45, 0, 1))  # rounded apex
        low = np.clip((u + 0.12) / 0.25, 0, 1)  # costophrenic recesses go below the dome
        return np.where((u > 1) | (u < -0.12), 0.0, np.minimum(up, 0.55 + 0.45 * low))

    def dome(self, t: np.ndarray | float) -> np.ndarray:
        """Diaphragm dome radius factor at height t (0 above the dome, grows below it)."""
        t = np.asarray(t, dtype=float)
        u = (t - self.t_base) / max(self.t_apex - self.t_base, 1e-3)
        return np.clip((0.22 - u) / 0.34, 0, 1)

    def lung_radius(self, t, row, col, margin: float = 0.0) -> np.ndarray:
        """Normalised superellipse radius of (t, row, col) in the nearer lung (< 1 inside
        the lung's outline before the heart and the diaphragm cut into it; inf where the
        scan height has no lung)."""
        t = np.asarray(t, dtype=np.float32)
        row = np.asarray(row, dtype=np.float32)
        col = np.asarray(col, dtype=np.float32)
        s = self.lung_scale(t).astype(np.float32)
        a = self.lung_a * (0.15 + 0.85 * s) * (s > 0) - margin
        b = self.lung_b * (0.2 + 0.8 * s) * (s > 0) - margin
        best = np.full(np.broadcast(t, row, col).shape, np.inf)
        for side in (-1.0, 1.0):
            cxl = self.cx + side * self.lung_dx * (0.85 + 0.15 * s)
            cyl = self.cy + self.lung_dy + self.lung_b * 0.08 * (1 - s)
            dxn = (col - cxl) / np.maximum(a, 1e-3)
            dyn = (row - cyl) / np.maximum(b, 1e-3)
            # medial side flatter (cubic superellipse), lateral side an ellipse
            # medial and posterior sides boxy (cubic superellipse: the lungs fill the
            # paravertebral gutters), lateral and anterior sides elliptic
            adx, ady = np.abs(dxn), np.abs(dyn)
            r = (np.where((col - cxl) * side < 0, adx * adx * adx, adx * adx)
                 + np.where(dyn > 0, ady * ady * ady, ady * ady))
            r = np.where((a > 2) & (b > 2), r, np.inf)
            # the diaphragm dome rises in the centre of each lung
            d = self.dome(t)
            r = np.where((dxn ** 2 + (dyn + 0.1) ** 2) < (d * 1.1) ** 2, np.inf, r)
            best = np.minimum(best, r)
        return best

    def lung_inside(self, t, row, col, margin: float = 0.0,
                    radius: np.ndarray | None = None) -> np.ndarray:
        """Boolean: is (t, row, col) inside either lung (``margin`` px shrinks the lungs;
        ``radius``: :meth:`lung_radius` of the same points when already computed)."""
        if radius is None:
            radius = self.lung_radius(t, row, col, margin)
        return (radius < 1.0) & ~self.heart_inside(t, row, col, grow=4.0 * self.px_mm)

    def heart_inside(self, t, row, col, grow: float = 0.0) -> np.ndarray:
        t = np.asarray(t, dtype=np.float32)
        u = (t - self.t_base) / max(self.t_apex - self.t_base, 1e-3)
        h = np.clip(1.0 - np.abs(u - 0.25) / 0.33, 0, 1) ** 0.5  # heart from base to mid chest
        ha = self.body_a * 0.30 * h + grow
        hb = self.body_b * 0.36 * h + grow
        hcx = self.cx + self.body_a * 0.16
        hcy = self.cy - self.body_b * 0.14
        return (((np.asarray(col) - hcx) / np.maximum(ha, 1e-3)) ** 2
                + ((np.asarray(row) - hcy) / np.maximum(hb, 1e-3)) ** 2 < 1.0) & (h > 0)


@dataclass(frozen=True)
class Segment:
    """A straight tube (vessel or airway) between two voxel-space points (k, row, col in
    *pixel* units for all three axes; k is converted with the slice spacing)."""

    p0: np.ndarray
    p1: np.ndarray
    radius: float  # px


def vessel_tree(shape: ChestShape, seed: int, z_px_per_t: float) -> list[Segment]:
    """Branching pulmonary vessels from each hilum, tapering to the periphery.

    Points are (h, row, col) where h = t * z_px_per_t (height in pixel units). Grown one
    generation at a time, with the lung test vectorised over the whole generation."""
    rng = np.random.default_rng(seed ^ 0x5EED)
    segs: list[Segment] = []
    t_hil = shape.t_base + 0.55 * (shape.t_apex - shape.t_base)
    starts, dirs_, radii, lengths = [], [], [], []
    for side in (-1.0, 1.0):
        hil = np.array([t_hil * z_px_per_t,
                        shape.cy + shape.lung_dy - 0.05 * shape.lung_b,
                        shape.cx + side * (shape.lung_dx - 0.55 * shape.lung_a)])
        # main directions: up, down-front, down-back, lateral
        for d in [(1.0, -0.1, side * 0.4), (-1.0, -0.4, side * 0.3), (-1.0, 0.5, side * 0.3),
                  (0.1, 0.1, side * 1.0), (-0.3, -0.8, side * 0.5), (0.4, 0.7, side * 0.4)]:
            starts.append(hil)
            dirs_.append(np.array(d) / np.linalg.norm(d))
            radii.append(5.0 * shape.px_mm)
            lengths.append(38.0 * shape.px_mm)
    p, d = np.array(starts), np.array(dirs_)
    r, length = np.array(radii), np.array(lengths)
    for depth in range(10):
        if len(p) == 0:
            break
        q = p + d * length[:, None]
        inside = shape.lung_inside(q[:, 0] / z_px_per_t, q[:, 1], q[:, 2], margin=2.0)
        half = p + d * (0.5 * length)[:, None]
        inside_half = shape.lung_inside(half[:, 0] / z_px_per_t, half[:, 1], half[:, 2],
                                        margin=2.0)
        q = np.where(inside[:, None], q, half)  # shorten to stay inside the lung
        keep = inside | inside_half
        p, q, d, r, length = p[keep], q[keep], d[keep], r[keep], length[keep]
        segs += [Segment(a, b, float(rad)) for a, b, rad in zip(p, q, r)]
        grow = r >= 0.8 * shape.px_mm
        n_child = 3 if depth < 3 else 2
        p, d = np.repeat(q[grow], n_child, 0), np.repeat(d[grow], n_child, 0)
        r, length = np.repeat(r[grow], n_child), np.repeat(length[grow], n_child)
        d = d + rng.normal(0, 0.55, d.shape)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r = r * rng.uniform(0.68, 0.8, len(r))
        length = length * rng.uniform(0.65, 0.8, len(length))
    return segs


def dense_vessel_tree(shape: ChestShape, seed: int, z_px_per_t: float,
                      min_radius_mm: float = 0.6, spacing_mm: float = 8.0,
                      step_mm: float = 2.5) -> list[Segment]:
    """The realistic twin's pulmonary vessels: a dense tree of tapering tubes that fills
    the lungs evenly, grown by space colonisation (Runions et al. 2007): attraction points
    spread through the lungs about ``spacing_mm`` apart pull the nearest branch tips
    towards them in ``step_mm`` steps from an artery and a vein root at each hilum, and a
    point is used up once a branch comes within 5 mm. Calibres follow Murray's law from
    the tips (``min_radius_mm``) back to the hilum: a parent's r³ is the sum of its
    children's. Real lungs have many more small vessels than the default twin's
    :func:`vessel_tree` (on LIDC-IDRI-0006, in-plane calibres of 1–2 mm dominate);
    ``bench/twin_gap.py`` compares the two with the real scan.

    Points are (h, row, col) with h = t * z_px_per_t (height in pixel units)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed ^ 0xD15EA5E)
    px = shape.px_mm
    # attraction points: uniform in the lungs
    lo = np.array([shape.t_base * z_px_per_t - 10, shape.cy + shape.lung_dy - shape.lung_b,
                   shape.cx - shape.lung_dx - shape.lung_a])
    hi = np.array([shape.t_apex * z_px_per_t + 10, shape.cy + shape.lung_dy + shape.lung_b,
                   shape.cx + shape.lung_dx + shape.lung_a])
    box_ml = float(np.prod(hi - lo)) / px ** 3 / 1000.0
    n_try = int(box_ml * 1000.0 / spacing_mm ** 3) + 1
    pts = lo + rng.random((n_try, 3)) * (hi - lo)
    att = pts[shape.lung_inside(pts[:, 0] / z_px_per_t, pts[:, 1], pts[:, 2], margin=2.0)]
    t_hil = shape.t_base + 0.55 * (shape.t_apex - shape.t_base)
    nodes, parent = [], []
    for side in (-1.0, 1.0):
        hil = np.array([t_hil * z_px_per_t, shape.cy + shape.lung_dy - 0.05 * shape.lung_b,
                        shape.cx + side * (shape.lung_dx - 0.55 * shape.lung_a)])
        for dr in (-6.0, 6.0):  # artery in front, vein behind
            nodes.append(hil + np.array([0.0, dr * px, 0.0]))
            parent.append(-1)
    pos = np.array(nodes)
    step, kill, reach = step_mm * px, 5.0 * px, 30.0 * px
    active = np.ones(len(att), bool)
    for _ in range(400):
        a = att[active]
        if len(a) == 0:
            break
        dist, near = cKDTree(pos).query(a, distance_upper_bound=reach)
        dead = dist < kill
        idx = np.nonzero(active)[0]
        active[idx[dead]] = False
        pull = np.isfinite(dist) & ~dead
        if not pull.any():
            break
        v = a[pull] - pos[near[pull]]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        grow, inv = np.unique(near[pull], return_inverse=True)
        d = np.zeros((len(grow), 3))
        np.add.at(d, inv, v)
        d += rng.normal(0, 0.15, d.shape)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        new = pos[grow] + d * step
        pos = np.concatenate([pos, new])
        parent += [int(g) for g in grow]
    parent_arr = np.asarray(parent)
    r3 = np.zeros(len(pos))
    has_child = np.zeros(len(pos), bool)
    has_child[parent_arr[parent_arr >= 0]] = True
    r3[~has_child] = (min_radius_mm * px) ** 3
    for i in range(len(pos) - 1, -1, -1):  # children come after their parents
        if parent_arr[i] >= 0:
            r3[parent_arr[i]] += r3[i]
    radius = np.cbrt(r3)
    return [Segment(pos[parent_arr[i]], pos[i], float(radius[i]))
            for i in range(len(pos)) if parent_arr[i] >= 0]


def rasterize_tubes(segs: list[Segment], h: np.ndarray, rows: tuple[int, int],
                    cols: tuple[int, int], thickness: float = 0.0) -> np.ndarray:
    """Soft occupancy (0..1) of tubes on the grid of heights ``h`` (one per slice, px units)
    × rows [r0, r1) × cols [c0, c1). Vectorised per segment over its bounding box; only the
    segments that reach the slices are visited. ``thickness`` (px units of h) > 0 averages
    the occupancy over three heights across each slice's thickness (the partial volume of a
    thick slice: a small vessel crossing it obliquely is dimmer and wider)."""
    r0, r1 = rows
    c0, c1 = cols
    out = np.zeros((len(h), r1 - r0, c1 - c0), dtype=np.float32)
    if not segs or len(h) == 0:
        return out
    offsets = (0.0,) if thickness <= 0 else (-thickness / 3.0, 0.0, thickness / 3.0)
    h = np.asarray(h, float)
    p0 = np.array([s.p0 for s in segs], float)
    p1 = np.array([s.p1 for s in segs], float)
    rad = np.array([s.radius for s in segs], float)
    lo_all = np.minimum(p0, p1) - rad[:, None] - 1.5
    hi_all = np.maximum(p0, p1) + rad[:, None] + 1.5
    reach = thickness / 3.0 if thickness > 0 else 0.0  # the farthest offset
    near = ((hi_all[:, 0] >= h.min() - reach) & (lo_all[:, 0] <= h.max() + reach)
            & (hi_all[:, 1] >= r0 - 1) & (lo_all[:, 1] < r1 + 1)
            & (hi_all[:, 2] >= c0 - 1) & (lo_all[:, 2] < c1 + 1))
    for j in np.nonzero(near)[0]:
        s_p0, s_p1, s_r = p0[j], p1[j], float(rad[j])
        lo, hi = lo_all[j], hi_all[j]
        ks = np.nonzero((h >= lo[0] - reach) & (h <= hi[0] + reach))[0]
        if ks.size == 0:
            continue
        ra, rb = max(int(lo[1]), r0), min(int(np.ceil(hi[1])) + 1, r1)
        ca, cb = max(int(lo[2]), c0), min(int(np.ceil(hi[2])) + 1, c1)
        if ra >= rb or ca >= cb:
            continue
        d = s_p1 - s_p0
        L2 = float(d @ d) or 1.0
        occ = np.zeros((ks.size, rb - ra, cb - ca), np.float32)
        for off in offsets:
            P = np.stack(np.broadcast_arrays(
                (h[ks] + off)[:, None, None],
                np.arange(ra, rb, dtype=np.float32)[None, :, None],
                np.arange(ca, cb, dtype=np.float32)[None, None, :]), -1)
            u = np.clip(((P - s_p0) @ d) / L2, 0, 1)
            dist = np.linalg.norm(P - (s_p0 + u[..., None] * d), axis=-1)
            occ += np.clip(s_r + 0.5 - dist, 0, 1).astype(np.float32)
        occ /= len(offsets)
        sub = out[ks, ra - r0:rb - r0, ca - c0:cb - c0]
        np.maximum(sub, occ, out=sub)
        out[ks, ra - r0:rb - r0, ca - c0:cb - c0] = sub
    return out
