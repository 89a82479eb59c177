"""Nodule volumetry from a box: semi-automatic 3-D segmentation, size, type and Lung-RADS.

The reader draws a box around a nodule on one axial slice; :func:`segment_nodule` finds the
nodule in 3-D and measures it. Pure numpy / scipy on ``(z, y, x)`` HU arrays with spacing
``(z, y, x)`` mm; every operation is in mm, so anisotropic voxels (thick slices) are fine.

Method (all on a region around the box: the box widened by half its size and ≥ 5 mm each
side in plane, and ±(0.75 × the box's larger side + 3 mm) in z):

1. **Levels.** The image is lightly smoothed (σ 0.5 mm in plane). The seed is the strongest
   blob in the central half of the box on its slice (difference of Gaussians, σ ≈ a third of
   the box's half size, HU clipped at 100 so bone counts as soft tissue, weighted towards the
   box centre): nodules win over thin vessels and the chest wall — unless the box centre
   itself is denser than the lung, which then is the seed. The *core* level is the median
   HU within 1–3 mm of the seed, the *lung* level the median of the region's voxels below
   −500 HU.
2. **Chest wall cut (rolling ball).** The lung region — the lung mask when given, else the
   region's voxels below −500 HU — is closed with a ball of radius ≥ the box's half size
   (opening of its complement, by distance transforms). The notch a juxtapleural nodule
   makes in the lung is filled while the flat pleura stays out: the nodule is cut along the
   continuation of the pleural surface.
3. **Region growing and vessel cut.** Voxels above a threshold inside the closed lung,
   connected (6-neighbourhood) to the seed, are opened with a ball whose radius is 0.6 × the
   nodule's inscribed radius (distance transform in mm), keeping the opened part that holds
   the seed and restoring what lies within that radius of it: tubes thinner than the ball
   (vessels) are cut where they join the nodule, the nodule's own edge is kept. Holes are
   filled (3-D and per slice).
4. **Solid or sub-solid.** Every threshold is an *edge level*: :data:`EDGE_LEVEL` (0.45) of
   the way from the lung level to a nodule level — about the partial-volume half-way point,
   a little towards the lung because the readers' outlines include their boundary pixels
   (0.45 was chosen on training patients' twins and the real development scan). The
   *extent* region grows above the edge level to min(core, −600 HU) (ground glass
   included). If the core is denser than −300 HU, the *solid* region grows above the edge
   level to the core (to 100 HU at most: a calcified core's edge is still soft tissue).
   When the extent region reaches more than 1.5 mm beyond the solid region, in a layer at
   least 2 mm thick (an opening with a 1 mm ball, so thin tubes do not count), for more than
   :data:`GG_SHELL_FRACTION` of its voxels, the nodule has a ground-glass component and the
   extent region is the nodule; else the solid region is. Without a solid core, the nodule
   grows above the edge level to its own median (ground glass).
5. **Type** from HU (lightly smoothed): voxels above the *solid level* are solid. That is
   :data:`SOLID_HU` (−300 HU) for a nodule large enough to show its full density, and is
   lowered towards the lung for a small one on thick slices (partial volume: the level is
   lung + :func:`partial_volume_fraction` × (−300 HU − lung); a 6 mm nodule on 2.5 mm
   slices shows about 63 % of its contrast — the real development scan's near-solid
   nodules, readers' texture 4, peaked at −260 HU and were typed ground glass). The solid
   fraction is read on the nodule's core (its in-plane rim, partial volume with the lung
   whatever the nodule is, left out). ``ground-glass``: no core denser than the solid
   level, or solid voxels < :data:`GGN_SOLID_FRACTION` of the core; ``part-solid``: a ground-glass component beside a solid one; ``solid``
   otherwise. A nodule whose mean HU is ≥ :data:`CALCIFIED_HU` is flagged ``calcified``.
6. **Size.** Volume = voxels × voxel volume. The long and short axis are measured on the
   axial slice where the nodule's cross-section is largest (:func:`bidirectional_from_mask`),
   the mean diameter as Lung-RADS asks (:func:`~lungviewer.reading.lungrads.mean_diameter`).
   For a part-solid nodule the solid component is measured the same way.

The Lung-RADS suggestion (:mod:`lungviewer.reading.lungrads`) comes from type and mean
diameter (a calcified nodule: category 1). Agreement with the LIDC readers' outlines is
measured by ``bench/volumetry_dice.py``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungviewer.reading.lungrads import LungRadsResult, lung_rads, mean_diameter, round1
from lungviewer.reading.measurements import bidirectional_from_mask

log = logging.getLogger(__name__)

SOLID_HU = -300.0  #: voxels above this are the solid part (lung window "solid")
EDGE_LEVEL = 0.45  #: the edge threshold lies this far from the lung level to the core level
GG_REF_HU = -600.0  #: ground glass reference level for the extent threshold
DARK_HU = -500.0  #: below this: lung parenchyma (local lung region, lung level)
CALCIFIED_HU = 200.0  #: mean HU from which a nodule is called calcified
GGN_SOLID_FRACTION = 0.05  #: fewer solid voxels than this fraction: ground glass
GG_SHELL_FRACTION = 0.3  #: extent voxels > 1.5 mm outside the solid part: ground-glass part
PV_MARGIN_MM = 1.5  #: partial-volume rim allowed around the solid part
GG_MIN_HALF_THICKNESS_MM = 1.0  #: a ground-glass component is at least twice this thick
OPEN_FRACTION = 0.6  #: vessel-cut ball radius / nodule inscribed radius
MAX_VESSEL_RADIUS_MM = 2.5  #: the vessel-cut ball grows no larger than this ...
LARGE_OPEN_FRACTION = 0.35  #: ... or this fraction of the inscribed radius (keeps lobulations)
VOI_SCALE = 1.6  #: the nodule stays within the box's circumscribed ellipsoid × this
MIN_CONTRAST_HU = 100.0  #: core must be this much denser than the lung
SEED_CLIP_HU = 100.0  #: HU clipped here for the seed and the solid level (calcium = tissue)

PV_FULL_SLICES = 3.0  #: a solid nodule shows its full density from this many slices ...
PV_FULL_MM = 2.0  #: ... plus this (mm, the in-plane blur) across
PV_MIN_FRACTION = 0.5  #: the partial-volume correction lowers the solid level at most this far
CORE_MIN_FRACTION = 0.2  #: the type is read on the core (rim off) when it holds this much


def partial_volume_fraction(diameter_mm: float, slice_mm: float) -> float:
    """The fraction of a solid nodule's contrast to the lung that its densest voxel shows,
    for a nodule of equivalent ``diameter_mm`` on slices ``slice_mm`` thick: 1 from
    :data:`PV_FULL_SLICES` slices + :data:`PV_FULL_MM` across, less in proportion below
    that (a slice averages the nodule with the lung above and below it, the in-plane blur
    with the lung around it), never under :data:`PV_MIN_FRACTION`."""
    full = PV_FULL_SLICES * float(slice_mm) + PV_FULL_MM
    return float(min(1.0, max(PV_MIN_FRACTION, float(diameter_mm) / full)))


_STRUCT6 = ndi.generate_binary_structure(3, 1)
_STRUCT_SLICE = np.zeros((3, 3, 3), dtype=bool)
_STRUCT_SLICE[1] = ndi.generate_binary_structure(2, 1)


class VolumetryError(ValueError):
    """The box holds nothing that can be segmented as a nodule."""


@dataclass
class NoduleSegmentation:
    """A nodule segmented from a box, with its measurements.

    ``mask`` is a bool ``(z, y, x)`` block at ``offset`` (z0, y0, x0) in the volume; the axes
    are measured on axial slice ``axis_slice`` (volume index) with end points ``(row, col)``
    in that slice's pixel coordinates."""

    box: tuple[int, int, int, int, int]
    offset: tuple[int, int, int]
    mask: np.ndarray
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    axis_slice: int
    long_axis_points: tuple[tuple[float, float], tuple[float, float]]
    short_axis_points: tuple[tuple[float, float], tuple[float, float]]
    mean_hu: float
    solid_fraction: float
    solid_diameter_mm: float | None
    type: str
    lung_rads: LungRadsResult
    calcified: bool = False
    seed: tuple[int, int, int] = (0, 0, 0)

    @property
    def mean_diameter_mm(self) -> float:
        return mean_diameter(self.long_axis_mm, self.short_axis_mm)

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    def as_dict(self) -> dict:
        return {
            "volume_mm3": float(round(self.volume_mm3)),
            "long_axis_mm": round1(self.long_axis_mm),
            "short_axis_mm": round1(self.short_axis_mm),
            "mean_diameter_mm": self.mean_diameter_mm,
            "mean_hu": round(float(self.mean_hu), 1),
            "type": self.type,
            "calcified": self.calcified,
            "solid_fraction": round(float(self.solid_fraction), 3),
            "solid_diameter_mm": (None if self.solid_diameter_mm is None
                                  else round1(self.solid_diameter_mm)),
            "lung_rads": self.lung_rads.as_dict(),
            "axis_slice": int(self.axis_slice),
            "long_axis_points": [list(p) for p in self.long_axis_points],
            "short_axis_points": [list(p) for p in self.short_axis_points],
            "box": [int(v) for v in self.box],
            "offset": [int(v) for v in self.offset],
            "voxels": self.voxels,
        }

    def full_mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask as a bool array of the whole volume's ``shape``."""
        out = np.zeros(tuple(int(s) for s in shape), dtype=bool)
        z0, y0, x0 = self.offset
        dz, dy, dx = self.mask.shape
        sub = self.mask[:max(0, min(dz, out.shape[0] - z0)), :max(0, min(dy, out.shape[1] - y0)),
                        :max(0, min(dx, out.shape[2] - x0))]
        out[z0:z0 + sub.shape[0], y0:y0 + sub.shape[1], x0:x0 + sub.shape[2]] = sub
        return out

    def text(self) -> str:
        return (f"{self.type}, {self.volume_mm3:.0f} mm³, {round1(self.long_axis_mm):.1f} × "
                f"{round1(self.short_axis_mm):.1f} mm (mean {self.mean_diameter_mm:.1f} mm), "
                f"{self.mean_hu:.0f} HU — Lung-RADS {self.lung_rads.category}")


