"""The Query/Retrieve and Send dialogs against the loopback Orthanc of test_pacs: a refusing
node is a one-line message and the dialog stays usable; search, series, retrieve by C-GET
and the series opens in the viewer; the GUI keeps running while a PACS does not answer and
cancel ends the wait; send reports per object and retries the failed ones."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import shown_window
from PySide6.QtCore import QTimer
from test_pacs import ME, _dimse, fake_scp, server  # noqa: F401 - fixtures

from lungviewer import pacs

pytestmark = pytest.mark.gui


def test_query_retrieve_opens_the_series_and_survives_a_refusal(server, qtbot):  # noqa: F811
    from lungviewer.ui.pacs_dialog import PacsDialog

    good = _dimse(server)
    bad = pacs.Node("refusing", host="127.0.0.1", port=server.dicom_port, aet="WRONG",
                    calling_aet=ME)
    pacs.save_nodes([good, bad])
    win = shown_window(qtbot)
    win.act_pacs.trigger()
    dlg = win._pacs_dialog
    assert isinstance(dlg, PacsDialog) and dlg.isVisible()
    assert win.act_pacs.shortcut().toString() == "Ctrl+Shift+O"

    dlg.picker.combo.setCurrentIndex(1)
    dlg.picker.verify()
    # the answer comes at once; the wait is long only so that a loaded CI machine is no failure
    qtbot.waitUntil(lambda: "refused the association" in dlg.picker.status.text(), timeout=30000)
    dlg.f_id.setText("LV-PAT-A*")
    dlg.search()
    qtbot.waitUntil(lambda: "refused" in dlg.message.text(), timeout=30000)
    assert dlg.b_search.isEnabled()  # still usable

    dlg.picker.combo.setCurrentIndex(0)
    dlg.picker.verify()
    qtbot.waitUntil(lambda: "answered" in dlg.picker.status.text(), timeout=10000)
    dlg.f_mod.setCurrentText("CT")
    dlg.search()
    qtbot.waitUntil(lambda: dlg.t_studies.rowCount() == 2, timeout=10000)
    assert dlg.t_studies.item(0, 0).text() == "2021-04-15"
    dlg.t_studies.selectRow(0)
    qtbot.waitUntil(lambda: dlg.t_series.rowCount() == 1, timeout=10000)
    assert dlg.t_series.item(0, 3).text() == "8" and dlg.t_series.item(0, 4).text() == "1.25"

    with qtbot.waitSignal(dlg.seriesReady, timeout=20000) as got:
        dlg.retrieve()
    assert got.args[1] == server.data["current"][1]
    qtbot.waitUntil(lambda: win.volume is not None and win.volume.n_slices == 8, timeout=20000)
    assert "Retrieved 8 images" in dlg.message.text()
    cached = dlg.show_cache()
    assert cached.table.rowCount() == 1 and cached.table.item(0, 5).text() == "complete"
    cached.table.selectRow(0)
    with qtbot.waitSignal(dlg.seriesReady, timeout=5000) as again:
        cached.open_selected()
    assert again.args[1] == server.data["current"][1]
    qtbot.waitUntil(lambda: not win.busy, timeout=20000)  # reopened before it goes
    cached.remove_selected()
    assert cached.table.rowCount() == 0 and dlg.cache.list() == []
    cached.close()
    # closing the window mid-retrieve stops the retrieve (its task is the window's too)
    task = dlg.retrieve()
    assert task in win.tasks
    win.close()
    assert task.wait(15000)  # its thread has ended
    dlg.close()


def test_gui_keeps_running_while_the_pacs_is_silent_and_cancel_ends_it(qtbot):
    from lungviewer.ui.pacs_dialog import PacsDialog

    with socket.socket() as silent:  # accepts TCP, never answers DICOM
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        pacs.save_nodes([pacs.Node("silent", host="127.0.0.1", port=silent.getsockname()[1],
                                   aet="X", timeout=2)])
        dlg = PacsDialog()
        qtbot.addWidget(dlg)
        dlg.show()
        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start(10)
        task = dlg.search()
        assert task is not None and not dlg.b_search.isEnabled() and dlg.b_cancel.isEnabled()
        qtbot.wait(300)
        dlg.cancel()
        qtbot.waitUntil(lambda: dlg.b_search.isEnabled(), timeout=10000)
        timer.stop()
        assert "cancelled" in dlg.message.text().lower()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert len(ticks) > 15 and max(gaps) < 0.25  # the event loop never stalled
        dlg.close()


def test_opening_a_study_does_not_stop_the_dialogs_query(qtbot, tmp_path):
    """The dialog's tasks are also the window's (closing it stops them), but they are not
    the open study's work: opening a study (e.g. the retrieved one, or another local one)
    while a query waits must not cancel it."""
    from dicomgen import write_ct_series

    with socket.socket() as silent:  # accepts TCP, never answers DICOM
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        pacs.save_nodes([pacs.Node("silent", host="127.0.0.1", port=silent.getsockname()[1],
                                   aet="X", timeout=3)])
        write_ct_series(tmp_path / "ct", n_slices=4, rows=32, cols=32)
        win = shown_window(qtbot)
        win.act_pacs.trigger()
        dlg = win._pacs_dialog
        task = dlg.search()
        assert task in win.tasks and task.running
        with qtbot.waitSignal(win.studyLoaded, timeout=20000):
            win.open_study(tmp_path / "ct")
        assert not task.is_cancelled and task.running
        dlg.cancel()  # the dialog's own Cancel still ends it
        qtbot.waitUntil(lambda: dlg.b_search.isEnabled(), timeout=10000)
        assert "cancelled" in dlg.message.text().lower()
        task = dlg.search()
        win.close()  # and closing the window still stops it
        assert task.is_cancelled and task.wait(10000)
        dlg.close()


def test_send_dialog_reports_per_object_and_retries(server, qtbot, tmp_path):  # noqa: F811
    from lungviewer.ui.pacs_dialog import SendDialog

    pacs.save_nodes([_dimse(server)])
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    good = server.data["b"][2][0]
    dlg = SendDialog([good, junk])
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.send()
    qtbot.waitUntil(lambda: "1 of 2" in dlg.message.text(), timeout=10000)
    assert dlg.table.item(0, 1).text() == "stored" and dlg.table.item(1, 1).text() == "FAILED"
    qtbot.waitUntil(dlg.b_retry.isEnabled, timeout=5000)
    junk.write_bytes(good.read_bytes())  # fixed: the retry sends only the failed one
    dlg.send(only_failed=True)
    qtbot.waitUntil(lambda: "1 of 1" in dlg.message.text(), timeout=10000)
    assert dlg.table.item(1, 1).text() == "stored"
    dlg.close()


def test_send_reading_exports_sr_seg_and_the_pdf_and_sends_them(server, qtbot,  # noqa: F811
                                                                  tmp_path):
    from test_export import make_reading, write_phantom

    from lungviewer.session import StudySession, run
    from lungviewer.study.dicom_series import load_series
    from lungviewer.ui.pacs_dialog import SendDialog, reading_for_pacs_job

    ct = write_phantom(tmp_path / "ct")
    server.upload(sorted(ct.glob("*.dcm")))
    session = StudySession(autosave=False)
    vol = session.set_volume(load_series(ct), ct)
    session.reading = make_reading(vol)
    files = run(reading_for_pacs_job(session, tmp_path / "outbox"))
    assert sorted(f.name for f in files) == ["report_pdf.dcm", "seg.dcm", "sr.dcm"]
    pacs.save_nodes([_dimse(server)])
    dlg = SendDialog(files)
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.with_pdf.isVisible() and len(dlg.files) == 2  # the PDF is optional
    dlg.with_pdf.setChecked(True)
    assert dlg.table.rowCount() == 3
    dlg.send()
    qtbot.waitUntil(lambda: "3 of 3" in dlg.message.text(), timeout=15000)
    mods = sorted(s.modality for s in pacs.find_series(_dimse(server), vol.study_uid))
    assert mods == ["CT", "DOC", "SEG", "SR"]
    dlg.close()


def test_ten_thousand_matches_are_paged_in_the_dialog(fake_scp, qtbot):  # noqa: F811
    from lungviewer.ui.pacs_dialog import PAGE, PacsDialog

    pacs.save_nodes([fake_scp["node"]])
    dlg = PacsDialog()
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.f_mod.setCurrentText("")
    dlg.search()
    qtbot.waitUntil(lambda: dlg.t_studies.rowCount() == PAGE, timeout=15000)
    assert dlg.b_next.isEnabled() and not dlg.b_prev.isEnabled()
    assert "more" in dlg.page_label.text()
    dlg.b_next.click()
    qtbot.waitUntil(lambda: dlg.page.offset == PAGE and dlg.b_search.isEnabled(), timeout=15000)
    assert dlg.t_studies.rowCount() == PAGE and dlg.b_prev.isEnabled()
    assert dlg.page_label.text().startswith(f"Studies {PAGE + 1}–{2 * PAGE}")
    dlg.close()
