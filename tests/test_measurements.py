"""Measurements against known shapes: lengths and areas in mm with anisotropic voxels in every
plane, ROI HU statistics, the bidirectional axes of masks, round trip and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungviewer.reading.measurements import (
    Measurement,
    MeasurementResult,
    bidirectional_from_mask,
    measure,
)

SPACING = (2.5, 0.7, 0.6)  # (z, y, x) mm


@pytest.fixture
def vol():
    return np.zeros((20, 64, 80), dtype=np.int16)


@pytest.mark.parametrize(("plane", "index", "row_mm", "col_mm"), [
    ("axial", 5, 0.7, 0.6), ("coronal", 30, 2.5, 0.6), ("sagittal", 40, 2.5, 0.7)])
def test_ruler_length_in_each_plane(vol, plane, index, row_mm, col_mm):
    m = Measurement("ruler", plane, index, [(2.0, 3.0), (6.0, 10.0)])
    res = measure(m, vol, SPACING)
    assert res.length_mm == pytest.approx(math.hypot(4 * row_mm, 7 * col_mm))
    assert res.area_mm2 is None and res.hu_mean is None
    assert res.text() == f"{res.length_mm:.1f} mm"


def test_ellipse_area_and_pixels(vol):
    # semi-axes 10 rows × 16 cols on a coronal image: a = 25 mm, b = 9.6 mm
    m = Measurement("ellipse", "coronal", 10, [(0.0, 4.0), (20.0, 36.0)])
    hu = vol.copy()
    hu[:, 10, :] = 50  # the coronal image 10 is uniform 50 HU
    res = measure(m, hu, SPACING)
    assert res.area_mm2 == pytest.approx(math.pi * (10 * 2.5) * (16 * 0.6))
    # pixel count close to the continuous area in pixels (π · 10 · 16)
    assert res.n_pixels == pytest.approx(math.pi * 10 * 16, rel=0.03)
    assert res.hu_mean == 50 and res.hu_sd == 0 and res.hu_min == res.hu_max == 50


def test_ellipse_excludes_corners(vol):
    hu = vol.copy()
    hu[5] = 100
    hu[5, 10:31, 10:31] = 0
    hu[5, 20, 20] = 0
    # ellipse inscribed in the 0-HU square: no 100-HU pixel inside
    res = measure(Measurement("ellipse", "axial", 5, [(10, 10), (30, 30)]), hu, SPACING)
    assert res.hu_max == 0
    # the rectangle over the same square sees none either; widened by one pixel it does
    assert measure(Measurement("rectangle", "axial", 5, [(10, 10), (30, 30)]), hu,
                   SPACING).hu_max == 0
    assert measure(Measurement("rectangle", "axial", 5, [(9, 10), (30, 30)]), hu,
                   SPACING).hu_max == 100


def test_rectangle_stats_on_known_pattern(vol):
    hu = vol.copy()
    # a checkerboard of -20 / 80 HU in a 6 × 4 block of axial slice 3
    block = np.where((np.add.outer(np.arange(6), np.arange(4)) % 2) == 0, -20, 80)
    hu[3, 10:16, 20:24] = block
    m = Measurement("rectangle", "axial", 3, [(15.0, 23.0), (10.0, 20.0)])  # corners any order
    res = measure(m, hu, SPACING)
    assert res.n_pixels == 24
    assert res.hu_mean == pytest.approx(30.0)
    assert res.hu_sd == pytest.approx(50.0)
    assert (res.hu_min, res.hu_max) == (-20.0, 80.0)
    assert res.area_mm2 == pytest.approx(5 * 0.7 * 3 * 0.6)
    assert res.text() == f"area {res.area_mm2:.1f} mm², HU 30 ± 50 [\u221220, 80]"


def test_roi_outside_image_has_no_pixels(vol):
    res = measure(Measurement("rectangle", "axial", 0, [(-10, -10), (-5, -5)]), vol, SPACING)
    assert res.n_pixels == 0 and res.hu_mean is None
    assert "no pixels" in res.text()


def test_bidirectional_measurement(vol):
    m = Measurement("bidirectional", "sagittal", 7, [(0, 0), (4, 0), (2, -3), (2, 3)])
    res = measure(m, vol, SPACING)
    assert res.long_mm == pytest.approx(10.0)  # 4 rows × 2.5 mm
    assert res.short_mm == pytest.approx(6 * 0.7)
    assert "10.0 × 4.2 mm" in res.text()


def test_index_outside_volume(vol):
    with pytest.raises(ValueError, match="outside 0..19"):
        measure(Measurement("ruler", "axial", 20, [(0, 0), (1, 1)]), vol, SPACING)


def test_disk_axes_from_mask():
    yy, xx = np.mgrid[:80, :80]
    disk = (yy - 40) ** 2 + (xx - 38) ** 2 <= 15 ** 2
    lp, sp, long_mm, short_mm = bidirectional_from_mask(disk, (0.5, 0.5))
    assert long_mm == pytest.approx(15.5, abs=0.3)  # digital radius 15.5 px × 2 × 0.5 mm
    assert short_mm == pytest.approx(long_mm, abs=0.3)
    # the axes are perpendicular
    u = np.subtract(lp[1], lp[0])
    v = np.subtract(sp[1], sp[0])
    assert abs(np.dot(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v)) < 0.05


def test_rotated_ellipse_axes_with_anisotropic_pixels():
    # an ellipse of 12 mm × 5 mm semi-axes, rotated 30°, on 0.5 × 0.8 mm pixels
    rows, cols = np.mgrid[:120, :80]
    y, x = (rows - 60) * 0.5, (cols - 40) * 0.8
    t = math.radians(30)
    u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    mask = (u / 12.0) ** 2 + (v / 5.0) ** 2 <= 1.0
    lp, _, long_mm, short_mm = bidirectional_from_mask(mask, (0.5, 0.8))
    assert long_mm == pytest.approx(24.0, abs=0.8)
    assert short_mm == pytest.approx(10.0, abs=0.8)
    d = np.subtract(lp[1], lp[0]) * (0.5, 0.8)
    angle = math.degrees(math.atan2(d[0], d[1])) % 180
    assert angle == pytest.approx(30, abs=4)


def test_axes_of_an_l_shape_span_the_arms():
    m = np.zeros((30, 30), bool)
    m[5:25, 5:9] = True
    m[21:25, 5:25] = True
    _, _, long_mm, short_mm = bidirectional_from_mask(m, (1.0, 1.0))
    # the sub-pixel outline cuts square corners by up to half a pixel each
    assert long_mm == pytest.approx(math.hypot(20, 20), abs=1.0)
    # perpendicular to the diagonal, the widest chord crosses the corner: 4 px arms × √2
    assert short_mm == pytest.approx(4 * math.sqrt(2), abs=0.8)


def test_mask_errors():
    with pytest.raises(ValueError, match="empty"):
        bidirectional_from_mask(np.zeros((5, 5), bool), (1, 1))
    with pytest.raises(ValueError, match="2-D"):
        bidirectional_from_mask(np.ones((2, 2, 2), bool), (1, 1))
    _, _, l1, s1 = bidirectional_from_mask(np.pad(np.ones((1, 1), bool), 2), (1.0, 1.0))
    assert l1 == pytest.approx(1.0, abs=0.5) and s1 <= l1


def test_round_trip():
    m = Measurement("bidirectional", "coronal", 12, [(1, 2), (3.5, 4), (2, 2), (2.5, 3)],
                    label="RUL nodule")
    d = m.to_dict()
    back = Measurement.from_dict(d)
    assert back == m and back.id == m.id and back.label == "RUL nodule"
    assert Measurement.from_dict(d).to_dict() == d
    moved = m.moved(1, -1)
    assert moved.id == m.id and moved.points[0] == (2.0, 1.0)
    # ids are new for each measurement
    assert Measurement("ruler", "axial", 0, [(0, 0), (1, 1)]).id != m.id
    assert MeasurementResult(length_mm=1.0).as_dict()["length_mm"] == 1.0
    # points may come as a numpy array (the views hand them over so)
    arr = Measurement("ruler", "axial", np.int64(3), np.array([[0, 0], [3, 4]]))
    assert arr.points == [(0.0, 0.0), (3.0, 4.0)] and arr.index == 3


@pytest.mark.parametrize(("d", "msg"), [
    ({"kind": "angle", "plane": "axial", "index": 0, "points": [[0, 0], [1, 1]]},
     "unknown measurement kind"),
    ({"kind": "ruler", "plane": "oblique", "index": 0, "points": [[0, 0], [1, 1]]},
     "unknown plane"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": [[0, 0]]}, "has 2 points"),
    ({"kind": "bidirectional", "plane": "axial", "index": 0, "points": [[0, 0], [1, 1]]},
     "has 4 points"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": [[0, float("nan")], [1, 1]]},
     "finite"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": [[0, "a"], [1, 1]]},
     "must be a number"),
    ({"kind": "ruler", "plane": "axial", "index": -1, "points": [[0, 0], [1, 1]]},
     "integer ≥ 0"),
    ({"kind": "ruler", "plane": "axial", "index": 1.5, "points": [[0, 0], [1, 1]]},
     "integer ≥ 0"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": "0,0,1,1"}, "list of"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": [[0, 0, 0], [1, 1]]},
     "(row, col) pair"),
    ({"kind": "ruler", "plane": "axial", "points": [[0, 0], [1, 1]]}, "needs 'index'"),
    ({"kind": "ruler", "plane": "axial", "index": 0, "points": [[0, 0], [1, 1]], "id": 5},
     "'id' must be text"),
    ([1, 2, 3], "must be an object"),
])
def test_validation_errors(d, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        Measurement.from_dict(d)
