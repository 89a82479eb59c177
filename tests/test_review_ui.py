"""The review workflow as a radiologist meets it (issue 24 points 1 and 4, issue 22's viewer
side): Y / X record a verdict and stay, N moves on (auto-advance optional); going to a
finding pans only as far as needed and keeps the zoom; undo / redo of verdicts, box moves,
measurements and segmentations; tools are modal (a ruler drag never moves the CAD box);
the sensitivity (false positives per scan) control and its counts."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from conftest import shown_window
from dicomgen import write_ct_series
from lungviewer.reading.model import CadMark
from lungviewer.session import StudySession
from lungviewer.study.volume import Volume
from lungviewer.ui import settings

pytestmark = pytest.mark.gui

THRESHOLDS = {1: 0.9, 2: 0.5, 4: 0.1}


@pytest.fixture
def review(qtbot, tmp_path, monkeypatch):
    """A window on a small series with four CAD marks of known probability (0.95, 0.8,
    0.6 above 2 FP / scan; 0.2 below it) and operating points 0.9 / 0.5 / 0.1."""
    monkeypatch.setattr(StudySession, "threshold",
                        property(lambda s: THRESHOLDS[s.operating_point]))
    write_ct_series(tmp_path, n_slices=12, rows=128, cols=128)
    win = shown_window(qtbot, (1400, 900))
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        win.open_study(tmp_path)
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    marks = [CadMark("", 3, 20, 20, 6.0, 0.95, malignancy=3.2),
             CadMark("", 6, 100, 100, 8.0, 0.8, cls="mass", malignancy=4.1),
             CadMark("", 8, 64, 30, 5.0, 0.6),
             CadMark("", 9, 50, 50, 4.0, 0.2, malignancy=2.0)]
    win.session.reading.set_cad_marks(marks)
    win.session.save_reading()
    panel = win.reading_ctl.panel
    qtbot.waitUntil(lambda: panel.marks.count() == 3, timeout=10000)
    yield win
    win.close()


def test_y_and_x_record_the_verdict_and_stay_n_moves_on(qtbot, review):
    win, ctl = review, review.reading_ctl
    panel, reading = ctl.panel, review.session.reading
    panel.marks.setCurrentRow(0)
    first, second = panel._marks[0], panel._marks[1]
    qtbot.keyClick(win, Qt.Key.Key_Y)
    assert reading.mark(first.id).status == "accepted"
    assert panel.marks.currentRow() == 0  # stays: Y then N cannot skip a finding
    qtbot.keyClick(win, Qt.Key.Key_N)
    assert panel.marks.currentRow() == 1
    qtbot.keyClick(win, Qt.Key.Key_X)
    assert reading.mark(second.id).status == "rejected" and panel.marks.currentRow() == 1
    # the option turns on auto-advance, remembered
    ctl.act_auto_advance.setChecked(True)
    assert settings.get("review/auto_advance", False, bool) is True
    qtbot.keyClick(win, Qt.Key.Key_Y)
    assert panel.marks.currentRow() == 2
    # undo / redo of the verdicts
    third = panel._marks[2]
    assert reading.mark(third.id).status == "unreviewed"  # not yet reviewed; Y was on #2
    win.history.undo()  # the Y on the second (already rejected → accepted)
    assert reading.mark(second.id).status == "rejected"
    win.history.undo()
    assert reading.mark(second.id).status == "unreviewed"
    win.history.redo()
    assert reading.mark(second.id).status == "rejected"


def test_going_to_a_finding_pans_only_as_needed_and_keeps_the_zoom(qtbot, review):
    win = review
    sv = win.slice_view
    panel = win.reading_ctl.panel
    sv.reset_zoom()
    sv.view.scaleBy((0.5, 0.5), center=QPointF(22, 22))  # zoomed ×2 on the first finding
    qtbot.wait(20)
    (x0, x1), (y0, y1) = sv.view.viewRange()
    panel.marks.setCurrentRow(0)  # on screen already: nothing moves
    assert sv.index == 3
    np.testing.assert_allclose(sv.view.viewRange(), [[x0, x1], [y0, y1]], atol=1e-6)
    panel.marks.setCurrentRow(1)  # off screen at (100, 100): panned just enough
    (a0, a1), (b0, b1) = sv.view.viewRange()
    assert sv.index == 6
    assert a1 - a0 == pytest.approx(x1 - x0) and b1 - b0 == pytest.approx(y1 - y0)  # zoom
    assert a0 < 100.5 < a1 and b0 < 100.5 < b1
    assert a1 < 128.5 or b1 < 128.5 or (a0, b0) != (x0, y0)
    assert abs((a0 + a1) / 2 - 100.5) > 5  # not centred: only as far as needed


def test_sensitivity_control_counts_kind_and_malignancy(qtbot, review):
    win, ctl = review, review.reading_ctl
    panel = ctl.panel
    assert panel.sensitivity.currentData() == 2  # the default
    assert "3 shown at 2 FP / scan, 1 below" in panel.title.text()
    texts = [panel.marks.item(i).text() for i in range(panel.marks.count())]
    assert "mass" in texts[1] and "mass" not in texts[0]
    assert "malignancy 3.2" in texts[0] and "malignancy" not in texts[2]
    # 4 FP / scan: the fourth finding shows, with its malignancy level; remembered
    panel.sensitivity.setCurrentIndex(2)
    assert panel.marks.count() == 4 and "4 shown at 4 FP / scan, 0 below" in panel.title.text()
    assert "malignancy 2.0" in panel.marks.item(3).text()
    assert settings.get("cad/operating_point", 0, int) == 4
    assert win.session.operating_point == 4
    # 1 FP / scan: one shown, the views draw only it
    panel.sensitivity.setCurrentIndex(0)
    assert panel.marks.count() == 1 and "1 shown at 1 FP / scan, 3 below" in panel.title.text()
    assert len(win.slice_view._marks) == 1


def test_cad_marks_are_drawn_around_the_lesion_extent(qtbot, review):
    win = review
    reading = win.session.reading
    m = reading.cad_marks[1]  # the "mass" on slice 6
    m.extent = (4, 9, 90, 116, 85, 111)  # 26 × 26 px box, off-centre from (100, 100)
    win.session.save_reading()
    qtbot.waitUntil(lambda: any(mk.extent is not None for mk in win.slice_view._marks),
                    timeout=5000)
    win.slice_view.set_slice(6)
    circles = [c for c in win.slice_view.mark_circles() if c[4].extent is not None]
    assert circles
    r, c, rr, rc, _ = circles[0]
    assert r == pytest.approx(102.5) and c == pytest.approx(97.5)
    assert rr > 13 and rc > 13  # the extent, not the 8 mm sphere
    win.slice_view.set_slice(10)  # beyond the extent: no mark
    assert not [c for c in win.slice_view.mark_circles() if c[4].extent is not None]


def test_undo_redo_box_and_measurements(qtbot, review):
    win = review
    sv = win.slice_view
    win.request_box(6, 40, 40, 60, 60)
    win.request_box(6, 70, 70, 90, 90)
    assert sv.box == (6, 70, 70, 90, 90)
    win.history.undo()
    assert sv.box == (6, 40, 40, 60, 60)
    win.history.redo()
    assert sv.box == (6, 70, 70, 90, 90)
    from lungviewer.reading.measurements import Measurement

    panel = win.mpr.measure_panel
    panel.add(Measurement("ruler", "axial", 6, [(10.0, 10.0), (10.0, 30.0)]))
    assert len(win.session.reading.measurements) == 1
    win.history.undo()
    assert panel.measurements() == [] and win.session.reading.measurements == []
    win.history.redo()
    assert len(panel.measurements()) == 1 and len(win.session.reading.measurements) == 1
    # the keys are Ctrl+Z and Ctrl+Shift+Z
    assert win.history.undo_action.shortcut().toString() == "Ctrl+Z"
    assert win.history.redo_action.shortcut().toString() == "Ctrl+Shift+Z"


def test_undo_a_segmentation(qtbot, review):
    win = review
    reading = win.session.reading
    before = list(reading.nodules)
    from lungviewer.reading.model import NoduleRecord  # noqa: F401 - the record type

    win.reading_ctl._segmented(reading, before)  # as after a segmentation job ends
    reading_after = list(reading.nodules)
    win.history.undo()
    assert reading.nodules == before
    win.history.redo()
    assert reading.nodules == reading_after


def test_a_ruler_drag_inside_the_cad_box_never_moves_it(qtbot):
    from lungviewer.ui.mpr import MprWidget

    hu = np.full((20, 96, 96), -800, np.int16)
    vol = Volume(hu=hu, spacing=(2.0, 0.8, 0.8),
                 positions=np.c_[np.zeros(20), np.zeros(20), np.arange(20) * 2.0])
    w = MprWidget()
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    w.set_volume(vol)
    w.set_layout("axial")
    qtbot.waitExposed(w)
    ax = w.axial
    ax.set_box(ax.index, 30, 30, 70, 70)
    qtbot.wait(50)
    w.set_tool("ruler")
    vp = ax.graphics.viewport()

    def at(r, c):
        return ax.graphics.mapFromScene(ax.view.mapViewToScene(QPointF(c + 0.5, r + 0.5)))

    def send(kind, p, button, buttons):
        QApplication.sendEvent(vp, QMouseEvent(kind, QPointF(p), QPointF(vp.mapToGlobal(p)),
                                               button, buttons, Qt.KeyboardModifier.NoModifier))

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    p0, p1 = at(40, 40), at(55, 60)  # inside the box
    send(QEvent.Type.MouseMove, p0, none, none)
    send(QEvent.Type.MouseButtonPress, p0, left, left)
    for f in (0.3, 0.6, 1.0):
        qtbot.wait(40)
        send(QEvent.Type.MouseMove, QPoint(int(p0.x() + f * (p1.x() - p0.x())),
                                           int(p0.y() + f * (p1.y() - p0.y()))), none, left)
    send(QEvent.Type.MouseButtonRelease, p1, left, none)
    assert ax.box == (ax.index, 30, 30, 70, 70)
    (m,) = w.measure_panel.measurements()
    assert m.kind == "ruler"
    # without a tool the box moves again with a drag
    w.set_tool(None)
    assert ax.roi.translatable


def test_disease_panel_greyed_with_its_accuracy_when_unreliable(qtbot):
    from types import SimpleNamespace

    from lungviewer.ui.cad_panel import CadPanel

    engine = SimpleNamespace(
        disease_names=["adenocarcinoma", "squamous", "benign"], disease_source="test head",
        caveat="", disease_assessment=lambda: {
            "reliable": False, "accuracy": 0.41, "baseline": 0.45, "ci95": [0.33, 0.49],
            "why": "not better than the base rate: accuracy 0.41 (95 % CI 0.33-0.49) against "
                   "0.45 for always answering the commonest class"})
    panel = CadPanel()
    qtbot.addWidget(panel)
    panel.set_engine_info(engine)
    assert "accuracy 0.41" in panel.disease_title.text() and "0.45" in panel.disease_title.text()
    assert not any(b.isEnabled() for b in panel.disease_bars + panel.disease_labels)
    res = SimpleNamespace(
        malignancy_probs=np.array([0.1, 0.2, 0.4, 0.2, 0.1]), malignancy_expected=3.0,
        disease_probs=np.array([0.0159, 0.6, 0.3841]), disease_names=engine.disease_names,
        nodule_prob=0.8, nodule_source="box", box_mm=(10.0, 10.0), device="cpu",
        timings={"total_ms": 5.0}, patch_binary=np.zeros((8, 8)), patch_grey=np.zeros((8, 8)),
        detector_patch=np.zeros((8, 8)))
    panel.show_scores(res)
    assert "most likely class" not in panel.summary.text()
    assert panel.disease_bars[0].text() == "2%"  # as the PDF writes 0.0159


def test_the_reading_is_saved_off_the_gui_thread_and_on_close(qtbot, review):
    from lungviewer.reading import store

    win = review
    reading = win.session.reading
    panel = win.reading_ctl.panel
    panel.marks.setCurrentRow(0)
    mid = panel._marks[0].id
    win.reading_ctl.set_status("accepted")

    def saved_status():
        r = store.load_reading(reading.study_uid, reading.series_uid)
        return next((m.status for m in (r.cad_marks if r else []) if m.id == mid), None)

    qtbot.waitUntil(lambda: saved_status() == "accepted", timeout=5000)
    win.reading_ctl.set_status("rejected")
    win.close()  # pending changes are written before the window goes
    assert saved_status() == "rejected"
