"""A radiologist's first session (issue 24), the viewer's points 2, 7, 8 and 9: the readers'
panel, the lung overlay and the reader outlines, the progress bar and the status bar, the
slab text, the F1 table, the configurable shortcuts, the percentages, `nodules | head`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
from PySide6.QtGui import QColor, QKeySequence
from PySide6.QtWidgets import QMessageBox

from conftest import shown_window
from dicomgen import write_ct_series
from lungviewer.ui import settings

pytestmark = pytest.mark.gui

XML = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov/idri">
<ResponseHeader><SeriesInstanceUid>1.2.3.4</SeriesInstanceUid>
<StudyInstanceUID>1.2.3</StudyInstanceUID></ResponseHeader>
<readingSession><servicingRadiologistID>-17698129</servicingRadiologistID>
  <unblindedReadNodule><noduleID>A</noduleID>
    <characteristics><malignancy>4</malignancy><texture>5</texture></characteristics>
    <roi><imageZposition>-97.5</imageZposition><imageSOP_UID>SOP1</imageSOP_UID>
      <inclusion>TRUE</inclusion>
      <edgeMap><xCoord>10</xCoord><yCoord>20</yCoord></edgeMap>
      <edgeMap><xCoord>16</xCoord><yCoord>20</yCoord></edgeMap>
      <edgeMap><xCoord>16</xCoord><yCoord>26</yCoord></edgeMap></roi>
  </unblindedReadNodule>
  <unblindedReadNodule><noduleID>S</noduleID>
    <roi><imageZposition>-90</imageZposition><inclusion>TRUE</inclusion>
      <edgeMap><xCoord>40</xCoord><yCoord>41</yCoord></edgeMap></roi>
  </unblindedReadNodule>
  <unblindedReadNodule><noduleID>T</noduleID>
    <roi><imageZposition>-85</imageZposition><inclusion>TRUE</inclusion>
      <edgeMap><xCoord>50</xCoord><yCoord>10</yCoord></edgeMap></roi>
  </unblindedReadNodule>
</readingSession>
<readingSession><servicingRadiologistID>-22446688</servicingRadiologistID>
  <unblindedReadNodule><noduleID>B</noduleID>
    <characteristics><malignancy>3</malignancy></characteristics>
    <roi><imageZposition>-97.5</imageZposition><inclusion>TRUE</inclusion>
      <edgeMap><xCoord>11</xCoord><yCoord>21</yCoord></edgeMap>
      <edgeMap><xCoord>17</xCoord><yCoord>27</yCoord></edgeMap></roi>
  </unblindedReadNodule>
</readingSession>
</LidcReadMessage>
"""


@pytest.fixture
def annotated(tmp_path):
    """A 10-slice series with one nodule ≥ 3 mm read by two readers and two small nodules."""
    folder = tmp_path / "ct"
    files = write_ct_series(folder, n_slices=10, series_uid="1.2.3.4", z0=-100.0)
    sop = pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID
    (folder / "reads.xml").write_text(XML.replace("SOP1", sop))
    return folder


def test_readers_panel_counts_names_and_columns(qtbot, annotated):
    from lungviewer.study.dicom_series import load_series
    from lungviewer.study.nodules import load_study_annotations
    from lungviewer.ui.annotations_panel import AnnotationsPanel, overlay_items
    from lungviewer.ui.mpr import MprWidget

    vol = load_series(annotated)
    ann = load_study_annotations(vol, annotated)
    mpr = MprWidget()
    qtbot.addWidget(mpr)
    mpr.set_volume(vol)
    panel = AnnotationsPanel(mpr)
    qtbot.addWidget(panel)
    panel.resize(420, 500)
    panel.show()
    panel.set_annotations(ann)
    text = panel.source.text()
    assert "1 nodule(s) ≥ 3 mm" in text and "2 small nodule(s) < 3 mm" in text
    tops = [panel.tree.topLevelItem(i) for i in range(panel.tree.topLevelItemCount())]
    assert [t.text(0) for t in tops] == ["Nodule 1", "Small < 3 mm (2)"]
    assert tops[0].text(2) == "3.5"  # median malignancy; the words in the tooltip
    assert tops[1].childCount() == 2
    # readers named "Reader 1", "Reader 2", never by the XML's numbers
    shown = [tops[0].child(i).text(0) for i in range(tops[0].childCount())]
    boxes = [panel.legend.itemAt(i).widget().text() for i in range(panel.legend.count())]
    assert all(s.startswith("Reader ") for s in shown)
    assert {"Reader 1", "Reader 2"} <= set(boxes)
    assert not any("-17698129" in s or "-22446688" in s for s in shown + boxes)
    # every column as wide as its widest cell: nothing cut ("Ø mm", the images)
    fm = panel.tree.fontMetrics()
    for col in range(panel.tree.columnCount()):
        assert panel.tree.columnWidth(col) >= fm.horizontalAdvance(tops[0].text(col))
    # the readers' outlines: thin and translucent, so they do not bury a small nodule
    polys, _ = overlay_items(ann)
    assert polys and all(p.width <= 1.0 and QColor(p.color).alpha() < 255 for p in polys)


