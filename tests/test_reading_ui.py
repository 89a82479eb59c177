"""The reading in the viewer (pytest-qt): CAD findings listed and drawn, accept / reject
with keys (rejected kept, greyed), the boxed nodule segmented with its Lung-RADS
suggestion, the reading saved with the study and back on reopening, File → Export writing
SR, SEG and PDF that read back."""

from __future__ import annotations

import pydicom
import pytest
from conftest import shown_window
from lungviewer.ui.findings_panel import REJECTED_GREY

pytestmark = pytest.mark.gui

NODULE_BOX = (89, 336, 293, 395, 344)  # LIDC-IDRI-0001's nodule, the readers' outlines ± 4 px
# the shipped operating points (~0.47 / 0.39 / 0.37) are fitted on real CT: on the synthetic
# twin the CAD's probabilities stay under them (its best finding ~0.22), so the list would be
# empty; thresholds under the twin's few best findings give the review something to review
TWIN_THRESHOLDS = {1: 0.2, 2: 0.09, 4: 0.05}


def _open_ready(qtbot, win, folder):
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        win.open_study(folder)
    qtbot.waitUntil(lambda: not win.busy, timeout=240000)  # mask, annotations, CAD findings


def test_findings_review_segmentation_persistence_and_export(qtbot, twin_0001_dir, tmp_path,
                                                            monkeypatch):
    from lungviewer.session import StudySession

    monkeypatch.setattr(StudySession, "threshold",
                        property(lambda s: TWIN_THRESHOLDS[s.operating_point]))
    win = shown_window(qtbot, (1400, 900))
    try:
        _open_ready(qtbot, win, twin_0001_dir)
        assert win.cad.engine is not None, win.cad.error
        reading = win.session.reading
        panel = win.reading_ctl.panel
        marks = reading.cad_marks
        # the list holds the findings at the operating point (2 FP / scan by default)
        assert marks and panel.marks.count() == sum(win.session.is_shown(m) for m in marks)
        assert panel.marks.count() >= 2 and panel.marks.count() < len(marks)
        assert all(win.session.is_shown(m) for m in panel._marks)  # none below it listed
        assert all(m.status == "unreviewed" for m in marks)
        # the marks are drawn in the views (the axial one on the finding's slice)
        sv = win.slice_view
        first = panel._marks[0]
        panel.marks.setCurrentRow(0)
        assert sv.index == first.slice
        # drawn around the finding (around its measured extent when it has one)
        assert any(abs(c[0] - first.row) < max(c[2], 1) and abs(c[1] - first.col) < max(c[3], 1)
                   and (c[4].y, c[4].x) == (first.row, first.col) for c in sv.mark_circles())
        # Y accepts the current finding and stays on it; N moves on, X rejects the next
        win.reading_ctl.act_accept.trigger()
        assert reading.mark(first.id).status == "accepted"
        assert panel.marks.currentRow() == 0
        win.reading_ctl.act_next.trigger()
        assert panel.marks.currentRow() == 1
        second = panel._marks[1]
        win.reading_ctl.act_reject.trigger()
        assert reading.mark(second.id).status == "rejected"
        item = panel.marks.item(1)
        assert item.foreground().color() == REJECTED_GREY and item.font().strikeOut()
        assert panel.marks.count() == sum(win.session.is_shown(m) for m in marks)  # kept
        # V segments the boxed nodule: volume, axes, type and the Lung-RADS rule
        win.request_box(*NODULE_BOX)
        qtbot.waitUntil(lambda: not win.busy, timeout=60000)
        task = win.reading_ctl.segment_box()
        assert task is not None
        qtbot.waitUntil(lambda: len(win.session.reading.nodules) == 1, timeout=60000)
        qtbot.waitUntil(lambda: panel.nodules.count() == 1, timeout=10000)
        nod = win.session.reading.nodules[0]
        assert 1000 < nod.volume_mm3 < 30000 and nod.long_axis_mm >= nod.short_axis_mm > 5
        text = panel.nodules.item(0).text()
        assert f"Lung-RADS {nod.lung_rads['category']}" in text and "→" in text
        assert "not a diagnosis" in panel.lung_rads_note.text()
        # the note is kept too
        panel.note.setPlainText("reader: check in 3 months")
        qtbot.waitUntil(lambda: win.session.reading.note == "reader: check in 3 months",
                        timeout=5000)
        # File → Export: SR, SEG and PDF that read back, never replaced without asking
        out = tmp_path / "export"
        out.mkdir()
        task = win.export_reading(out, ask=False)
        assert task is not None
        qtbot.waitUntil(lambda: not task.running, timeout=120000)
        names = sorted(p.name for p in out.iterdir())
        assert names == ["report.pdf", "seg.dcm", "sr.dcm"], names
        assert pydicom.dcmread(out / "seg.dcm").Modality == "SEG"
        assert pydicom.dcmread(out / "sr.dcm").Modality == "SR"
        assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
        assert win.export_reading(out, ask=False) is None  # files there: nothing replaced
    finally:
        win.close()
    # a new window on the same study shows the saved reading
    win2 = shown_window(qtbot, (1400, 900))
    try:
        _open_ready(qtbot, win2, twin_0001_dir)
        r2 = win2.session.reading
        assert r2.mark(first.id).status == "accepted"
        assert r2.mark(second.id).status == "rejected"  # the re-scan kept the verdicts
        assert len(r2.nodules) == 1 and r2.note == "reader: check in 3 months"
        assert win2.reading_ctl.panel.note.toPlainText() == "reader: check in 3 months"
        assert win2.reading_ctl.act_marks.shortcut().toString() == "F"
        win2.reading_ctl.act_marks.trigger()  # F hides the marks in every view
        assert all(not v._marks for v in win2.mpr.views)
        from lungviewer.ui.findings_panel import KEYS

        assert "Y / X / U" in KEYS and win2.reading_ctl.act_accept.shortcut().toString() == "Y"
    finally:
        win2.close()
