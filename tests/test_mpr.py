"""Multi-planar reading: plane geometry in mm, orientation letters, the linked crosshair,
layouts, thick slabs, overlays on every plane and cine — pure helpers, then pytest-qt on
small phantoms with anisotropic voxels (2.5 mm slices, 0.7 mm pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from lungviewer.imaging import planes
from lungviewer.study.volume import Volume
from lungviewer.ui import settings

NZ, NY, NX = 40, 64, 80
SPACING = (2.5, 0.7, 0.7)
DOT = (20, 30, 40)  # the bright voxel (z, y, x)


def phantom(dot: bool = True) -> Volume:
    """Air-like -800 HU with one 1000 HU voxel at DOT; an axial supine series."""
    hu = np.full((NZ, NY, NX), -800, np.int16)
    if dot:
        hu[DOT] = 1000
    pos = np.c_[np.zeros(NZ), np.zeros(NZ), 100.0 + np.arange(NZ) * SPACING[0]]
    return Volume(hu=hu, spacing=SPACING, positions=pos, description="phantom")


def sphere_polygons(centre=(20, 32, 40), radius_mm=6.0):
    """Circle outlines (row, col vertices) on the axial slices of a sphere, as readers
    draw them: the sphere's cut on each slice it crosses."""
    from lungviewer.ui.slice_view import Polygon

    zc, yc, xc = centre
    out = []
    for k in range(NZ):
        d = (k - zc) * SPACING[0]
        if abs(d) >= radius_mm:
            continue
        r_px = np.sqrt(radius_mm ** 2 - d ** 2) / SPACING[1]
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.c_[yc + r_px * np.sin(t), xc + r_px * np.cos(t)]
        out.append(Polygon(k, pts, "#ff5a5a", group="reader A", info="reader A"))
    return out


# -- pure helpers ----------------------------------------------------------------------------
def test_plane_orientation_letters_and_row_direction():
    axial_supine = np.array([1.0, 0, 0, 0, 1, 0])
    labels, up = planes.plane_orientation(axial_supine, "axial")
    assert labels == {"left": "R", "right": "L", "top": "A", "bottom": "P"} and not up
    labels, up = planes.plane_orientation(axial_supine, "coronal")
    assert labels == {"left": "R", "right": "L", "top": "H", "bottom": "F"} and up
    labels, up = planes.plane_orientation(axial_supine, "sagittal")
    assert labels == {"left": "A", "right": "P", "top": "H", "bottom": "F"} and up
    # slices stored head → feet (normal towards the feet): still head up on screen
    flipped = np.array([1.0, 0, 0, 0, -1, 0])
    labels, up = planes.plane_orientation(flipped, "coronal")
    assert labels["top"] == "H" and labels["bottom"] == "F" and not up
    # the axial letters are the volume's own
    vol = phantom()
    assert planes.plane_orientation(vol.orientation, "axial")[0] == vol.orientation_labels()


def test_parse_slab():
    assert planes.parse_slab("none") == (None, 10.0)
    assert planes.parse_slab("mip") == ("mip", 10.0)
    assert planes.parse_slab("MinIP:5") == ("minip", 5.0)
    assert planes.parse_slab("avg:20.5") == ("avg", 20.5)
    for bad, word in (("max:10", "unknown slab mode"), ("mip:ten", "not a number"),
                      ("mip:-3", "positive")):
        with pytest.raises(ValueError, match=word):
            planes.parse_slab(bad)


def test_slab_cache_reuses_images_and_forgets_other_volumes():
    vol = phantom().hu
    cache = planes.SlabCache(max_items=2)
    a = cache.get(vol, "axial", 20, 10, "mip", SPACING)
    np.testing.assert_array_equal(a, planes.slab_image(vol, "axial", 20, 10, "mip", SPACING))
    assert cache.get(vol, "axial", 20, 10, "mip", SPACING) is a and cache.hits == 1
    cache.get(vol, "axial", 21, 10, "mip", SPACING)
    cache.get(vol, "axial", 22, 10, "mip", SPACING)  # evicts index 20 (least recent)
    assert cache.get(vol, "axial", 20, 10, "mip", SPACING) is not a
    other = vol.copy()
    b = cache.get(other, "axial", 21, 10, "mip", SPACING)
    assert cache.misses == 5 and not b.flags.writeable


