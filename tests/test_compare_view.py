"""The viewer's follow-up layout (ui/compare_view.py): current | prior side by side, each
labelled with its date, scrolling linked through the registration without blocking the GUI
thread, unlinked when registration failed, 'align on this point', File → Open prior…"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

pytest.importorskip("pytestqt")


def _phantom():
    """A small chest-like SYNTHETIC volume: body, two lungs with vessel-like blobs."""
    from lungviewer.study.volume import Volume

    rng = np.random.default_rng(5)
    z, y, x = np.mgrid[0:40, 0:128, 0:128].astype(float)
    hu = np.full(z.shape, -1000.0)
    body = ((y - 64) / 56) ** 2 + ((x - 64) / 60) ** 2 <= 1
    hu[body] = 40
    for cx in (40, 88):
        lung = ((y - 62) / 38) ** 2 + ((x - cx) / 20) ** 2 + ((z - 22) / 24) ** 2 <= 1
        hu[lung] = -850
    for _ in range(60):
        c = rng.uniform([6, 30, 22], [36, 96, 106])
        r = rng.uniform(1.0, 2.2)
        blob = ((z - c[0]) * 2.5) ** 2 + ((y - c[1]) * 1.5) ** 2 + ((x - c[2]) * 1.5) ** 2 \
            <= (r * 1.5) ** 2
        hu[blob & (hu < -500)] = 30
    hu += rng.normal(0, 15, hu.shape)
    pos = np.array([[-96.0, -96.0, -60.0 + 2.5 * k] for k in range(40)])
    return Volume(hu=np.rint(hu).astype(np.int16), spacing=(2.5, 1.5, 1.5), positions=pos,
                  patient_id="PHANTOM")


@pytest.fixture(scope="module")
def pair():
    from lungviewer.followup.registration import lung_mask_of
    from lungviewer.synth.followup import make_followup_pair

    vol = _phantom()
    return make_followup_pair(vol, lung_mask_of(vol.hu, vol.spacing), seed=2,
                              nodules=(("grow", "growing", 7.0, 300.0),),
                              current_spacing=(2.0, 1.6, 1.6), rotation_deg=(1, 0, 2),
                              shift_mm=(3, -4, 5), lung_scale=1.05)


def test_linked_scrolling_unlinked_and_align(qtbot, pair):
    from lungviewer.followup.compare import Comparison
    from lungviewer.followup.registration import register
    from lungviewer.ui.compare_view import CompareView

    reg = register(pair.current, pair.prior)
    view = CompareView()
    qtbot.addWidget(view)
    view.resize(900, 500)
    view.show()
    view.set_exams(pair.current, pair.prior, "2026-03-04", "2025-03-04")
    assert "2026-03-04" in view.current_label.text()
    assert "2025-03-04" in view.prior_label.text()
    view.set_result(Comparison([], reg.as_dict(), 365), reg)
    times = []
    for k in (10, 20, 30):
        view.current_view.set_slice(k)
        times.append(view.last_sync_s)
        want = reg.current_to_prior(np.array([k, 64.0, 64.0]))[0]
        assert abs(view.prior_view.index - round(want)) <= 1
    for k in range(8, 32, 2):
        view.current_view.set_slice(k)
        times.append(view.last_sync_s)
    # the linked update (mapping + showing the other slice) takes under one frame (the
    # median: a shared CI machine may stall any one call)
    assert float(np.median(times)) < 1 / 60, times
    # registration failed: side by side, unlinked, until the reader aligns on a point
    view.set_result(Comparison([], {"error": "registration did not converge"}, 365), None)
    assert "Unlinked" in view.status.text()
    before = view.prior_view.index
    view.current_view.set_slice(5)
    assert view.prior_view.index == before
    assert not view.align_on_points()  # no points yet
    view._current_clicked(20, 60, 60)
    view._prior_clicked(24, 62, 58)
    assert view.align_on_points() and view.registration is not None
    view.current_view.set_slice(20)
    assert view.prior_view.index == 24


def test_open_prior_from_the_file_menu(qtbot, pair, tmp_path):
    from conftest import shown_window

    from lungviewer.study.dicom_series import load_series
    from lungviewer.synth.followup import write_series

    write_series(pair.current, tmp_path / "cur", pair.current_date)
    write_series(pair.prior, tmp_path / "pri", pair.prior_date)
    win = shown_window(qtbot)
    assert "prior" in win.act_prior.text().lower()
    win.session.set_volume(load_series(tmp_path / "cur"))
    task = win.followup.open_prior(str(tmp_path / "pri"))
    errors = []
    task.failed.connect(errors.append)
    with qtbot.waitSignal(task.ended, timeout=120_000):
        pass
    assert not errors
    view = win.followup.view
    assert view is not None and view.isVisible()
    assert view.registration is not None, view.status.text()
    assert str(pair.prior_date) in view.prior_label.text()
    saved = win.session.reading.followup
    assert saved is not None and saved["interval_days"] == 365
    assert saved["prior_study"]["study_date"] == str(pair.prior_date)
    win.close()


def test_open_prior_newer_is_refused(qtbot, pair, tmp_path):
    from conftest import shown_window

    from lungviewer.study.dicom_series import load_series
    from lungviewer.synth.followup import write_series

    write_series(pair.current, tmp_path / "cur", pair.current_date)
    write_series(pair.prior, tmp_path / "pri", pair.current_date + dt.timedelta(days=10))
    win = shown_window(qtbot)
    win.session.set_volume(load_series(tmp_path / "cur"))
    task = win.followup.open_prior(str(tmp_path / "pri"))
    with qtbot.waitSignal(task.ended, timeout=120_000):
        pass
    assert win.followup.view is None
    assert "newer" in win.statusBar().currentMessage()
    win.close()


def test_reader_verdict_per_pair_is_saved_with_the_reading_and_undone(qtbot, pair):
    from conftest import shown_window

    from lungviewer.followup.compare import Comparison, Nodule, assess_pair
    from lungviewer.ui.compare_view import VERDICT_COLUMN

    win = shown_window(qtbot)
    win.session.set_volume(pair.current)
    a, b = Nodule(20, 60, 40, 6.0, 110.0), Nodule(21, 61, 41, 7.5, 220.0)
    comp = Comparison([assess_pair(b, a, 365), assess_pair(Nodule(10, 50, 90, 5.0, 65.0),
                                                           None, 365)], {"error": "x"}, 365)
    win.session.reading.set_followup(comp.as_dict())
    win.followup._done((pair.prior, comp, None))
    view = win.followup.view
    assert view.table.item(0, VERDICT_COLUMN).text() == "—"
    saved = win.session.reading.followup["pairs"]

    view.table.selectRow(0)
    view.disagree_button.click()
    assert saved[0]["verdict"] == "rejected" and saved[1]["verdict"] == ""
    assert "disagree" in view.table.item(0, VERDICT_COLUMN).text()
    view.table.selectRow(1)
    view.agree_button.click()
    assert saved[1]["verdict"] == "confirmed"
    assert "agree" in view.table.item(1, VERDICT_COLUMN).text()
    assert '"verdict": "confirmed"' in win.session.reading.to_json()
    # undo / redo through the window's history (Ctrl+Z / Ctrl+Shift+Z, also in this window)
    assert all(a in view.actions() for a in win.history.actions)
    win.history.undo()
    assert saved[1]["verdict"] == "" and view.table.item(1, VERDICT_COLUMN).text() == "—"
    win.history.undo()
    assert saved[0]["verdict"] == ""
    win.history.redo()
    assert saved[0]["verdict"] == "rejected"
    assert "disagree" in view.table.item(0, VERDICT_COLUMN).text()
    # the same verdict again takes it back
    view.table.selectRow(0)
    view.disagree_button.click()
    assert saved[0]["verdict"] == ""
    with pytest.raises(ValueError):
        win.session.set_pair_verdict(0, "maybe")
    with pytest.raises(IndexError):
        win.session.set_pair_verdict(5, "confirmed")
    view.close()
    win.close()
