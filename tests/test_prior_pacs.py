"""Issue 26 "Open a prior" from a PACS node, against the loopback Orthanc of test_pacs
(run when CI=true, skipped elsewhere only when Orthanc is missing): File → Find prior on
PACS… lists the open study's earlier CT studies (not the MR, not the study itself, not
another patient's), retrieves the chosen one into the study cache off the GUI thread and
opens it as the prior through the follow-up controller's prior job."""

from __future__ import annotations

import pytest
from conftest import shown_window
from test_pacs import _dimse, _web, server  # noqa: F401 - fixtures

from lungviewer import pacs
from lungviewer.study.dicom_series import load_series

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_find_prior_on_pacs_retrieves_and_opens_it_as_the_prior(server, qtbot,  # noqa: F811
                                                                kind):
    from lungviewer.ui.prior_pacs import PriorPacsDialog

    pacs.save_nodes([_dimse(server) if kind == "dimse" else _web(server)])
    win = shown_window(qtbot)
    assert "prior on pacs" in win.act_prior_pacs.text().lower().replace("&", "")
    win.act_prior_pacs.trigger()  # no study open: says so, no dialog
    assert getattr(win, "_prior_pacs_dialog", None) is None
    assert "current study first" in win.statusBar().currentMessage()

    current_dir = server.data["current"][2][0].parent
    with qtbot.waitSignal(win.studyLoaded, timeout=10000):
        win.session.open(current_dir)
    opened = []
    real_open_prior = win.followup.open_prior
    win.followup.open_prior = lambda path, *a, **k: (opened.append(path),
                                                     real_open_prior(path, *a, **k))[1]
    win.act_prior_pacs.trigger()
    dlg = win._prior_pacs_dialog
    assert isinstance(dlg, PriorPacsDialog) and dlg.isVisible()
    assert dlg.find_task is not None  # the lookup runs at once, on a worker
    qtbot.waitUntil(lambda: not dlg.find_task.running, timeout=15000)
    # patient A's CT of 2019 only: not the 2021 study itself, not the 2018 MR, not B's CT
    assert [s.study_uid for s in dlg.priors] == [server.data["prior"][0]], dlg.message.text()
    assert dlg.table.rowCount() == 1 and dlg.table.item(0, 0).text() == "2019-03-01"
    assert dlg.selected() is not None and dlg.b_retrieve.isEnabled()

    steps = []
    task = dlg.retrieve()
    task.progress.connect(lambda d, n, _t: steps.append((d, n)))
    assert dlg.b_cancel.isEnabled() and not dlg.b_retrieve.isEnabled()
    qtbot.waitUntil(lambda: bool(opened), timeout=20000)
    assert steps and steps[-1][0] == 6  # progress in images
    assert "Retrieved 6 images" in dlg.message.text()
    # the prior is the retrieved series in the study cache, opened by the prior job
    entry = dlg.cache.study(server.data["prior"][0])
    assert entry is not None and all(s.complete for s in entry.series)
    assert load_series(opened[0]).series_uid == server.data["prior"][1]
    prior_task = dlg.prior_task
    assert prior_task is not None and prior_task in win.tasks
    with qtbot.waitSignal(prior_task.ended, timeout=120_000):
        pass
    # the comparison ran on it: these 24-pixel test images are no chest CT, which the
    # prior job's check says (a real chest prior opens the compare view)
    assert "Prior not compared" in win.statusBar().currentMessage()
    assert "chest" in win.statusBar().currentMessage()
    dlg.close()
    win.close()


def test_find_prior_reports_a_missing_patient_id_in_one_line(server, qtbot,  # noqa: F811
                                                               tmp_path):
    from dicomgen import edit_series, write_ct_series

    from lungviewer.ui.prior_pacs import open_dialog

    pacs.save_nodes([_dimse(server)])
    files = write_ct_series(tmp_path / "anon", n_slices=3, rows=16, cols=16, patient_id="")
    edit_series(files, lambda ds, i: setattr(ds, "StudyDate", "20220101"))
    win = shown_window(qtbot)
    with qtbot.waitSignal(win.studyLoaded, timeout=10000):
        win.session.open(tmp_path / "anon")
    dlg = open_dialog(win)
    qtbot.waitUntil(lambda: not dlg.find_task.running, timeout=15000)
    assert dlg.message.text().startswith("⚠") and "\n" not in dlg.message.text()
    assert "no patient ID" in dlg.message.text()
    assert dlg.table.rowCount() == 0 and dlg.b_search.isEnabled()
    dlg.close()
    win.close()
