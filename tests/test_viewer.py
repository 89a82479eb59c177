"""pytest-qt tests of the viewer: open, scroll, window/level, HU readout, responsiveness."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from conftest import shown_window
from dicomgen import expected_hu, write_ct_series
from lungviewer.ui import settings

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot):
    win = shown_window(qtbot)
    yield win
    win.close()


def _open(qtbot, win, path, timeout=60000):
    with qtbot.waitSignal(win.studyLoaded, timeout=timeout) as blocker:
        win.open_study(path)
    qtbot.waitUntil(lambda: not win.busy, timeout=timeout)
    return blocker.args[0]


def test_open_folder_shows_middle_slice(qtbot, window, tmp_path):
    write_ct_series(tmp_path, n_slices=12)
    vol = _open(qtbot, window, tmp_path)
    sv = window.slice_view
    assert vol.n_slices == 12
    assert sv.index == 6 and window.slider.value() == 6
    assert window.slider.maximum() == 11
    np.testing.assert_array_equal(sv.image.image, expected_hu(6, 64, 64))
    assert settings.recent_studies()[0] == str(tmp_path)
    assert "Image 7 / 12" in sv._labels["tl"].text()
    assert not QApplication.instance().windowIcon().isNull()  # resources/icon.png


def test_keys_slider_and_wheel_scroll(qtbot, window, tmp_path):
    write_ct_series(tmp_path, n_slices=30)
    _open(qtbot, window, tmp_path)
    sv = window.slice_view
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert sv.index == 16 and window.slider.value() == 16
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert sv.index == 6
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert sv.index == 0  # clamped
    qtbot.keyClick(window, Qt.Key.Key_End)
    assert sv.index == 29
    qtbot.keyClick(window, Qt.Key.Key_Home)
    assert sv.index == 0
    window.slider.setValue(20)
    assert sv.index == 20
    np.testing.assert_array_equal(sv.image.image, expected_hu(20, 64, 64))
    vp = sv.graphics.viewport()
    centre = QPointF(vp.width() / 2, vp.height() / 2)
    for delta, want in ((120, 21), (-120, 20), (-120, 19)):
        ev = QWheelEvent(centre, vp.mapToGlobal(centre), QPoint(0, 0), QPoint(0, delta),
                         Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                         Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(vp, ev)
        assert sv.index == want


def _wheel(sv, delta: int) -> None:
    vp = sv.graphics.viewport()
    centre = QPointF(vp.width() / 2, vp.height() / 2)
    QApplication.sendEvent(vp, QWheelEvent(centre, vp.mapToGlobal(centre), QPoint(0, 0),
                                           QPoint(0, delta), Qt.MouseButton.NoButton,
                                           Qt.KeyboardModifier.NoModifier,
                                           Qt.ScrollPhase.NoScrollPhase, False))


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 1, 0)],
                         ids=["head-first", "feet-first"])
def test_wheel_up_goes_towards_the_head(qtbot, window, tmp_path, orientation):
    """Wheel up shows the image nearer the head, also in a feet-first series (sorted along
    its normal, which points to the feet)."""
    write_ct_series(tmp_path, n_slices=9, orientation=orientation)
    vol = _open(qtbot, window, tmp_path)
    sv = window.slice_view
    k = sv.index
    _wheel(sv, 120)
    assert vol.positions[sv.index, 2] > vol.positions[k, 2]
    _wheel(sv, -120)
    _wheel(sv, -120)
    assert vol.positions[sv.index, 2] < vol.positions[k, 2]


def test_window_presets_and_drag(qtbot, window, tmp_path):
    write_ct_series(tmp_path, n_slices=5)
    _open(qtbot, window, tmp_path)
    sv = window.slice_view
    window.preset_actions["mediastinum"].trigger()
    assert (sv.level, sv.width) == (40, 400)
    assert sv.image.levels is not None and tuple(sv.image.levels) == (-160, 240)
    window.preset_actions["bone"].trigger()
    assert (sv.level, sv.width) == (400, 1800)
    assert settings.get("window/preset") == "bone"

    class Drag:  # the parts of a pyqtgraph MouseDragEvent the view uses
        def __init__(self, dx, dy, start=False, finish=False):
            self._d, self._s, self._f = QPointF(dx, dy), start, finish
        def isStart(self): return self._s
        def isFinish(self): return self._f
        def screenPos(self): return QPointF(100, 100) + self._d
        def buttonDownScreenPos(self): return QPointF(100, 100)

    sv._window_drag(Drag(0, 0, start=True))
    sv._window_drag(Drag(50, -20, finish=True))
    assert sv.width == 1800 + 200 and sv.level == 400 - 40
    assert "custom" in sv._labels["tr"].text()


def test_hu_and_position_under_the_cursor(qtbot, window, tmp_path):
    write_ct_series(tmp_path, n_slices=8, spacing=(2.0, 0.5, 0.5))
    vol = _open(qtbot, window, tmp_path)
    sv = window.slice_view
    row, col = 40, 17
    scene = sv.view.mapViewToScene(QPointF(col + 0.5, row + 0.5))
    sv._mouse_moved(scene)
    want = int(expected_hu(sv.index, 64, 64)[row, col])
    text = window.hover_label.text()
    assert f"HU {want:+d}" in text and f"row {row}, col {col}" in text
    x, y, z = vol.pixel_to_patient(sv.index, row, col)
    assert f"x {x:.1f}" in text and f"z {z:.1f}" in text
    assert sv.hover_text(-3, 5) == ""


def test_bad_folder_reports_error_without_crash(qtbot, window, tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"nothing here")
    with qtbot.waitSignal(window.studyFailed, timeout=20000) as blocker:
        window.open_study(tmp_path)
    assert "DICOM" in blocker.args[0]
    assert window.volume is None


def test_loading_does_not_block_the_gui_thread(qtbot, window, twin_0001_dir):
    """Open the 133-slice twin while a 10 ms timer ticks: the longest gap stays < 100 ms
    (after the start-up warm-up and the CAD model load, as in real use)."""
    qtbot.waitUntil(lambda: not window._warm_up.running and not window.cad.loading,
                    timeout=60000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    marks = {}
    for name in ("studyLoaded", "maskReady", "annotationsReady"):
        getattr(window, name).connect(lambda *_, n=name: marks.setdefault(n, time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    _open(qtbot, window, twin_0001_dir, timeout=120000)
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 10
    i = int(np.argmax(gaps))
    when = {k: round(v - t0, 3) for k, v in marks.items()}
    assert gaps.max() < 0.1, (f"GUI thread blocked for {gaps.max() * 1000:.0f} ms at "
                              f"{ticks[i] - t0:.3f} s; events {when}")
    assert window.slice_view._labels["banner"].isVisible()  # SYNTHETIC banner


@pytest.mark.slow
def test_screenshot_command(tmp_path):
    write_ct_series(tmp_path / "s", n_slices=6)
    out = tmp_path / "shot.png"
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-m", "lungviewer", str(tmp_path / "s"),
                          "--screenshot", str(out), "--slice", "2", "--preset", "bone",
                          "--size", "800x600"], capture_output=True, text=True, env=env,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    from PySide6.QtGui import QImage
    img = QImage(str(out))
    assert img.width() == 800 and img.height() == 600
