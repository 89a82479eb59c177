"""Nodule volumetry from a box: phantoms of known size in anisotropic voxels (sphere,
ellipsoid, a sphere touching a vessel and the chest wall, ground glass, part-solid) and the
Dice of a twin's nodule against the readers' consensus the twin drew."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungviewer.imaging.parenchyma import dice
from lungviewer.reading.lungrads import lung_rads
from lungviewer.reading.volumetry import NoduleSegmentation, VolumetryError, segment_nodule

LUNG_HU, SOFT_HU = -850.0, 30.0


def _grid(shape, spacing, centre_mm):
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    return ((zz * spacing[0] - centre_mm[0]), (yy * spacing[1] - centre_mm[1]),
            (xx * spacing[2] - centre_mm[2]))


def _render(signed_mm: np.ndarray, inside_hu: float, base: np.ndarray | None = None,
            seed: int = 0) -> np.ndarray:
    """HU with a 1 mm partial-volume ramp centred on the surface (signed distance < 0
    inside), lung around it, a little noise; ``base`` is what lies outside."""
    frac = np.clip(0.5 - signed_mm / 1.0, 0.0, 1.0)
    out = (LUNG_HU if base is None else base) + frac * (inside_hu - (LUNG_HU if base is None
                                                                      else base))
    rng = np.random.default_rng(seed)
    return np.rint(out + rng.normal(0, 15, out.shape)).astype(np.int16)


def _box_around(mask: np.ndarray, pad: int = 3) -> tuple[int, int, int, int, int]:
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    k = int(zs[len(zs) // 2])
    rr = np.flatnonzero(mask[k].any(axis=1))
    cc = np.flatnonzero(mask[k].any(axis=0))
    return (k, int(rr[0]) - pad, int(cc[0]) - pad, int(rr[-1]) + 1 + pad, int(cc[-1]) + 1 + pad)


SPACING = (1.25, 0.7, 0.6)


def test_sphere_volume_and_axes():
    shape = (40, 64, 72)
    c = (20 * 1.25, 32 * 0.7, 36 * 0.6)
    z, y, x = _grid(shape, SPACING, c)
    r = 6.0
    d = np.sqrt(z ** 2 + y ** 2 + x ** 2) - r
    hu = _render(d, SOFT_HU)
    truth = d < 0
    seg = segment_nodule(hu, SPACING, _box_around(truth))
    assert seg.type == "solid"
    assert seg.volume_mm3 == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.08)
    assert seg.long_axis_mm == pytest.approx(2 * r, abs=0.8)
    assert seg.short_axis_mm == pytest.approx(2 * r, abs=0.8)
    assert abs(seg.axis_slice - 20) <= 1
    assert dice(seg.full_mask(shape), truth) > 0.93
    assert seg.mean_hu > -300
    d_ = seg.as_dict()
    for key in ("volume_mm3", "long_axis_mm", "short_axis_mm", "mean_diameter_mm", "mean_hu",
                "type", "lung_rads", "axis_slice", "box"):
        assert key in d_
    assert d_["lung_rads"]["category"] == "4A"  # 12 mm solid
    assert d_["lung_rads"]["rule"].startswith("solid, ")
    assert d_["mean_diameter_mm"] == pytest.approx(12.0, abs=0.8)
    # the axis end points lie on the axis slice, about 2r apart in mm
    (r0, c0), (r1, c1) = seg.long_axis_points
    assert math.hypot((r1 - r0) * SPACING[1], (c1 - c0) * SPACING[2]) == pytest.approx(
        seg.long_axis_mm)


def test_ellipsoid_axes_and_volume():
    shape = (36, 70, 80)
    c = (18 * 1.25, 35 * 0.7, 40 * 0.6)
    z, y, x = _grid(shape, SPACING, c)
    a, b, cz = 8.0, 5.0, 4.5  # semi-axes: x (cols), y (rows), z
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / cz) ** 2)
    d = (q - 1.0) * min(a, b, cz)  # an approximate signed distance: fine for the ramp
    hu = _render(d, SOFT_HU, seed=1)
    truth = q < 1
    seg = segment_nodule(hu, SPACING, _box_around(truth))
    assert seg.long_axis_mm == pytest.approx(2 * a, abs=1.0)
    assert seg.short_axis_mm == pytest.approx(2 * b, abs=1.0)
    assert seg.volume_mm3 == pytest.approx(4 / 3 * math.pi * a * b * cz, rel=0.12)
    assert dice(seg.full_mask(shape), truth) > 0.9


@pytest.mark.parametrize("with_lung_mask", [False, True])
def test_vessel_and_pleura_are_cut_off(with_lung_mask):
    shape = (40, 80, 80)
    sp = SPACING
    c = (20 * sp[0], 40 * sp[1], 40 * sp[2])
    z, y, x = _grid(shape, sp, c)
    r = 5.0
    sphere = np.sqrt(z ** 2 + y ** 2 + x ** 2) - r
    # a vessel (radius 1.4 mm) running through the nodule along x, tilted a little in z
    vessel = np.sqrt((y - 1.0) ** 2 + (z - 0.15 * x) ** 2) - 1.4
    # the chest wall: everything beyond the plane tangent to the sphere at +y
    wall = -(y - r)
    d = np.minimum(np.minimum(sphere, vessel), wall)
    hu = _render(d, 40.0, seed=2)
    lung_mask = (wall > 0) if with_lung_mask else None
    truth = sphere < 0
    seg = segment_nodule(hu, sp, _box_around(truth, pad=4), lung_mask)
    m = seg.full_mask(shape)
    assert dice(m, truth) > 0.85
    assert seg.volume_mm3 == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.2)
    # nothing of the wall beyond 1 mm, nothing of the vessel beyond 2 mm outside the sphere
    assert not (m & (wall < -1.0)).any()
    assert not (m & (sphere > 2.0)).any()
    assert seg.type == "solid"


def test_ground_glass_and_part_solid():
    shape = (40, 80, 80)
    c = (20 * 1.25, 40 * 0.7, 40 * 0.6)
    z, y, x = _grid(shape, SPACING, c)
    rho = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    ggn = _render(rho - 7.0, -620.0, seed=3)
    truth = rho < 7.0
    g = segment_nodule(ggn, SPACING, _box_around(truth))
    assert g.type == "ground-glass"
    assert g.solid_diameter_mm is None
    assert g.volume_mm3 == pytest.approx(4 / 3 * math.pi * 7 ** 3, rel=0.15)
    assert g.lung_rads.category == "2"  # < 30 mm ground glass
    # a solid core of 3 mm radius inside the ground glass
    outer = -620.0 + 0 * rho
    part = _render(rho - 3.0, SOFT_HU, base=np.where(rho < 7.0, outer, LUNG_HU), seed=4)
    p = segment_nodule(part, SPACING, _box_around(truth))
    assert p.type == "part-solid"
    assert p.solid_diameter_mm == pytest.approx(6.0, abs=1.5)
    assert p.volume_mm3 == pytest.approx(4 / 3 * math.pi * 7 ** 3, rel=0.2)
    assert p.lung_rads.category in {"3", "4A"}
    assert "solid component" in p.lung_rads.rule


def test_bad_boxes():
    hu = np.full((10, 40, 40), -850, np.int16)
    with pytest.raises(VolumetryError, match="nothing denser than the lung"):
        segment_nodule(hu, SPACING, (5, 10, 10, 20, 20))
    with pytest.raises(ValueError, match="outside"):
        segment_nodule(hu, SPACING, (10, 10, 10, 20, 20))
    with pytest.raises(ValueError, match="covers no pixel"):
        segment_nodule(hu, SPACING, (5, 50, 50, 60, 60))
    with pytest.raises(ValueError, match="slice, row0"):
        segment_nodule(hu, SPACING, (5, 10, 10))
    with pytest.raises(ValueError, match="spacing"):
        segment_nodule(hu, (0, 1, 1), (5, 10, 10, 20, 20))
    with pytest.raises(ValueError, match="lung mask"):
        segment_nodule(hu, SPACING, (5, 10, 10, 20, 20), np.ones((2, 2, 2), bool))


@pytest.fixture(scope="module")
def twin_model():
    from lungviewer.synth.twin import build_model, find_scan

    return build_model(find_scan("LIDC-IDRI-0001"))


def test_twin_nodule_dice(twin_model):
    """The twin's nodule (four readers' ≥ 50 % consensus, solid) from a box around it."""
    from lungviewer.synth.twin import render_region, twin_spacing

    st = twin_model.nodules[0]
    sp = twin_spacing(twin_model.scan)
    kz = np.nonzero(st.masks)[0]
    k = int(st.slices[int(np.median(kz))])
    sl = st.masks[list(st.slices).index(k)]
    rr, cc = np.nonzero(sl)
    box = (k, st.row0 + rr.min() - 2, st.col0 + cc.min() - 2, st.row0 + rr.max() + 3,
           st.col0 + cc.max() + 3)
    size = (30, 130, 130)
    centre = (k, (box[1] + box[3]) // 2, (box[2] + box[4]) // 2)
    hu = render_region(twin_model, centre, size)
    lo = [c - s // 2 for c, s in zip(centre, size)]
    b = (box[0] - lo[0], box[1] - lo[1], box[2] - lo[2], box[3] - lo[1], box[4] - lo[2])
    seg = segment_nodule(hu, sp, b)
    truth = np.zeros(size, bool)
    h, w = st.masks.shape[1:]
    for i, kk in enumerate(st.slices):
        z = int(kk) - lo[0]
        if 0 <= z < size[0]:
            truth[z, st.row0 - lo[1]:st.row0 - lo[1] + h, st.col0 - lo[2]:st.col0 - lo[2] + w] \
                = st.masks[i]
    d = dice(seg.full_mask(size), truth)
    assert d >= 0.9, d
    assert seg.type == "solid"
    ref = truth.sum() * float(np.prod(sp))
    assert seg.volume_mm3 == pytest.approx(ref, rel=0.15)


def test_full_mask_and_record_fields():
    shape = (20, 40, 40)
    seg = NoduleSegmentation(
        box=(5, 1, 1, 9, 9), offset=(4, 2, 3), mask=np.ones((2, 3, 4), bool), volume_mm3=10.0,
        long_axis_mm=4.04, short_axis_mm=3.0, axis_slice=5,
        long_axis_points=((2, 3), (4, 6)), short_axis_points=((3, 3), (3, 5)), mean_hu=10.0,
        solid_fraction=1.0, solid_diameter_mm=3.5, type="solid",
        lung_rads=lung_rads("solid", 3.5))
    m = seg.full_mask(shape)
    assert m.sum() == 24 and m[4:6, 2:5, 3:7].all()
    d = seg.as_dict()
    assert d["mean_diameter_mm"] == 3.5 and d["long_axis_mm"] == 4.0
    assert d["lung_rads"] == {"category": "2", "rule": "solid, 3.5 mm mean diameter → 2",
                              "note": "suggestion, not a diagnosis",
                              "not_assessed": d["lung_rads"]["not_assessed"]}
    # a block reaching past the volume's edge is clipped, not an error
    seg.offset = (19, 39, 39)
    assert seg.full_mask(shape).sum() == 1
