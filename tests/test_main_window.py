"""The main window under stress (pytest-qt): hostile XML beside a study, no patient data
shown or logged, broken weights, and closing / cancelling / reopening during every kind
of background work (the study session's jobs on worker threads)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conftest import shown_window
from cadfixtures import break_weights, write_tiny_weights
from dicomgen import write_ct_series
from hostile import SECRET, _hostile_docs
from lungviewer.cancel import Cancelled
from lungviewer.ui import workers

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[1]


# -- fixtures for the window ---------------------------------------------------------------------
@pytest.fixture
def made(monkeypatch):
    """Every background Task the window starts (to check that none is left running)."""
    tasks: list[workers.Task] = []
    real = workers.Task.start

    def start(self):
        tasks.append(self)
        return real(self)

    monkeypatch.setattr(workers.Task, "start", start)
    return tasks


@pytest.fixture
def window(qtbot, made):
    win = shown_window(qtbot, (900, 600))
    yield win
    win.close()
    _assert_no_thread_left(qtbot, win, made)


def _assert_no_thread_left(qtbot, win, made) -> None:
    """Every thread the window started has ended (a short grace period for a loaded CI
    machine: close() waits for them, this only guards against a slow last event)."""
    def check():
        left = [t.name for t in made if t._thread.isRunning()]
        assert not left, f"threads still running after close: {left}"
        jobs = [t.name for t in threading.enumerate() if t.name.startswith("lungviewer-job")]
        assert not jobs, f"job threads still running after close: {jobs}"

    qtbot.waitUntil(check, timeout=10000)


def _open(qtbot, win, path, timeout=60000):
    with qtbot.waitSignal(win.studyLoaded, timeout=timeout) as blocker:
        win.open_study(path)
    return blocker.args[0]


def test_study_opens_when_the_companion_xml_is_hostile(qtbot, window, tmp_path):
    write_ct_series(tmp_path, n_slices=8, rows=32, cols=32)
    (tmp_path / "069.xml").write_text(_hostile_docs(tmp_path)["billion-laughs"])
    (tmp_path / "070.xml").write_text(_hostile_docs(tmp_path)["external-entity"])
    vol = _open(qtbot, window, tmp_path)
    assert vol.n_slices == 8 and window.volume is vol
    qtbot.waitUntil(lambda: window.annotations is not None, timeout=30000)
    text = window.study_text.toPlainText()
    assert SECRET not in text and "lollol" not in text
    assert window.slice_view.image.image is not None


def test_viewer_shows_and_logs_no_patient_data(qtbot, window, tmp_path, caplog):
    import logging

    import pydicom

    caplog.set_level(logging.DEBUG)
    phi = ("Zyxwvut^Quirinalis", "PID-93417-QX", "19230417")
    write_ct_series(tmp_path, n_slices=6, rows=32, cols=32, patient_name=phi[0],
                    patient_id=phi[1])
    for f in tmp_path.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = phi[2]
        ds.save_as(f)
    (tmp_path / "junk.bin").write_bytes(b"x" * 10)
    _open(qtbot, window, tmp_path)
    qtbot.waitUntil(lambda: not any(t.running for t in window.tasks), timeout=60000)
    shown = "\n".join([window.windowTitle(), window.study_text.toPlainText(),
                       window.statusBar().currentMessage(),
                       *[r.getMessage() for r in caplog.records]])
    assert "slices" in shown
    for value in (*phi, "Zyxwvut", "Quirinalis"):
        assert value not in shown


# -- weights ----------------------------------------------------------------------------------
def test_viewer_opens_a_study_without_cad_when_weights_are_broken(qtbot, made, tmp_path,
                                                                 monkeypatch):
    from lungviewer import paths

    folder = write_tiny_weights(tmp_path / "w")
    break_weights(folder, "checksum")
    monkeypatch.setattr(paths, "weights_dir", lambda: folder)
    win = shown_window(qtbot)
    try:
        qtbot.waitUntil(lambda: not win.cad.loading, timeout=60000)
        assert win.cad.engine is None and "checksum" in win.cad.error
        write_ct_series(tmp_path / "s", n_slices=6, rows=32, cols=32)
        vol = _open(qtbot, win, tmp_path / "s")
        assert win.volume is vol
        win.request_box(3, 4, 4, 20, 20)  # a box without CAD: no crash, no pending work
        qtbot.waitUntil(lambda: not win.busy, timeout=60000)
        assert win.volume is vol and win.cad.engine is None
    finally:
        win.close()
    _assert_no_thread_left(qtbot, win, made)


# -- closing, cancelling and reopening during background work --------------------------------
SLOW_S = 8.0


def _slow(fn, running: dict, name: str):
    """``fn`` behind a first call that waits SLOW_S seconds, polling cancel."""

    def job(*args, progress=None, cancel=None, **kwargs):
        if name not in running:
            running[name] = True
            t0 = time.monotonic()
            while time.monotonic() - t0 < SLOW_S:
                if cancel is not None and cancel():
                    running[name] = False
                    raise Cancelled()
                time.sleep(0.01)
            running[name] = False
        return fn(*args, progress=progress, cancel=cancel, **kwargs)

    return job


def _patch_stage(monkeypatch, stage: str, running: dict) -> str:
    """Slow down the library function behind one step of the session's study job; returns
    the name of the window's task that runs it."""
    import lungviewer.imaging.parenchyma
    import lungviewer.session
    import lungviewer.study.dicom_series
    from lungviewer.cad.engine import CadEngine

    owner, attr = {"load": (lungviewer.study.dicom_series, "load_series"),
                   "segment": (lungviewer.imaging.parenchyma, "segment_lungs"),
                   "annotations": (lungviewer.session, "read_annotations"),
                   "scan": (CadEngine, "find_findings")}[stage]
    monkeypatch.setattr(owner, attr, _slow(getattr(owner, attr), running, stage))
    return "study"