# --------------------------------------------------------------------------- helpers
def _check_inputs(hu: np.ndarray, spacing, box) -> tuple[np.ndarray, tuple[float, float, float],
                                                          tuple[int, int, int, int, int]]:
    vol = np.asarray(hu)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise ValueError(f"the volume must be a (z, y, x) array, got shape {vol.shape}")
    try:
        sp = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be three numbers (z, y, x) mm, got {spacing!r}") from None
    if len(sp) != 3 or not all(math.isfinite(v) and v > 0 for v in sp):
        raise ValueError(f"spacing must be three positive numbers (z, y, x) mm, got {spacing!r}")
    try:
        b = tuple(int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box is (slice, row0, col0, row1, col1), got {box!r}") from None
    if len(b) != 5:
        raise ValueError(f"a box is (slice, row0, col0, row1, col1), got {box!r}")
    k, r0, c0, r1, c1 = b
    if not 0 <= k < vol.shape[0]:
        raise ValueError(f"box slice {k} is outside 0..{vol.shape[0] - 1}")
    r0, r1 = sorted((r0, r1))
    c0, c1 = sorted((c0, c1))
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, vol.shape[1]), min(c1, vol.shape[2])
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"box {box!r} covers no pixel of the {vol.shape[1]}×{vol.shape[2]} "
                         "image (rows and columns are end-exclusive)")
    return vol, sp, (k, r0, c0, r1, c1)  # type: ignore[return-value]