def test_outline_cut_of_a_sphere_drawn_as_axial_circles():
    polys = sphere_polygons()
    crops = [(p.slice_index, *planes.rasterise_outline(p.points_rc, (NY, NX)), True)
             for p in polys]
    # coronal cut through the centre: rows = slices 18..22 (|d| < 6 mm), cols = 40 ± 8.6 px
    lines = planes.cut_outlines(crops, "coronal", 32)
    assert len(lines) == 1
    rows, cols = lines[0][:, 0], lines[0][:, 1]
    assert rows.min() == pytest.approx(17.5) and rows.max() == pytest.approx(22.5)
    assert cols.min() == pytest.approx(40 - 6 / 0.7, abs=1.0)
    assert cols.max() == pytest.approx(40 + 6 / 0.7, abs=1.0)
    # sagittal cut off-centre is narrower; outside the sphere there is nothing
    side = planes.cut_outlines(crops, "sagittal", 46)[0]
    assert np.ptp(side[:, 1]) < np.ptp(lines[0][:, 1])
    assert planes.cut_outlines(crops, "coronal", 50) == []
    # an exclusion outline on the middle slice cuts a hole in it
    hole = planes.rasterise_outline(np.array([[32, 38], [32, 42], [34, 42], [34, 38]]),
                                    (NY, NX))
    with_hole = crops + [(20, *hole, False)]
    assert len(planes.cut_outlines(with_hole, "coronal", 33)) >= 2


# -- the views ---------------------------------------------------------------------------------
@pytest.fixture
def mpr(qtbot):
    from lungviewer.ui.mpr import MprWidget

    w = MprWidget()
    qtbot.addWidget(w)
    w.resize(1000, 800)
    w.show()
    w.set_volume(phantom())
    w.set_layout("2x2")
    qtbot.waitExposed(w)
    for v in w.views:
        v.reset_zoom()
    return w


def _screen_size(view, h_px: int, w_px: int) -> tuple[float, float]:
    """On-screen (height, width) in device pixels of an image of h_px × w_px pixels."""
    a = view.view.mapViewToScene(QPointF(0, 0))
    b = view.view.mapViewToScene(QPointF(w_px, h_px))
    return abs(b.y() - a.y()), abs(b.x() - a.x())


@pytest.mark.gui
def test_each_plane_has_its_image_aspect_in_mm_and_letters(mpr):
    ax, co, sa = mpr.axial, mpr.coronal, mpr.sagittal
    assert ax.image.image.shape == (NY, NX) and co.image.image.shape == (NZ, NX)
    assert sa.image.image.shape == (NZ, NY)
    assert co.pixel_mm == (2.5, 0.7) and sa.pixel_mm == (2.5, 0.7)
    # one mm is as long on screen across as down: the coronal image is nz*dz tall and
    # nx*dx wide in the same screen units per mm
    h, w = _screen_size(co, NZ, NX)
    assert h / w == pytest.approx((NZ * 2.5) / (NX * 0.7), rel=0.01)
    h, w = _screen_size(sa, NZ, NY)
    assert h / w == pytest.approx((NZ * 2.5) / (NY * 0.7), rel=0.01)
    h, w = _screen_size(ax, NY, NX)
    assert h / w == pytest.approx(NY / NX, rel=0.01)
    # head up: the last slice is drawn above the first in the coronal view
    top = co.view.mapViewToScene(QPointF(0, NZ)).y()
    bottom = co.view.mapViewToScene(QPointF(0, 0)).y()
    assert top < bottom
    assert {k: co._labels[k].text() for k in ("top", "bottom", "left", "right")} == {
        "top": "H", "bottom": "F", "left": "R", "right": "L"}
    assert (sa._labels["left"].text(), sa._labels["right"].text()) == ("A", "P")
    assert "Coronal 33 / 64" in co._labels["tl"].text()


