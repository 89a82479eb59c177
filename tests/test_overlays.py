"""What the viewer draws over the image: the readers' outlines (issue 5) and the lung
parenchyma overlay (issue 6) — pure helpers, then pytest-qt on the LIDC-IDRI-0001 twin."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QCheckBox

from conftest import shown_window
from lungviewer.imaging.overlay import mask_outline, mask_rgba, polygon_hit
from lungviewer.imaging.parenchyma import segment_lungs
from lungviewer.study.annotations import RATING_WORDS
from lungviewer.ui import settings

NODULE_SLICE = 89  # LIDC-IDRI-0001: the nodule spans slices 86-94, four readers


# -- pure helpers ----------------------------------------------------------------------------
def test_mask_outline_is_the_inner_border():
    m = np.zeros((8, 9), bool)
    m[2:6, 3:8] = True
    out = mask_outline(m)
    inner = np.zeros_like(m)
    inner[3:5, 4:7] = True
    np.testing.assert_array_equal(out, m & ~inner)
    full = np.ones((4, 4), bool)  # the image border counts as outside
    assert mask_outline(full).sum() == 12


def test_mask_rgba_fill_and_outline_alpha():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    rgba = mask_rgba(m, (10, 20, 30), 0.4, 0.9)
    assert rgba.dtype == np.uint8 and rgba.shape == (7, 7, 4)
    assert rgba[3, 3].tolist() == [10, 20, 30, 102]
    assert rgba[1, 3].tolist() == [10, 20, 30, 230]
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]


def test_polygon_hit_inside_outside_and_distance():
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)  # (row, col)
    assert polygon_hit(square, 5, 5) == (True, 5.0)
    inside, d = polygon_hit(square, 5, 13)
    assert not inside and d == pytest.approx(3.0)
    inside, d = polygon_hit(square, 13, 14)
    assert not inside and d == pytest.approx(5.0)
    assert polygon_hit(square[:1], 3, 4) == (False, 5.0)
    assert polygon_hit(np.zeros((0, 2)), 1, 1)[0] is False


# -- in the viewer -----------------------------------------------------------------------------
@pytest.fixture
def twin_window(qtbot, twin_0001_dir):
    win = shown_window(qtbot, (1200, 800))
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        win.open_study(twin_0001_dir)
    qtbot.waitUntil(lambda: win.annotations is not None and win.mask is not None,
                    timeout=120000)
    yield win
    win.close()


def _curves(sv):
    """(x, y, colour, dashed) of the outline curves drawn on the current slice."""
    out = []
    for item in sv._overlay_items:
        if hasattr(item, "getData") and hasattr(item, "opts") and "pen" in item.opts:
            x, y = item.getData()
            pen = item.opts["pen"]
            out.append((np.asarray(x), np.asarray(y), pen.color().name(),
                        pen.style() == Qt.PenStyle.DashLine))
    return out


def _reader_rois(win, k):
    return [(m, roi) for m in win.annotations.marks if m.kind == "nodule"
            for roi in m.rois if roi.slice_index == k]


@pytest.mark.gui
def test_each_readers_outline_is_drawn_on_its_slice_at_its_pixels(twin_window):
    from lungviewer.ui.annotations_panel import reader_colour

    win, sv = twin_window, twin_window.slice_view
    sv.set_slice(NODULE_SLICE)
    rois = _reader_rois(win, NODULE_SLICE)
    curves = _curves(sv)
    assert len(rois) >= 4 and len(curves) == len(rois)
    readers = win.annotations.readers
    for m, roi in rois:
        pts = np.asarray(roi.points, float)  # (x = col, y = row), pixel centres
        match = [c for c in curves if len(c[0]) == len(pts) + 1  # closed
                 and np.allclose(c[0][:-1], pts[:, 0] + 0.5)
                 and np.allclose(c[1][:-1], pts[:, 1] + 0.5)]
        assert len(match) == 1, m.reader
        assert match[0][2] == reader_colour(readers, m.reader)
        assert match[0][3] == (not roi.inclusion)
    # the LIDC-IDRI-0001 nodule where the readers outlined it (rows ~340-390, cols ~297-338)
    allx = np.concatenate([c[0] for c in curves])
    ally = np.concatenate([c[1] for c in curves])
    assert 280 < allx.min() and allx.max() < 350 and 330 < ally.min() and ally.max() < 400
    sv.set_slice(20)  # no reader marked anything here
    assert _curves(sv) == []


@pytest.mark.gui
def test_outline_toggles_by_key_reader_and_layer(twin_window):
    from lungviewer.ui.annotations_panel import reader_label

    win, sv = twin_window, twin_window.slice_view
    sv.set_slice(NODULE_SLICE)
    n_all = len(_curves(sv))
    assert win.act_outlines.shortcut().toString() == "A"
    win.act_outlines.trigger()
    assert _curves(sv) == [] and settings.get("overlay/outlines", None, bool) is False
    win.act_outlines.trigger()
    assert len(_curves(sv)) == n_all
    panel = win.annotations_panel
    reader = win.annotations.readers[0]
    boxes = {cb.text(): cb for cb in panel.legend_box.findChildren(QCheckBox)}
    n_reader = sum(1 for m, _ in _reader_rois(win, NODULE_SLICE) if m.reader == reader)
    assert n_reader > 0
    box = boxes["Reader 1"]  # issue 24: readers are named "Reader 1..n" in the study's order
    assert reader_label(win.annotations.readers, reader) == "Reader 1"
    box.setChecked(False)
    assert len(_curves(sv)) == n_all - n_reader
    box.setChecked(True)
    boxes["Nodule outlines (≥ 3 mm)"].setChecked(False)
    assert _curves(sv) == []
    boxes["Nodule outlines (≥ 3 mm)"].setChecked(True)
    assert len(_curves(sv)) == n_all


@pytest.mark.gui
def test_selecting_a_nodule_jumps_to_it_and_brings_it_into_view(twin_window):
    """Issue 24: going to a nodule keeps the zoom and pans only as far as brings it (and its
    extent) on screen, instead of centring it; a nodule already on screen moves nothing."""
    win, sv = twin_window, twin_window.slice_view
    sv.set_slice(0)
    sv.view.scaleBy((0.25, 0.25))  # zoomed in on the middle of the image
    (bx0, bx1), (by0, by1) = sv.view.viewRange()
    tree = win.annotations_panel.tree
    item = tree.topLevelItem(0)
    nod = item.data(0, Qt.ItemDataRole.UserRole)
    cx, cy = nod.centre[2] + 0.5, nod.centre[1] + 0.5
    rx = nod.diameter_mm / 2 / sv.pixel_mm[1]
    ry = nod.diameter_mm / 2 / sv.pixel_mm[0]
    # not all of it on screen before
    assert not (bx0 <= cx - rx and cx + rx <= bx1 and by0 <= cy - ry and cy + ry <= by1)
    tree.itemClicked.emit(item, 0)
    assert sv.index == int(round(nod.centre[0])) and 86 <= sv.index <= 94
    assert win.slider.value() == sv.index
    (x0, x1), (y0, y1) = sv.view.viewRange()
    assert x1 - x0 == pytest.approx(bx1 - bx0, rel=1e-6)  # the zoom was kept
    assert y1 - y0 == pytest.approx(by1 - by0, rel=1e-6) and x1 - x0 < 200
    assert x0 <= cx - rx and cx + rx <= x1 and y0 <= cy - ry and cy + ry <= y1  # all of it
    # only as far as needed: along each axis the view either stayed or moved until the
    # nodule's extent (plus a margin of a few screen pixels) lies at the edge it moved
    # towards, so the nodule is not centred
    moved = False
    for (b0, b1), (v0, v1), c, r in (((bx0, bx1), (x0, x1), cx, rx),
                                     ((by0, by1), (y0, y1), cy, ry)):
        if (v0, v1) == pytest.approx((b0, b1)):
            continue
        moved = True
        gap = (v1 - c - r) if v0 > b0 else (c - r - v0)
        assert 0 <= gap < 0.1 * (v1 - v0)
    assert moved
    assert abs((x0 + x1) / 2 - cx) + abs((y0 + y1) / 2 - cy) > 10
    # selecting it again, already on screen: the view stays where it is
    tree.itemClicked.emit(item, 0)
    assert sv.view.viewRange()[0] == pytest.approx([x0, x1])
    assert sv.view.viewRange()[1] == pytest.approx([y0, y1])


@pytest.mark.gui
def test_hovering_an_outline_shows_that_readers_ratings_in_words(twin_window):
    from lungviewer.ui.annotations_panel import reader_label

    win, sv = twin_window, twin_window.slice_view
    sv.set_slice(NODULE_SLICE)
    marks = _reader_rois(win, NODULE_SLICE)
    _, roi = next((m, r) for m, r in marks if r.inclusion)
    x, y = np.asarray(roi.points[0], float)  # a vertex of one reader's outline
    hit = sv.polygon_at(y + 0.5, x + 0.5)  # that reader's, or a reader's passing nearer
    assert hit is not None
    reader = hit.info.splitlines()[0]  # issue 24: "Reader 1..n" in the study's order
    readers = win.annotations.readers
    c = next(m for m, _ in marks
             if reader_label(readers, m.reader) == reader).characteristics
    assert hit.info.splitlines()[1] == (
        f"malignancy {c.malignancy} – {RATING_WORDS['malignancy'][c.malignancy]}")
    for name in ("subtlety", "spiculation", "texture", "calcification", "margin"):
        value = getattr(c, name)
        assert f"{name} {value} – {RATING_WORDS[name][value]}" in hit.info
    # the status bar and the tooltip follow the cursor
    sv._mouse_moved(sv.view.mapViewToScene(QPointF(x + 0.5, y + 0.5)))
    assert f"{reader}: malignancy {c.malignancy}" in win.hover_label.text()
    assert sv.tooltip_text == hit.info
    sv._mouse_moved(sv.view.mapViewToScene(QPointF(60.5, 60.5)))  # air outside the body
    assert sv.tooltip_text == "" and "malignancy" not in win.hover_label.text()
    win.act_outlines.trigger()  # hidden outlines describe nothing
    assert sv.polygon_at(y + 0.5, x + 0.5) is None


@pytest.mark.gui
def test_parenchyma_overlay_fill_outline_toggle_opacity_and_volume(twin_window):
    win, sv = twin_window, twin_window.slice_view
    sv.set_slice(NODULE_SLICE)
    expected = segment_lungs(win.volume.hu).mask
    np.testing.assert_array_equal(win.mask, expected)
    m = expected[NODULE_SLICE]
    edge = mask_outline(m)
    # issue 24: by default the lung is outlined only (the attenuation stays readable)
    rgba = sv.mask_item.image
    assert rgba.shape == m.shape + (4,)
    assert edge.any() and (m & ~edge).any()
    np.testing.assert_array_equal(rgba[..., 3] > 0, edge)
    assert set(np.unique(rgba[..., 3][edge])) == {round(0.80 * 255)}
    assert not win.mask_opacity.isEnabled()  # nothing to make opaque without the fill
    # Shift+M fills it: fill at the opacity, outline opaque, the choice remembered
    assert win.act_mask_fill.shortcut().toString() == "Shift+M"
    win.act_mask_fill.trigger()
    assert settings.get("overlay/mask_fill", None, bool) is True
    assert win.mask_opacity.isEnabled()
    rgba = sv.mask_item.image
    np.testing.assert_array_equal(rgba[..., 3] > 0, m)
    assert set(np.unique(rgba[..., 3][m & ~edge])) == {round(0.30 * 255)}
    assert set(np.unique(rgba[..., 3][edge])) == {round(0.80 * 255)}
    # opacity slider: fill follows, outline stays opaque, the choice is remembered
    win.mask_opacity.setValue(60)
    assert set(np.unique(sv.mask_item.image[..., 3][m & ~edge])) == {round(0.60 * 255)}
    assert set(np.unique(sv.mask_item.image[..., 3][edge])) == {round(0.80 * 255)}
    assert settings.get("overlay/mask_opacity", None, int) == 60
    # key M and the toolbar/menu check box
    assert win.act_mask.shortcut().toString() == "M" and win.act_mask.isCheckable()
    win.act_mask.trigger()
    assert not sv.mask_item.isVisible() and not win.mask_opacity.isEnabled()
    assert settings.get("overlay/mask", None, bool) is False
    win.act_mask.trigger()
    assert sv.mask_item.isVisible()
    ml = float(expected.sum()) * win.volume.voxel_volume_ml
    assert f"Lung parenchyma (threshold method): {ml:.0f} mL" in win.study_text.toPlainText()