def _dilate_mm(mask: np.ndarray, r_mm: float, sampling) -> np.ndarray:
    """Voxels within ``r_mm`` of ``mask`` (distance transform; ``mask`` not empty)."""
    return ndi.distance_transform_edt(~mask, sampling=sampling) <= r_mm


def _component_at(mask: np.ndarray, seed: tuple[int, int, int],
                  search: np.ndarray | None = None) -> np.ndarray:
    """The 6-connected component of ``mask`` holding ``seed`` (or, if the seed is outside,
    the component with most voxels inside ``search``); empty if none."""
    lab, n = ndi.label(mask, structure=_STRUCT6)
    if n == 0:
        return np.zeros_like(mask)
    k = lab[seed]
    if k == 0:
        if search is None:
            return np.zeros_like(mask)
        counts = np.bincount(lab[search], minlength=n + 1)
        counts[0] = 0
        k = int(np.argmax(counts))
        if counts[k] == 0:
            return np.zeros_like(mask)
    return lab == k


def _fill(mask: np.ndarray) -> np.ndarray:
    out = ndi.binary_fill_holes(mask)
    return ndi.binary_fill_holes(out, structure=_STRUCT_SLICE)


def _rolling_ball(lung: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    """Closing of the lung region with a ball of ``radius_mm``: the opening of its complement
    (chest wall, mediastinum), which a nodule narrower than the ball does not survive.

    Computed on every second pixel in plane when pixels are finer than 1 mm (the ball is
    ≥ 5 mm wide, so that changes nothing that matters) and repeated back."""
    step = 2 if max(sampling[1], sampling[2]) < 1.0 else 1
    small = lung[:, ::step, ::step]
    sp = (sampling[0], sampling[1] * step, sampling[2] * step)
    wall = ~small
    if not wall.any():
        return np.ones_like(lung)
    core = ndi.distance_transform_edt(wall, sampling=sp) >= radius_mm
    if not core.any():
        return np.ones_like(lung)
    opened = _dilate_mm(core, radius_mm, sp) & wall
    if step > 1:
        opened = np.repeat(np.repeat(opened, step, axis=1), step, axis=2)
        opened = opened[:, :lung.shape[1], :lung.shape[2]] & ~lung
    return ~opened


def _grow_and_cut(light: np.ndarray, threshold: float, voi: np.ndarray,
                  seed: tuple[int, int, int], search: np.ndarray, sampling,
                  lung: np.ndarray | None, ball_mm: float,
                  near_seed: np.ndarray) -> np.ndarray:
    """Region above ``threshold`` in the ``voi`` connected to the seed, cut at the chest wall
    (rolling ball on the lung region: ``lung`` or, without it, what is below the threshold)
    and with attached tubes (vessels) thinner than the nodule cut off; holes filled."""
    above = light > threshold
    reach = _component_at(above, seed, search)
    if not reach.any():
        return reach
    allowed = voi
    if reach[:, [0, -1], :].any() or reach[:, :, [0, -1]].any():
        # something large may be attached (chest wall, mediastinum): cut it at the pleura
        region = ~above if lung is None else (lung | ~above)
        allowed = voi & _rolling_ball(region, ball_mm, sampling)
    comp = _component_at(reach & allowed, seed, search)
    if not comp.any():
        return comp
    # the rest only concerns the component: work on its bounding box (+1 voxel)
    win = _bbox(comp, 1)
    part, look = comp[win], near_seed[win]
    d_in = ndi.distance_transform_edt(np.pad(part, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    # the nodule's inscribed radius: the deepest point near the seed (not a thick vessel
    # elsewhere in the box)
    inner = d_in[look & part] if (look & part).any() else d_in[part]
    r_in = float(inner.max())
    r_open = min(OPEN_FRACTION * r_in, max(MAX_VESSEL_RADIUS_MM, LARGE_OPEN_FRACTION * r_in))
    if r_open >= min(sampling[1], sampling[2]) * 1.01:
        core = d_in >= r_open
        if not core.any():
            return _finish_part(comp, win, part)
        # the core part nearest the seed
        pts = np.argwhere(core)
        rel = (pts - (np.array(seed) - [w.start for w in win])) * np.asarray(sampling)
        best = tuple(int(v) for v in pts[int(np.argmin((rel ** 2).sum(axis=1)))])
        core = _component_at(core, best)
        # restore within r_open of the core; a slice step never exceeds the ball, so thick
        # slices keep the nodule's first and last slice
        recon_sampling = (min(sampling[0], r_open), sampling[1], sampling[2])
        tol = 0.5 * max(sampling[1], sampling[2])
        part = _dilate_mm(core, r_open + tol, recon_sampling) & part
        part = _component_at(part, tuple(int(v) for v in best))
    return _finish_part(comp, win, part)


def _finish_part(comp: np.ndarray, win, part: np.ndarray) -> np.ndarray:
    out = np.zeros_like(comp)
    out[win] = _fill(part)
    return out


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """The bounding box of a non-empty mask, ``pad`` voxels wider (clipped to the array)."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad,
                                                       mask.shape[axis])))
    return tuple(out)  # type: ignore[return-value]


def _largest_slice(mask: np.ndarray) -> int:
    return int(np.argmax(mask.sum(axis=(1, 2))))


# --------------------------------------------------------------------------- segmentation
def segment_nodule(hu: np.ndarray, spacing: tuple[float, float, float],
                   box: tuple[int, int, int, int, int],
                   lung_mask: np.ndarray | None = None) -> NoduleSegmentation:
    """Segment the nodule in ``box`` = (slice, row0, col0, row1, col1) (axial slice index,
    rows and columns end-exclusive) of ``hu`` (z, y, x) HU with voxel ``spacing`` (z, y, x)
    mm, and measure it (see the module docstring for the method).

    ``lung_mask`` (bool, the volume's shape; e.g. the lung mask of the threshold method)
    bounds the nodule at the chest wall; without it the region's voxels below −500 HU stand
    in for the lung.

    Raises ValueError for a bad volume, spacing or box; :class:`VolumetryError` (a
    ValueError) when the box holds nothing denser than the lung around its centre."""
    vol, sp, (k, r0, c0, r1, c1) = _check_inputs(hu, spacing, box)
    if lung_mask is not None:
        lung_mask = np.asarray(lung_mask)
        if lung_mask.shape != vol.shape:
            raise ValueError(f"the lung mask's shape {lung_mask.shape} is not the volume's "
                             f"{vol.shape}")
    dz, dy, dx = sp
    h_mm, w_mm = (r1 - r0) * dy, (c1 - c0) * dx
    half_mm = max(h_mm, w_mm) / 2.0
    # the region around the box
    my = max(math.ceil(0.35 * (r1 - r0)) + 2, math.ceil(5.0 / dy))
    mx = max(math.ceil(0.35 * (c1 - c0)) + 2, math.ceil(5.0 / dx))
    mz = math.ceil((1.5 * half_mm + 3.0) / dz)
    z0, z1 = max(k - mz, 0), min(k + mz + 1, vol.shape[0])
    y0, y1 = max(r0 - my, 0), min(r1 + my, vol.shape[1])
    x0, x1 = max(c0 - mx, 0), min(c1 + mx, vol.shape[2])
    sub = vol[z0:z1, y0:y1, x0:x1].astype(np.float32)
    kk, br0, bc0, br1, bc1 = k - z0, r0 - y0, c0 - x0, r1 - y0, c1 - x0

    sig_light = (0.0, 0.5 / dy, 0.5 / dx)
    light = ndi.gaussian_filter(sub, sig_light, mode="nearest")
    # seed: the strongest blob (difference of Gaussians on the box's slice, HU clipped at
    # soft tissue so bone does not win; large structures such as the chest wall respond only
    # at their edge) in the central half of the box, favouring the box centre
    blob_mm = max(half_mm / 3.0, 1.0)
    img = np.minimum(sub[kk], SEED_CLIP_HU)
    s1 = (blob_mm / dy, blob_mm / dx)
    dog = (ndi.gaussian_filter(img, s1, mode="nearest")
           - ndi.gaussian_filter(img, (2.5 * s1[0], 2.5 * s1[1]), mode="nearest"))
    qr, qc = max((br1 - br0) // 4, 0), max((bc1 - bc0) // 4, 0)
    ca, cb = br0 + qr, max(br1 - qr, br0 + qr + 1)
    cc_, cd = bc0 + qc, max(bc1 - qc, bc0 + qc + 1)
    gr, gc = np.ogrid[ca:cb, cc_:cd]
    rho2 = (((gr - (br0 + br1 - 1) / 2) / max((br1 - br0) / 2, 1)) ** 2
            + ((gc - (bc0 + bc1 - 1) / 2) / max((bc1 - bc0) / 2, 1)) ** 2)
    score = dog[ca:cb, cc_:cd] * (1.0 - 0.5 * rho2)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    seed = (kk, ca + int(i), cc_ + int(j))
    # ... unless the box centre itself is denser than the lung: readers centre the box
    dark = light < DARK_HU
    bg = float(np.median(light[dark])) if dark.sum() >= 50 else -850.0
    bg = min(max(bg, -1000.0), -650.0)
    mr, mc = (br0 + br1 - 1) // 2, (bc0 + bc1 - 1) // 2
    mid = light[kk, max(mr - 1, 0):mr + 2, max(mc - 1, 0):mc + 2]
    if float(mid.max()) > bg + MIN_CONTRAST_HU:
        i, j = np.unravel_index(int(np.argmax(mid)), mid.shape)
        seed = (kk, max(mr - 1, 0) + int(i), max(mc - 1, 0) + int(j))
    search = np.zeros(sub.shape, dtype=bool)  # the box itself, on slices near its own
    search[max(kk - 1, 0):kk + 2, br0:br1, bc0:bc1] = True

    # levels
    zz, yy, xx = np.ogrid[:sub.shape[0], :sub.shape[1], :sub.shape[2]]
    rc = min(max(0.3 * min(h_mm, w_mm) / 2.0, 1.0), 3.0)
    d2_seed = (((zz - seed[0]) * dz) ** 2 + ((yy - seed[1]) * dy) ** 2
               + ((xx - seed[2]) * dx) ** 2)
    ball = d2_seed <= rc * rc
    near_seed = d2_seed <= max(0.6 * half_mm, 2.0) ** 2  # where the nodule's centre may be
    core_level = float(np.median(light[ball]))
    if core_level - bg < MIN_CONTRAST_HU:
        raise VolumetryError(f"nothing denser than the lung at the box centre (core "
                             f"{core_level:.0f} HU, lung {bg:.0f} HU): draw the box around "
                             "the nodule")

    # where the nodule may be
    lung = lung_mask[z0:z1, y0:y1, x0:x1].astype(bool) if lung_mask is not None else None
    ball_mm = half_mm * 1.2 + 1.5
    # the box's circumscribed ellipse (× VOI_SCALE), as an ellipsoid as deep as it is wide
    cy, cx = (br0 + br1 - 1) / 2.0, (bc0 + bc1 - 1) / 2.0
    ay = VOI_SCALE * max(h_mm, 2 * dy) / 2.0 + dy / 2
    ax_ = VOI_SCALE * max(w_mm, 2 * dx) / 2.0 + dx / 2
    az = VOI_SCALE * half_mm + dz / 2
    voi = ((((yy - cy) * dy / ay) ** 2 + ((xx - cx) * dx / ax_) ** 2
            + ((zz - kk) * dz / az) ** 2) <= 1.0)
    def grow(threshold: float, within: np.ndarray) -> np.ndarray:
        return _grow_and_cut(light, threshold, within, seed, search, sp, lung, ball_mm,
                             near_seed)

    t_low = bg + EDGE_LEVEL * (min(core_level, GG_REF_HU) - bg)
    t_low = max(t_low, bg + 60.0)
    extent = grow(t_low, voi)
    if not extent.any():
        raise VolumetryError("no nodule found connected to the box centre")
    # partial volume: a small nodule on thick slices never shows its full density, so the
    # solid level is lowered by the contrast fraction its size lets through
    d_eq = (6.0 * float(extent.sum()) * dz * dy * dx / math.pi) ** (1.0 / 3.0)
    solid_hu = bg + partial_volume_fraction(d_eq, dz) * (SOLID_HU - bg)
    has_core = core_level > solid_hu
    sub_solid = True
    if has_core:
        t_mid = bg + EDGE_LEVEL * (min(core_level, SEED_CLIP_HU) - bg)
        solid = grow(t_mid, extent)
        if solid.any():
            win = _bbox(extent, 1)  # solid ⊆ extent: the extent's box holds everything
            near = _dilate_mm(solid[win], PV_MARGIN_MM, sp)
            shell = extent[win] & ~near
            if shell.any():  # a ground-glass halo is thick; vessels left in the shell are not
                thick = ndi.distance_transform_edt(np.pad(shell, 1), sampling=sp)[
                    1:-1, 1:-1, 1:-1] >= GG_MIN_HALF_THICKNESS_MM
                shell = (_dilate_mm(thick, GG_MIN_HALF_THICKNESS_MM, sp) & shell
                         if thick.any() else thick)
            sub_solid = shell.sum() > GG_SHELL_FRACTION * extent.sum()
            mask = extent | solid if sub_solid else solid
        else:
            mask = extent
    else:
        gg_level = float(np.median(light[extent]))
        t2 = bg + EDGE_LEVEL * (gg_level - bg)
        mask = extent
        if t2 > t_low + 10.0:
            refined = grow(t2, extent)
            if refined.any():
                mask = refined

    # type, on the core: the rim is partial volume with the lung whatever the nodule is
    solid_vox = mask & (light > solid_hu)
    n = int(mask.sum())
    inner = ndi.binary_erosion(mask, _STRUCT_SLICE)
    if inner.sum() >= CORE_MIN_FRACTION * n:
        solid_fraction = float((solid_vox & inner).sum()) / float(inner.sum())
    else:
        solid_fraction = float(solid_vox.sum()) / n
    if not has_core or solid_fraction < GGN_SOLID_FRACTION:
        ntype = "ground-glass"
    elif sub_solid:
        ntype = "part-solid"
    else:
        ntype = "solid"
    mean_hu = float(sub[mask].mean())
    calcified = mean_hu >= CALCIFIED_HU

    # size
    ax = _largest_slice(mask)
    long_pts, short_pts, long_mm, short_mm = bidirectional_from_mask(mask[ax], (dy, dx))
    solid_d: float | None = None
    if ntype == "solid":
        solid_d = mean_diameter(long_mm, short_mm)
    elif ntype == "part-solid":
        sk = _largest_slice(solid_vox)
        _, _, sl, ss = bidirectional_from_mask(solid_vox[sk], (dy, dx))
        solid_d = mean_diameter(sl, ss)
    volume = n * dz * dy * dx
    lr = lung_rads("calcified" if calcified else ntype, mean_diameter(long_mm, short_mm),
                   solid_d, volume)

    # crop the mask to its bounding box (+1 voxel) and move everything to volume coordinates
    zs, ys, xs = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = (max(zs[0] - 1, 0), max(ys[0] - 1, 0), max(xs[0] - 1, 0))
    hi = (min(zs[-1] + 2, mask.shape[0]), min(ys[-1] + 2, mask.shape[1]),
          min(xs[-1] + 2, mask.shape[2]))
    block = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy()

    def to_vol(p: tuple[float, float]) -> tuple[float, float]:
        return (float(p[0]) + y0, float(p[1]) + x0)

    return NoduleSegmentation(
        box=(int(k), int(r0), int(c0), int(r1), int(c1)),
        offset=(int(z0 + lo[0]), int(y0 + lo[1]), int(x0 + lo[2])), mask=block,
        volume_mm3=float(volume), long_axis_mm=float(long_mm), short_axis_mm=float(short_mm),
        axis_slice=int(z0 + ax),
        long_axis_points=(to_vol(long_pts[0]), to_vol(long_pts[1])),
        short_axis_points=(to_vol(short_pts[0]), to_vol(short_pts[1])),
        mean_hu=mean_hu, solid_fraction=solid_fraction, solid_diameter_mm=solid_d,
        type=ntype, lung_rads=lr, calcified=calcified,
        seed=(int(seed[0] + z0), int(seed[1] + y0), int(seed[2] + x0)))


# --------------------------------------------------------------------------- reference
def reader_masks(nodule, shape: tuple[int, int, int]) -> tuple[tuple[int, int, int],
                                                               np.ndarray]:
    """The filled outlines of each reader who outlined ``nodule`` (a
    :class:`lungviewer.study.annotations.Nodule` mapped onto a volume of ``shape``):
    ``(offset (z0, y0, x0), counts)`` with ``counts`` (z, y, x) uint8 = how many readers'
    outlines hold the voxel (inclusion polygons minus exclusions, pixel centres inside or on
    the outline, as the twin draws them). Readers' one-point marks are ignored."""
    from skimage.draw import polygon as fill_polygon

    marks = [m for m in nodule.marks if m.kind == "nodule"]
    rois = [(m_i, r) for m_i, m in enumerate(marks) for r in m.rois
            if r.slice_index is not None and len(r.points) >= 1]
    if not rois:
        raise ValueError("the nodule has no outline on this series")
    pts = np.concatenate([r.points for _, r in rois])
    ks = [r.slice_index for _, r in rois]
    c0, r0 = (int(v) for v in pts.min(0))
    c1, r1 = (int(v) for v in pts.max(0))
    z0, z1 = min(ks), max(ks)
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, shape[1] - 1), min(c1, shape[2] - 1)
    dims = (z1 - z0 + 1, r1 - r0 + 1, c1 - c0 + 1)
    counts = np.zeros(dims, dtype=np.uint8)
    for m_i in range(len(marks)):
        one = np.zeros(dims, dtype=bool)
        mine = [r for i, r in rois if i == m_i]
        for r in sorted(mine, key=lambda r: not r.inclusion):  # inclusions first
            rows = np.clip(r.points[:, 1] - r0, 0, dims[1] - 1)
            cols = np.clip(r.points[:, 0] - c0, 0, dims[2] - 1)
            rr, cc = fill_polygon(rows, cols, dims[1:])
            sl = one[r.slice_index - z0]
            if r.inclusion:
                sl[rr, cc] = True
                sl[rows, cols] = True
            else:
                sl[rr, cc] = False
        counts += one
    return (z0, r0, c0), counts