@pytest.mark.gui
def test_click_in_coronal_moves_the_other_views_and_the_crosshair(qtbot, mpr):
    co = mpr.coronal
    z, x = 12, 55
    pos = co.view.mapViewToScene(QPointF(x + 0.5, z + 0.5))
    qtbot.mouseClick(co.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=co.graphics.mapFromScene(pos))
    y = co.index
    assert mpr.point == (z, y, x)
    assert mpr.axial.index == z and mpr.sagittal.index == x and mpr.overview.index == z
    vline, hline = mpr.axial.cross_lines
    assert vline.isVisible() and (vline.value(), hline.value()) == (x + 0.5, y + 0.5)
    vline, hline = mpr.sagittal.cross_lines
    assert (vline.value(), hline.value()) == (y + 0.5, z + 0.5)  # sagittal cols = y
    # scrolling the axial view moves the point along z: the coronal crosshair follows
    mpr.axial.step(3)
    assert mpr.point == (z + 3, y, x) and mpr.coronal.cross_lines[1].value() == z + 3.5
    qtbot.waitUntil(lambda: mpr.overview.index == z + 3, timeout=2000)  # follows shortly
    # the hover readout names the voxel of the other planes
    text = mpr.sagittal.hover_text(z + 0.5, y + 0.5)
    assert f"voxel (image {z + 1}, row {y}, col {x})" in text and "HU -800" in text
    # the crosshair hides in the single-view layout
    mpr.set_layout("axial")
    assert not mpr.axial.cross_lines[0].isVisible()


@pytest.mark.gui
def test_layouts_switch_by_key_and_are_remembered(qtbot, mpr):
    from lungviewer.ui.mpr import MprWidget

    assert [v.isVisible() for v in mpr.views] == [True] * 4
    mpr.set_layout("axial")
    assert [v.isVisible() for v in mpr.views] == [True, False, False, False]
    qtbot.keyClick(mpr, Qt.Key.Key_L)
    assert mpr.layout_name == "1x3"
    assert [v.isVisible() for v in mpr.views] == [True, True, True, False]
    assert settings.get("view/layout") == "1x3"
    assert mpr.layout_actions["1x3"].isChecked()
    again = MprWidget()
    qtbot.addWidget(again)
    assert again.layout_name == "1x3"
    with pytest.raises(ValueError, match="unknown layout"):
        mpr.set_layout("3x3")


