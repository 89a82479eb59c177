"""Issue 24 point 3 in the viewer: a saved reading of the series made on other images is
offered in a bar above the images (Apply / Ignore), never applied silently; applied, its
marks are drawn only on slices this volume has, moved there by SOPInstanceUID."""

from __future__ import annotations

import pytest
from conftest import shown_window
from test_export import make_reading
from test_reading_content import _part, full  # noqa: F401 - the phantom series fixture

from lungviewer.reading import store

pytestmark = pytest.mark.gui


def _open(qtbot, win, folder):
    with qtbot.waitSignal(win.studyLoaded, timeout=10000):
        win.session.open(folder)  # small: opened here, the events come queued


def test_offered_reading_bar_apply_draws_only_slices_the_volume_has(full, tmp_path, qtbot):  # noqa: F811
    folder, volume = full
    store.save_reading(make_reading(volume))  # marks on slices 5 and 18, nodule near 12
    part = _part(folder, tmp_path / "mid", range(8, 20))  # the same series, slices 8..19
    win = shown_window(qtbot)
    _open(qtbot, win, part)
    bar = win.offer_bar
    assert bar.isVisible()
    assert "other images (2 marks, 1 nodule" in bar.label.text()
    assert "Apply it?" in bar.label.text()
    # offered, not applied: nothing of the saved reading is drawn
    assert win.session.reading.is_empty and win.slice_view._marks == []
    bar.apply_button.click()
    qtbot.waitUntil(lambda: len(win.slice_view._marks) == 1, timeout=5000)
    assert not bar.isVisible() and win.session.offered_reading is None
    [mark] = win.slice_view._marks
    assert int(mark.z) == 18 - 8  # moved by SOPInstanceUID; the mark on slice 5 left out
    assert all(0 <= m.z < win.volume.n_slices for m in win.slice_view._marks)
    [nod] = win.session.reading.nodules
    assert 0 <= nod.mask.offset[0] and nod.mask.offset[0] + nod.mask.shape[0] <= 12
    assert "left out" in win.statusBar().currentMessage()

    # the whole series has its own reading: no bar
    _open(qtbot, win, folder)
    assert not bar.isVisible() and len(win.session.reading.cad_marks) == 2
    # Ignore keeps this folder's reading and drops the offer
    _open(qtbot, win, _part(folder, tmp_path / "low", range(0, 8)))
    assert bar.isVisible()
    bar.ignore_button.click()
    assert not bar.isVisible() and win.session.offered_reading is None
    assert win.session.reading.is_empty and win.slice_view._marks == []
    win.close()