def test_lung_overlay_is_an_outline_by_default_fill_one_key_away(qtbot):
    win = shown_window(qtbot)
    try:
        assert not win.act_mask_fill.isChecked() and win.act_mask.isChecked()
        assert win.act_mask_fill.shortcut().toString() == "Shift+M"
        sv = win.slice_view
        assert sv.mask_fill is False
        from lungviewer.study.volume import Volume

        hu = np.full((6, 40, 40), -800, np.int16)
        vol = Volume(hu=hu, spacing=(2.0, 1.0, 1.0),
                     positions=np.c_[np.zeros(6), np.zeros(6), np.arange(6) * 2.0])
        win.mpr.set_volume(vol)
        mask = np.zeros(hu.shape, bool)
        mask[:, 10:30, 10:30] = True
        win.mpr.set_mask(mask)
        inside = sv.mask_item.image[20, 20]
        assert inside[3] == 0  # inside the lung: transparent (the attenuation shows)
        assert sv.mask_item.image[10, 20][3] > 150  # the outline
        win.act_mask_fill.trigger()
        assert sv.mask_item.image[20, 20][3] > 0
        assert settings.get("overlay/mask_fill", False, bool) is True
    finally:
        win.close()


def test_progress_bar_shows_a_percentage_at_once_and_ends_before_an_error_dialog(
        qtbot, tmp_path, monkeypatch):
    win = shown_window(qtbot)
    win.quiet_errors = False
    seen = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: seen.append(
        (win.progress.isVisible(), win.cancel_button.isVisible())))
    try:
        write_ct_series(tmp_path / "ok", n_slices=12)
        win.open_study(tmp_path / "ok")
        # a real bar with a percentage at once (not the busy indicator), its text readable
        assert win.progress.isVisible() and win.progress.maximum() > 0
        assert win.progress.text().endswith("%")
        assert win.progress_label.text().startswith("Loading")
        with qtbot.waitSignal(win.studyLoaded, timeout=60000):
            pass
        qtbot.waitUntil(lambda: not win.busy, timeout=120000)
        # the status bar no longer asks to open a folder
        assert "Open a DICOM folder" not in win.hover_label.text()
        assert not win.progress.isVisible() and not win.progress_label.isVisible()
        # a failing load: the bar and Cancel are gone when the error dialog shows
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "x.dcm").write_bytes(b"not dicom")
        with qtbot.waitSignal(win.studyFailed, timeout=30000):
            win.open_study(tmp_path / "bad")
        qtbot.waitUntil(lambda: bool(seen), timeout=10000)
        assert seen == [(False, False)]
    finally:
        win.close()