@pytest.mark.gui
def test_mip_slab_shows_the_dot_only_within_the_slab(qtbot, mpr):
    ax, co = mpr.axial, mpr.coronal
    mpr.set_point(*DOT)
    assert ax.image.image.max() == 1000
    ax.set_slice(DOT[0] + 2)
    assert ax.image.image.max() == -800  # single image: the dot is on slice 20 only
    qtbot.keyClick(mpr, Qt.Key.Key_S)  # slab on: MIP 10 mm (2.5 mm slices: ±2 images)
    assert ax.slab == ("mip", 10.0) and co.slab == ("mip", 10.0)
    assert mpr.overview.slab == ("mip", 20.0)  # the overview is at least 20 mm thick
    # the text says the thickness shown, one figure (was "MIP slab 10 mm (5 images, 12.5 mm)")
    assert "MIP slab 12.5 mm (5 images × 2.5 mm)" in ax._labels["tl"].text()
    for k, seen in ((DOT[0] - 2, True), (DOT[0] + 2, True), (DOT[0] + 3, False),
                    (DOT[0] - 3, False)):
        ax.set_slice(k)
        assert (ax.image.image.max() == 1000) == seen, k
    ax.set_slice(DOT[0] + 2)
    r, c = DOT[1], DOT[2]
    assert ax.image.image[r, c] == 1000 and ax.image.image[r, c + 1] == -800
    # coronal: 0.7 mm rows, 10 mm slab = 15 images (±7 rows)
    for y, seen in ((DOT[1] + 7, True), (DOT[1] - 7, True), (DOT[1] + 8, False)):
        co.set_slice(y)
        assert (co.image.image.max() == 1000) == seen, y
    # Shift+S: MinIP hides the dot, average dilutes it; ] makes the slab thicker
    co.set_slice(DOT[1])
    qtbot.keyClick(mpr, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    assert mpr.slab_mode == "minip" and co.image.image.max() == -800
    qtbot.keyClick(mpr, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    assert mpr.slab_mode == "avg"
    assert co.image.image[DOT[0], DOT[2]] == pytest.approx(-800 + 1800 / 15, abs=0.01)
    qtbot.keyClick(mpr, Qt.Key.Key_BracketRight)
    assert mpr.slab_mm == 12.0 and "Average slab 11.9 mm (17 images × 0.7 mm)" in co._labels["tl"].text()
    assert settings.get("view/slab_mm", None, float) == 12.0
    mpr.set_slab("mip", 100)
    assert mpr.slab_mm == 40.0  # clamped to 2–40 mm
    qtbot.keyClick(mpr, Qt.Key.Key_S)
    assert ax.slab is None and "slab" not in ax._labels["tl"].text()
    assert mpr.overview.slab == ("mip", 40.0)  # the overview always shows a slab


@pytest.mark.gui
def test_mask_outlines_and_marks_show_on_every_plane(mpr):
    mask = np.zeros((NZ, NY, NX), bool)
    mask[10:30, 20:50, 15:60] = True
    mpr.set_mask(mask)
    mpr.set_mask_fill(True)  # the fill (an outline only by default)
    mpr.set_polygons(sphere_polygons(), [])
    mpr.set_marks([(20, 32, 40, 10.0, "proposed"), (5, 10, 10, 4.0, "accepted")])
    mpr.set_point(20, 32, 40)
    for v in mpr.views:
        alpha = v.mask_item.image[..., 3]
        np.testing.assert_array_equal(alpha > 0, planes.plane_image(mask, v.plane, v.index))
        curves = [it for it in v._overlay_items if hasattr(it, "getData")]
        assert len(curves) == 1, v.plane
        circles = v.mark_circles()
        assert len(circles) == 1 and circles[0][4].status == "proposed"
        _r, _c, rr, rc, _ = circles[0]
        row_mm, col_mm = v.pixel_mm
        assert rr * row_mm == pytest.approx(7.0) and rc * col_mm == pytest.approx(7.0)
    # the coronal outline spans the slices the readers outlined (18..22) at the centre
    _x, y = mpr.coronal._overlay_items[0].getData()
    assert y.min() == pytest.approx(18.0) and y.max() == pytest.approx(23.0)  # +0.5 shift
    # a finding's circle shrinks away from its centre and vanishes beyond its radius
    mpr.coronal.set_slice(32 + 5)  # 3.5 mm away
    (_, _, rr, _, _), = mpr.coronal.mark_circles()
    assert rr * 2.5 == pytest.approx(np.sqrt(25 - 3.5 ** 2) + 2.0)
    mpr.coronal.set_slice(32 + 10)  # 7 mm: outside the finding and the outlines
    assert mpr.coronal.mark_circles() == []
    assert [it for it in mpr.coronal._overlay_items if hasattr(it, "getData")] == []
    # a hidden reader group disappears from every plane
    mpr.set_group_visible("reader A", False)
    assert not any(hasattr(it, "getData") for v in mpr.views for it in v._overlay_items)


@pytest.mark.gui
def test_window_is_linked_and_cine_plays_at_the_remembered_rate(qtbot, mpr):
    mpr.axial.set_window(40, 400)
    assert all((v.level, v.width) == (40, 400) for v in mpr.views)
    mpr.set_cine_fps(30)
    assert settings.get("cine/fps", None, int) == 30
    mpr._activate(mpr.sagittal)
    assert mpr.sagittal.highlighted and not mpr.axial.highlighted  # framed: keys act here
    start = mpr.sagittal.index
    qtbot.keyClick(mpr, Qt.Key.Key_P)
    assert mpr.playing
    qtbot.waitUntil(lambda: mpr.sagittal.index >= start + 3, timeout=3000)
    qtbot.keyClick(mpr, Qt.Key.Key_P)
    assert not mpr.playing
    k = mpr.sagittal.index
    qtbot.wait(150)
    assert mpr.sagittal.index == k
    # it wraps at the last image
    mpr.sagittal.set_slice(NX - 1)
    mpr._cine_step()
    assert mpr.sagittal.index == 0
    mpr.set_layout("axial")  # one view: no frame, the keys act on the axial view
    assert mpr.active is mpr.axial and not any(v.highlighted for v in mpr.views)


@pytest.mark.gui
def test_box_tool_is_axial_only(mpr):
    mpr.set_box_mode(True)
    assert mpr.axial.box_mode and not mpr.coronal.box_mode
    mpr.coronal.set_box(10, 5, 5, 20, 20)
    assert mpr.coronal.box is None
    mpr.set_box(20, 5, 5, 20, 20)
    assert mpr.box == (20, 5, 5, 20, 20)


def test_slab_image_equals_the_projection_of_the_block_on_every_plane():
    rng = np.random.default_rng(3)
    vol = rng.integers(-1000, 1000, (NZ, NY, NX)).astype(np.int16)
    for plane, index in (("axial", 20), ("coronal", 1), ("sagittal", NX - 2)):
        axis = planes.AXIS[plane]
        lo, hi = planes.slab_range(vol.shape[axis], index, 10.0, SPACING[axis])
        block = np.take(vol, np.arange(lo, hi), axis=axis)
        for mode, want in (("mip", block.max(axis)), ("minip", block.min(axis)),
                           ("avg", block.mean(axis))):
            got = planes.slab_image(vol, plane, index, 10.0, mode, SPACING)
            assert got.shape == planes.plane_image(vol, plane, index).shape
            np.testing.assert_allclose(got, want, atol=1e-3)
            assert got.dtype == (np.float32 if mode == "avg" else np.int16)


@pytest.mark.gui
def test_view_command_options_parse_and_apply(mpr):
    import argparse

    from lungviewer.commands import view

    parser = argparse.ArgumentParser()
    view.add_parser(parser.add_subparsers())
    args = parser.parse_args(["view", "x", "--layout", "1x3", "--slab", "minip:6"])
    assert (args.layout, args.slab) == ("1x3", ("minip", 6.0))
    with pytest.raises(SystemExit):
        parser.parse_args(["view", "x", "--slab", "mip:80"])
    mpr.apply_options(args.layout, args.slab)
    assert mpr.layout_name == "1x3" and mpr.coronal.slab == ("minip", 6.0)
    mpr.apply_options(None, view.parse_slab_option("none"))
    assert mpr.axial.slab is None and mpr.layout_name == "1x3"


def test_mask_cut_outlines_of_a_box_on_each_plane():
    crop = np.ones((3, 4, 5), bool)  # z, y, x
    offset = (10, 20, 30)
    (ax,) = planes.mask_cut_outlines(crop, offset, "axial", 11)
    assert ax[:, 0].min() == pytest.approx(19.5) and ax[:, 0].max() == pytest.approx(23.5)
    assert ax[:, 1].min() == pytest.approx(29.5) and ax[:, 1].max() == pytest.approx(34.5)
    (co,) = planes.mask_cut_outlines(crop, offset, "coronal", 23)  # rows z, cols x
    assert (co[:, 0].min(), co[:, 0].max()) == (pytest.approx(9.5), pytest.approx(12.5))
    (sa,) = planes.mask_cut_outlines(crop, offset, "sagittal", 34)  # rows z, cols y
    assert (sa[:, 1].min(), sa[:, 1].max()) == (pytest.approx(19.5), pytest.approx(23.5))
    assert planes.mask_cut_outlines(crop, offset, "axial", 13) == []
    assert planes.mask_cut_outlines(crop, offset, "sagittal", 29) == []


@pytest.mark.gui
def test_segmented_nodule_is_outlined_in_every_view(mpr):
    crop = np.zeros((5, 9, 9), bool)
    crop[1:4, 2:7, 2:7] = True
    mpr.set_segmentations([((18, 28, 36), crop, "#00ffd0")])
    mpr.set_point(20, 32, 40)
    for v in mpr.views:
        curves = [it for it in v._overlay_items if hasattr(it, "getData")]
        assert len(curves) == 1, v.plane
        assert curves[0].opts["pen"].color().name() == "#00ffd0"
    mpr.set_point(24, 32, 40)  # past the object's last slice (18 + 3)
    assert not any(hasattr(it, "getData") for it in mpr.axial._overlay_items)
    assert any(hasattr(it, "getData") for it in mpr.coronal._overlay_items)


def test_fill_polygon_matches_scikit_image():
    from skimage.draw import polygon

    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(3, 40))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(3, 25, n)
        pts = np.c_[30.3 + r * np.sin(t), 30.2 + r * np.cos(t)]
        want = np.zeros((60, 60), bool)
        want[polygon(pts[:, 0], pts[:, 1], (60, 60))] = True
        np.testing.assert_array_equal(planes.fill_polygon(pts, (60, 60)), want)
    assert not planes.fill_polygon(np.array([[1.0, 1.0], [5.0, 5.0]]), (8, 8)).any()


@pytest.mark.gui
def test_hidden_views_draw_their_overlays_when_shown(mpr):
    mpr.set_layout("axial")
    mpr.set_point(20, 32, 40)
    mpr.set_polygons(sphere_polygons(), [])
    assert mpr.coronal.deferred and mpr.coronal._overlay_items == []
    assert mpr.outline_store == {}  # nothing rasterised for views nobody sees
    mpr.set_layout("1x3")
    assert not mpr.coronal.deferred
    assert len([it for it in mpr.coronal._overlay_items if hasattr(it, "getData")]) == 1
    assert len([it for it in mpr.sagittal._overlay_items if hasattr(it, "getData")]) == 1
    assert len(mpr.outline_store) == 1  # rasterised once for both views


@pytest.mark.gui
def test_main_window_keys_reach_the_views(qtbot):
    from conftest import shown_window
    from lungviewer.ui.mpr import KEYS

    from PySide6.QtWidgets import QApplication

    win = shown_window(qtbot)
    win.windowHandle().requestActivate()  # shortcuts act in the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    win.mpr.set_volume(phantom())
    start = win.mpr.layout_name
    qtbot.keyClick(win, Qt.Key.Key_L)
    assert win.mpr.layout_name != start
    qtbot.keyClick(win, Qt.Key.Key_S)
    assert win.slice_view.slab == ("mip", 10.0)
    win.mpr._activate(win.mpr.coronal)
    k = win.mpr.coronal.index
    qtbot.keyClick(win, Qt.Key.Key_Up)  # arrows step the view last used
    assert win.mpr.coronal.index == k + 1
    texts = [a.text() for a in win.menuBar().actions()]
    assert "&View" in texts and "thick slab on/off" in KEYS
    win.close()


def test_plane_image_is_a_view_of_the_volume():
    vol = phantom().hu
    for plane, index in (("axial", 3), ("coronal", 5), ("sagittal", 7)):
        img = planes.plane_image(vol, plane, index)
        assert np.shares_memory(img, vol)
        z, y, x = planes.to_volume(plane, index, 2, 4)
        assert img[2, 4] == vol[int(z), int(y), int(x)]
    with pytest.raises(IndexError, match="outside"):
        planes.plane_image(vol, "coronal", NY)
