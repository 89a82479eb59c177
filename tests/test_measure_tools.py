"""Measurement tools in the views (pytest-qt, offscreen): drawing with the mouse in any
plane, lengths in mm with anisotropic voxels, ROI statistics, moving, deleting, the list
and its signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from lungviewer.reading.measurements import Measurement
from lungviewer.study.volume import Volume
from lungviewer.ui.measure_tools import short_axis_for

pytestmark = pytest.mark.gui

NZ, NY, NX = 40, 64, 80
SPACING = (2.5, 0.7, 0.7)


def disk_phantom() -> Volume:
    """-800 HU with a 50 HU cylinder (radius 12 px around row 32, col 40) on slices 10–29
    and a left-to-right HU ramp in the rows 0-9 (HU = col)."""
    hu = np.full((NZ, NY, NX), -800, np.int16)
    rr, cc = np.mgrid[:NY, :NX]
    disk = (rr - 32) ** 2 + (cc - 40) ** 2 <= 12 ** 2
    hu[10:30][:, disk] = 50
    hu[:, :10, :] = np.arange(NX, dtype=np.int16)[None, None, :]
    pos = np.c_[np.zeros(NZ), np.zeros(NZ), np.arange(NZ) * SPACING[0]]
    return Volume(hu=hu, spacing=SPACING, positions=pos)


class Drag:
    """The parts of a pyqtgraph MouseDragEvent the views use: a left drag between two
    view points (x = col, y = row)."""

    def __init__(self, view, p0, p1, start=False, finish=False):
        self._v, self._p0, self._p1, self._s, self._f = view, p0, p1, start, finish

    def button(self):
        return Qt.MouseButton.LeftButton

    def buttonDownScenePos(self):
        return self._v.view.mapViewToScene(QPointF(*self._p0))

    def scenePos(self):
        return self._v.view.mapViewToScene(QPointF(*self._p1))

    def isStart(self):
        return self._s

    def isFinish(self):
        return self._f

    def accept(self):
        pass


def drag(view, rc0, rc1):
    """Drag with the left button from pixel (row, col) rc0 to rc1 (pixel centres)."""
    p0 = (rc0[1] + 0.5, rc0[0] + 0.5)
    p1 = (rc1[1] + 0.5, rc1[0] + 0.5)
    mid = ((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2)
    view.view.mouseDragEvent(Drag(view, p0, p0, start=True))
    view.view.mouseDragEvent(Drag(view, p0, mid))
    view.view.mouseDragEvent(Drag(view, p0, p1, finish=True))


@pytest.fixture
def mpr(qtbot):
    from lungviewer.ui.mpr import MprWidget

    w = MprWidget()
    qtbot.addWidget(w)
    w.resize(1000, 800)
    w.show()
    w.set_volume(disk_phantom())
    w.set_layout("2x2")
    qtbot.waitExposed(w)
    return w


def test_short_axis_is_perpendicular_in_mm():
    p0, p1 = (10.0, 10.0), (14.0, 30.0)
    px = (2.5, 0.7)
    q0, q1 = short_axis_for(p0, p1, px, ratio=0.5)
    a = np.subtract(p1, p0) * px
    b = np.subtract(q1, q0) * px
    assert abs(np.dot(a, b)) < 1e-9
    assert np.linalg.norm(b) == pytest.approx(0.5 * np.linalg.norm(a))
    mid = (np.add(q0, q1) / 2)
    np.testing.assert_allclose(mid, np.add(p0, p1) / 2)


def test_ruler_in_a_coronal_view_measures_mm_with_anisotropic_voxels(qtbot, mpr):
    co = mpr.coronal
    changed = []
    mpr.measure_panel.measurementsChanged.connect(changed.append)
    qtbot.keyClick(mpr, Qt.Key.Key_D)
    assert mpr.tool == "ruler" and co.tool_drag is not None
    drag(co, (10, 20), (18, 50))  # 8 slices (2.5 mm) down, 30 pixels (0.7 mm) across
    (m,) = mpr.measure_panel.measurements()
    assert (m.kind, m.plane, m.index) == ("ruler", "coronal", co.index)
    np.testing.assert_allclose(m.points, [(10, 20), (18, 50)], atol=1e-6)
    want = math.hypot(8 * 2.5, 30 * 0.7)
    res = mpr.measure_panel.result(m)
    assert res.length_mm == pytest.approx(want)
    assert len(changed) == 1 and changed[0][0].id == m.id  # once, when the drag finished
    item = mpr.measure_panel.list.item(0).text()
    assert f"{want:.1f} mm" in item and "coronal" in item
    # drawn in the coronal view only, with its figure beside it
    layer = mpr.layers[1]
    assert list(layer.drawn) == [m.id] and f"{want:.1f} mm" in layer.drawn[m.id].label.toPlainText()
    assert all(not lay.drawn for i, lay in enumerate(mpr.layers) if i != 1)
    # a click without dragging makes no measurement
    drag(co, (5, 5), (5, 5))
    assert len(mpr.measure_panel.measurements()) == 1
    # Esc leaves the tool: left drags pan again
    qtbot.keyClick(mpr, Qt.Key.Key_Escape)
    assert mpr.tool is None and co.tool_drag is None


def test_ellipse_and_rectangle_statistics(qtbot, mpr):
    ax = mpr.axial
    ax.set_slice(20)
    mpr.set_tool("ellipse")
    drag(ax, (26, 34), (38, 46))  # inside the 50 HU disk
    mpr.set_tool("rectangle")
    drag(ax, (2, 10), (6, 20))  # on the ramp: HU = col
    ell, rect = mpr.measure_panel.measurements()
    r = mpr.measure_panel.result(ell)
    assert (r.hu_mean, r.hu_sd, r.hu_min, r.hu_max) == (50, 0, 50, 50)
    assert r.area_mm2 == pytest.approx(math.pi * (6 * 0.7) * (6 * 0.7))
    r = mpr.measure_panel.result(rect)
    assert (r.hu_min, r.hu_max, r.hu_mean) == (10, 20, pytest.approx(15))
    assert r.n_pixels == 5 * 11
    assert r.area_mm2 == pytest.approx((4 * 0.7) * (10 * 0.7))
    assert "HU 50 ± 0" in mpr.measure_panel.list.item(0).text()


def test_move_edit_delete_and_list_updates(qtbot, mpr):
    panel, ax = mpr.measure_panel, mpr.axial
    ax.set_slice(20)
    mpr.set_tool("ruler")
    drag(ax, (20, 20), (20, 40))
    (m,) = panel.measurements()
    layer = mpr.layers[0]
    changed = []
    panel.measurementsChanged.connect(changed.append)
    layer.translate(m.id, 5, -3)  # as dragging the line does
    (moved,) = changed[-1]
    np.testing.assert_allclose(moved.points, [(25, 17), (25, 37)], atol=1e-6)
    assert moved.id == m.id
    layer.move_handle(m.id, 0, 1, 25, 47)  # drag the second end
    (edited,) = panel.measurements()
    np.testing.assert_allclose(edited.points, [(25, 17), (25, 47)], atol=1e-6)
    assert panel.result(edited).length_mm == pytest.approx(30 * 0.7)
    assert "21.0 mm" in panel.list.item(0).text()
    # another image: not drawn there; back again: drawn at the edited place
    ax.set_slice(21)
    assert layer.drawn == {}
    ax.set_slice(20)
    np.testing.assert_allclose(layer.points_of(layer.drawn[m.id]), edited.points, atol=1e-6)
    # a second one, then Del deletes the selected one (the newest)
    drag(ax, (40, 10), (50, 10))
    assert panel.list.count() == 2 and panel.list.currentRow() == 1
    qtbot.keyClick(mpr, Qt.Key.Key_Delete)
    assert [x.id for x in panel.measurements()] == [m.id] and panel.list.count() == 1
    assert [x.id for x in changed[-1]] == [m.id]
    # selecting in the list, then the Delete button
    panel.list.setCurrentRow(0)
    assert panel.selected_id == m.id
    panel.delete_button.click()
    assert panel.measurements() == [] and changed[-1] == [] and layer.drawn == {}


def test_bidirectional_and_set_measurements(qtbot, mpr):
    panel, sa = mpr.measure_panel, mpr.sagittal
    mpr.set_tool("bidirectional")
    drag(sa, (15, 20), (15, 44))
    (m,) = panel.measurements()
    res = panel.result(m)
    assert res.long_mm == pytest.approx(24 * 0.7)
    assert res.short_mm == pytest.approx(12 * 0.7)
    assert len(mpr.layers[2].drawn[m.id].rois) == 2
    # a saved list comes back without a 'changed' signal and is drawn where it lies;
    # choosing it in the list shows its image
    changed = []
    panel.measurementsChanged.connect(changed.append)
    saved = [Measurement("ruler", "coronal", 5, [(1.0, 1.0), (1.0, 11.0)], label="saved"),
             Measurement("ruler", "axial", 999, [(1.0, 1.0), (2.0, 2.0)])]  # not this series
    panel.set_measurements(saved)
    assert changed == [] and [x.label for x in panel.measurements()] == ["saved"]
    assert mpr.layers[2].drawn == {}
    panel.list.itemClicked.emit(panel.list.item(0))
    assert mpr.coronal.index == 5 and list(mpr.layers[1].drawn) == [saved[0].id]
    assert "saved — coronal image 6: 7.0 mm" in panel.list.item(0).text()
    # a new study empties the list
    mpr.set_volume(disk_phantom())
    assert panel.measurements() == [] and panel.list.count() == 0


def test_a_real_mouse_drag_draws_a_rectangle_and_a_click_selects_it(qtbot, mpr):
    from PySide6.QtCore import QEvent, QPoint
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    ax = mpr.axial
    vp = ax.graphics.viewport()

    def at(r, c):
        return ax.graphics.mapFromScene(ax.view.mapViewToScene(QPointF(c + 0.5, r + 0.5)))

    def send(kind, p, button, buttons):
        QApplication.sendEvent(vp, QMouseEvent(kind, QPointF(p), QPointF(vp.mapToGlobal(p)),
                                               button, buttons, Qt.KeyboardModifier.NoModifier))

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    qtbot.keyClick(mpr, Qt.Key.Key_G)
    p0, p1 = at(20, 20), at(40, 50)
    send(QEvent.Type.MouseButtonPress, p0, left, left)
    for f in (0.3, 0.6, 1.0):  # pyqtgraph drops moves that come faster than a frame
        qtbot.wait(40)
        send(QEvent.Type.MouseMove, QPoint(int(p0.x() + f * (p1.x() - p0.x())),
                                           int(p0.y() + f * (p1.y() - p0.y()))), none, left)
    send(QEvent.Type.MouseButtonRelease, p1, left, none)
    (m,) = mpr.measure_panel.measurements()
    assert m.kind == "rectangle" and m.plane == "axial"
    np.testing.assert_allclose(m.points, [(20, 20), (40, 50)], atol=0.6)  # screen pixels
    # clicking the shape (tool off) selects it
    mpr.set_tool(None)
    mpr.measure_panel.select("")
    roi = mpr.layers[0].drawn[m.id].rois[0]
    roi.sigClicked.emit(roi, None)
    assert mpr.measure_panel.selected_id == m.id
    assert mpr.measure_panel.list.currentRow() == 0


def test_measurements_are_saved_with_the_study_and_come_back(qtbot, tmp_path):
    """In the main window: a ruler drawn in the coronal view is written to the study's
    reading (user data folder, not the DICOM folder) and is listed again when the study is
    reopened in a new window."""
    from conftest import shown_window
    from dicomgen import write_ct_series

    write_ct_series(tmp_path / "ct", n_slices=12, rows=48, cols=48, spacing=(2.5, 0.7, 0.7))
    before = sorted(p.name for p in (tmp_path / "ct").iterdir())
    win = shown_window(qtbot)
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        win.open_study(tmp_path / "ct")
    qtbot.waitUntil(lambda: not win.busy, timeout=60000)
    win.mpr.set_layout("1x3")
    assert win.slice_view is win.mpr.axial
    win.mpr.tool_actions["ruler"].trigger()
    assert not win.act_box.isChecked()
    co = win.mpr.coronal
    drag(co, (2, 5), (8, 30))
    (m,) = win.mpr.measure_panel.measurements()
    assert win.session.reading.measurements[0].to_dict() == m.to_dict()
    win.close()
    assert sorted(p.name for p in (tmp_path / "ct").iterdir()) == before
    again = shown_window(qtbot)
    with qtbot.waitSignal(again.studyLoaded, timeout=60000):
        again.open_study(tmp_path / "ct")
    qtbot.waitUntil(lambda: not again.busy, timeout=60000)
    (back,) = again.mpr.measure_panel.measurements()
    assert back.to_dict() == m.to_dict()
    assert f"{math.hypot(6 * 2.5, 25 * 0.7):.1f} mm" in again.mpr.measure_panel.list.item(0).text()
    again.close()


def test_shapes_are_reused_across_images_at_the_right_place(mpr):
    panel, ax, layer = mpr.measure_panel, mpr.axial, mpr.layers[0]
    a = Measurement("ellipse", "axial", 20, [(10.0, 10.0), (20.0, 30.0)])
    b = Measurement("ellipse", "axial", 21, [(30.0, 35.0), (44.0, 41.0)])
    panel.set_measurements([a, b])
    ax.set_slice(20)
    roi = layer.drawn[a.id].rois[0]
    np.testing.assert_allclose(layer.points_of(layer.drawn[a.id]), a.points, atol=1e-6)
    ax.set_slice(21)
    assert list(layer.drawn) == [b.id] and layer.drawn[b.id].rois[0] is roi  # reused
    np.testing.assert_allclose(layer.points_of(layer.drawn[b.id]), b.points, atol=1e-6)
    assert "area" in layer.drawn[b.id].label.toPlainText() and roi.isVisible()
    ax.set_slice(22)
    assert layer.drawn == {} and not roi.isVisible()
    # a drag of the reused shape edits the measurement now shown, not the first one
    ax.set_slice(21)
    layer.translate(b.id, 2, 0)
    got = {m.id: m for m in panel.measurements()}
    np.testing.assert_allclose(got[b.id].points, [(32, 35), (46, 41)], atol=1e-6)
    assert got[a.id].points == a.points
