"""The CAD assistant in the viewer (pytest-qt, offscreen), with the shipped weights."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import GuiTicks, shown_window

pytestmark = pytest.mark.gui

NODULE_BOX = (89, 336, 293, 395, 344)  # LIDC-IDRI-0001: the readers' outlines ± 4 px


@pytest.fixture
def ready_window(qtbot, twin_0001_dir):
    win = shown_window(qtbot, (1200, 800))
    qtbot.waitUntil(lambda: not win.cad.loading, timeout=120000)
    assert win.cad.engine is not None, win.cad.error
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        win.open_study(twin_0001_dir)
    yield win
    win.close()


def test_box_gives_five_malignancy_bars_summing_to_100(qtbot, ready_window):
    win = ready_window
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    with qtbot.waitSignal(win.cad.scoresShown, timeout=30000) as blocker:
        win.request_box(*NODULE_BOX)
    res = blocker.args[0]
    bars = [b.value() for b in win.cad.panel.mal_bars]
    assert len(bars) == 5 and abs(sum(bars) - 1000) <= 5  # per mille, rounded
    assert res.malignancy_probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(win.cad.panel.disease_bars) == len(res.disease_names) == 3
    learned = win.cad.engine.manifest["label_sets"]["disease"]["training_patients"]
    assert f"learned from {learned} training patients" in win.cad.panel.disease_title.text()
    assert win.cad.panel.similar.count() == 5
    assert "cpu" in win.cad.panel.status.text().lower() or "cuda" in win.cad.panel.status.text()


def test_gui_keeps_ticking_during_inference_and_scan(qtbot, ready_window):
    """The GUI thread never blocks for 100 ms while the study is prepared (mask, findings,
    slice scan) and a box is scored. What counts is the GUI thread's own time between two
    ticks of a 10 ms timer: working, or waiting on a lock or the GIL that the workers hold.
    The time it waited for a CPU in the kernel's run queue is left out: that is the shared
    machine's load (measured on the 2-core development machine at load 5-16: up to ~110 ms
    of a 115 ms gap, while the GUI thread's own work stayed under 25 ms)."""
    win = ready_window
    ticks = GuiTicks()
    ticks.start()
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)  # mask, annotations, slice scan
    with qtbot.waitSignal(win.cad.scoresShown, timeout=30000):
        win.request_box(*NODULE_BOX)
    ticks.stop()
    assert win.cad.scan is not None and len(win.cad.scan.ranking()) > 0
    assert len(ticks.ticks) > 20
    assert ticks.blocked().max() < 100, ticks.report()


def test_newer_box_supersedes_older(qtbot, ready_window):
    win = ready_window
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    shown = []
    win.cad.scoresShown.connect(lambda r: shown.append(r.box))
    win.request_box(89, 100, 100, 130, 130)
    win.request_box(89, 200, 200, 240, 240)
    win.request_box(*NODULE_BOX)
    qtbot.waitUntil(lambda: not win.busy, timeout=30000)
    assert shown and shown[-1] == NODULE_BOX
    assert (89, 100, 100, 130, 130) not in shown[1:]  # an old answer never follows a newer


def test_recommendations_fill_and_jump(qtbot, ready_window):
    win = ready_window
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    lst = win.cad.panel.recommend
    assert lst.count() > 0
    item = lst.item(0)
    lst.itemClicked.emit(item)
    assert win.slice_view.index == int(item.data(256))  # Qt.UserRole
    # the nodule's slices lead the list
    top = [int(lst.item(i).data(256)) for i in range(min(10, lst.count()))]
    assert any(84 <= k <= 96 for k in top), top


def test_closing_mid_run_is_safe(qtbot, twin_0001_dir):
    win = shown_window(qtbot)
    win.open_study(twin_0001_dir)
    qtbot.wait(300)
    win.request_box(*NODULE_BOX)
    win.close()  # loading / scanning / scoring may still run: must not crash or hang
    assert all(not t.running or t.is_cancelled for t in win.tasks)


def test_analyze_agrees_with_the_panel(qtbot, ready_window, twin_0001_dir):
    from lungviewer.commands.analyze import analyze

    win = ready_window
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    with qtbot.waitSignal(win.cad.scoresShown, timeout=30000) as blocker:
        win.request_box(*NODULE_BOX)
    panel = blocker.args[0]
    head = analyze(str(twin_0001_dir), NODULE_BOX, device="cpu")
    got = np.array([head["box"]["malignancy"][str(i)] for i in range(1, 6)])
    np.testing.assert_allclose(got, panel.malignancy_probs, atol=1e-3)
    assert head["box"]["nodule_probability"] == pytest.approx(panel.nodule_prob, abs=1e-3)


def test_double_clicking_a_similar_nodule_opens_its_twin_at_its_slice(qtbot, ready_window):
    win = ready_window
    qtbot.waitUntil(lambda: not win.busy, timeout=120000)
    with qtbot.waitSignal(win.cad.scoresShown, timeout=30000):
        win.request_box(*NODULE_BOX)
    lst = win.cad.panel.similar
    item = lst.item(0)
    patient, k = item.data(256)  # Qt.UserRole
    text = item.text()  # the list is cleared (its items deleted) when the new study opens
    assert patient.startswith("LIDC-IDRI-") and patient in text and f"image {k + 1}" in text
    with qtbot.waitSignal(win.studyLoaded, timeout=120000) as blocker:
        lst.itemActivated.emit(item)
    volume = blocker.args[0]
    assert volume.is_synthetic and patient in volume.description + volume.patient_id
    assert win.slice_view.index == k and win.slider.value() == k
    assert lst.count() == 0  # the previous study's similar nodules are gone