@pytest.mark.parametrize("action", ["close", "cancel", "reopen"])
@pytest.mark.parametrize("stage", ["load", "annotations", "segment", "scan"])
def test_interrupting_background_work_leaves_no_thread(qtbot, made, tmp_path, monkeypatch,
                                                       stage, action):
    running: dict[str, bool] = {}
    task_name = _patch_stage(monkeypatch, stage, running)
    a, b = tmp_path / "a", tmp_path / "b"
    write_ct_series(a, n_slices=10, rows=48, cols=48)
    write_ct_series(b, n_slices=7, rows=48, cols=48)
    win = shown_window(qtbot)
    loaded = []
    win.studyLoaded.connect(loaded.append)
    try:
        if stage == "scan":
            qtbot.waitUntil(lambda: not win.cad.loading, timeout=60000)
            assert win.cad.engine is not None, win.cad.error
        win.open_study(a)
        qtbot.waitUntil(lambda: running.get(stage) is True, timeout=60000)
        victim = [t for t in made if t.name == task_name]
        assert victim, [t.name for t in made]
        victim = victim[-1]
        assert victim.running
        if action == "close":
            win.close()
            _assert_no_thread_left(qtbot, win, made)
            assert not victim._thread.isRunning()
            n = len(loaded)
            qtbot.wait(100)  # late signals from finished threads change nothing
            assert len(loaded) == n
            return
        if action == "cancel":
            win.cancel_work()
        else:
            win.open_study(b)
        qtbot.waitUntil(lambda: not victim.running, timeout=4000)  # stopped, not run to the end
        assert running[stage] is False
        if action == "reopen":
            qtbot.waitUntil(lambda: win.volume is not None and win.volume.n_slices == 7,
                            timeout=60000)
        qtbot.waitUntil(lambda: not win.busy, timeout=60000)
        if action == "cancel" and stage == "load":
            assert win.volume is None
        elif action == "cancel":
            assert win.volume.n_slices == 10  # the study stays open
        if action == "reopen" and stage == "segment":
            assert win.mask is not None and win.mask.shape == win.volume.hu.shape
    finally:
        win.close()
    _assert_no_thread_left(qtbot, win, made)


@pytest.mark.parametrize("action", ["close", "reopen"])
def test_interrupting_inference_leaves_no_thread_and_no_stale_result(qtbot, made, tmp_path,
                                                                     monkeypatch, action):
    """A box is being scored (slowed to 3 s) when the window closes or another study opens:
    the CAD thread ends, and the old study's scores never appear on the new study."""
    from lungviewer.cad.engine import CadEngine

    running: dict[str, bool] = {}
    real = CadEngine.score_box

    def slow(self, *args, **kwargs):
        running["inference"] = True
        time.sleep(3.0)
        running["inference"] = False
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CadEngine, "score_box", slow)
    a, b = tmp_path / "a", tmp_path / "b"
    write_ct_series(a, n_slices=10, rows=48, cols=48)
    write_ct_series(b, n_slices=7, rows=48, cols=48)
    win = shown_window(qtbot)
    shown = []
    win.cad.scoresShown.connect(shown.append)
    try:
        qtbot.waitUntil(lambda: not win.cad.loading, timeout=60000)
        assert win.cad.engine is not None, win.cad.error
        _open(qtbot, win, a)
        qtbot.waitUntil(lambda: not win.busy, timeout=60000)
        win.request_box(5, 10, 10, 30, 30)
        qtbot.waitUntil(lambda: running.get("inference") is True, timeout=10000)
        if action == "close":
            win.close()
            _assert_no_thread_left(qtbot, win, made)
            assert running["inference"] is False and not shown
            return
        _open(qtbot, win, b)
        qtbot.waitUntil(lambda: running["inference"] is False, timeout=10000)
        qtbot.waitUntil(lambda: not win.busy, timeout=60000)
        qtbot.wait(200)  # the stale answer's queued signal has been delivered
        assert not shown
        panel = win.cad.panel
        assert all(bar.value() < 0 for bar in panel.mal_bars)  # reset, not the old scores
        assert panel.similar.count() == 0 and "Press B" in panel.status.text()
    finally:
        win.close()
    _assert_no_thread_left(qtbot, win, made)