def test_f1_table_is_complete_and_aligned_and_keys_are_configurable(qtbot):
    win = shown_window(qtbot)
    try:
        box = win.show_shortcuts()
        text = box.text()
        assert "<table" in text  # one row per key: the columns line up
        for key, what in (("Ctrl+E", "Export reading"), ("Ctrl+Z", "Undo"), ("N", "Next CAD"),
                          ("Shift+M", "Lung parenchyma fill"), ("D", "Ruler")):
            assert f"<b>{key}</b></td><td>{what}" in text, key
        box.close()
        sc = win.shortcuts
        # a key two commands would share is refused, nothing changes
        problems = sc.apply({"Next CAD finding": "Y"})
        assert problems and "Accept the finding" in problems[0]
        assert win.reading_ctl.act_next.shortcut().toString() == "N"
        assert sc.apply({"Next CAD finding": "Home"})  # kept by the views
        # a free key is taken, saved, and back at the next start
        assert sc.apply({"Next CAD finding": "J"}) == []
        assert win.reading_ctl.act_next.shortcut() == QKeySequence("J")
        assert settings.get("shortcuts/Next CAD finding") == "J"
        dlg = win.edit_shortcuts()
        assert dlg.editors["Next CAD finding"].keySequence().toString() == "J"
        dlg.editors["Accept the finding"].setKeySequence(QKeySequence("J"))
        dlg.accept()  # refused: the dialog stays, with the reason
        assert dlg.isVisible() and "J" in dlg.message.text()
        dlg.reject()
    finally:
        win.close()
    win2 = shown_window(qtbot)
    try:
        assert win2.reading_ctl.act_next.shortcut() == QKeySequence("J")
        assert "<b>J</b></td><td>Next CAD finding" in win2.shortcuts.help_html()
        win2.shortcuts.reset()
        assert win2.reading_ctl.act_next.shortcut() == QKeySequence("N")
        assert settings.get("shortcuts/Next CAD finding") is None
    finally:
        win2.close()


def test_gui_rounds_percentages_as_the_pdf_does(qtbot):
    from PySide6.QtWidgets import QProgressBar

    from lungviewer.ui.cad_panel import _set_bar, percent

    bar = QProgressBar()
    bar.setRange(0, 1000)
    _set_bar(bar, 0.0159)
    assert bar.text() == f"{0.0159:.0%}" == "2%"  # Qt's %p% truncates to 1%
    assert percent(0.675) == f"{0.675:.0%}"


def test_slab_text_gives_one_thickness():
    from lungviewer.ui.slice_view import slab_text

    assert slab_text("mip", 5, 2.5) == "MIP slab 12.5 mm (5 images × 2.5 mm)"


def test_nodules_piped_into_head_ends_quietly(annotated):
    code = ("import sys; from lungviewer.cli import main; "
            "sys.exit(main(['nodules', sys.argv[1]]))")
    p = subprocess.Popen([sys.executable, "-c", code, str(annotated)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -0`: the reader is gone before anything is written
    _, err = p.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert p.returncode == 0


def _image_fits(v) -> bool:
    h, w = v.image_data().shape
    (x0, x1), (y0, y1) = v.view.viewRange()
    return x0 <= 0.01 and x1 >= w - 0.01 and y0 <= 0.01 and y1 >= h - 0.01


def test_layouts_give_the_images_room(qtbot):
    from lungviewer.study.volume import Volume

    from PySide6.QtCore import Qt

    from lungviewer.ui.main_window import MainWindow, application

    application()
    win = MainWindow()
    qtbot.addWidget(win)
    # as `lungviewer --screenshot --size 1920x1080` does (the offscreen screen is small)
    win.setWindowState(win.windowState() & ~Qt.WindowState.WindowMaximized)
    win.resize(1920, 1080)
    win.show()
    try:
        hu = np.full((60, 256, 256), -800, np.int16)
        vol = Volume(hu=hu, spacing=(2.5, 0.7, 0.7),
                     positions=np.c_[np.zeros(60), np.zeros(60), np.arange(60) * 2.5])
        win.mpr.set_volume(vol)
        win.mpr.set_layout("1x3")
        qtbot.wait(100)
        assert win.slice_view.graphics.width() >= 512  # wider than a 512 matrix
        # 2×2 at 1366×768: every image whole (fitted again as the cells settle)
        win.mpr.set_layout("2x2")
        qtbot.wait(50)
        win.resize(1366, 768)
        qtbot.wait(100)
        for v in win.mpr.layout_views():
            assert _image_fits(v), v.plane
        # a zoom by hand is kept through a resize
        ax = win.slice_view
        ax.view.scaleBy((0.5, 0.5))
        ax._unfit()
        before = ax.view.viewRange()[0][1] - ax.view.viewRange()[0][0]
        win.resize(1300, 760)
        qtbot.wait(50)
        assert not _image_fits(ax) and before > 0
        # the side panels fold away in one key and come back
        assert win.reading_dock.isVisible()
        win.act_images_only.trigger()
        assert not win.reading_dock.isVisible() and not win.annotations_dock.isVisible()
        win.act_images_only.trigger()
        assert win.reading_dock.isVisible()
    finally:
        win.close()
