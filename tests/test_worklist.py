"""The worklist opens a study from a batch results database with its stored findings (the
CAD does not run again) and writes read / unread back. SYNTHETIC series (tests/batchgen.py);
the batch's task runs in this process (the Dask side is tests/test_batch.py)."""

from __future__ import annotations

import json

import pytest

from batchgen import write_chest
from conftest import shown_window


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    from lungviewer.batch.db import ResultsDB
    from lungviewer.batch.task import analyze_unit
    from lungviewer.batch.units import discover, model_versions

    root = tmp_path_factory.mktemp("wl") / "archive"
    write_chest(root / "A" / "ct", seed=3, patient_id="WL-0001", study_date="20260105")
    (root / "B" / "empty").mkdir(parents=True)
    units = discover(root)
    models = model_versions()
    path = root.parent / "results.sqlite"
    with ResultsDB(path) as db:
        db.mark(units, "pending", models)
        for u in units:
            db.record(u, analyze_unit(u.as_dict(), timeout=120), models)
    return path


def test_stored_findings_apply_only_to_the_same_input_and_models(results_db):
    from lungviewer.batch.db import ResultsDB
    from lungviewer.batch.task import stored_findings
    from lungviewer.study.dicom_series import load_series

    with ResultsDB(results_db) as db:
        row = next(r for r in db.rows() if r["status"] == "done")
    vol = load_series(row["folder"], row["series_uid"])
    found, why = stored_findings(row, vol)
    assert why == "" and len(found) == row["n_findings"] > 0
    assert found[0].score == pytest.approx(row["top_probability"], abs=1e-4)
    assert found[0].extent is None or len(found[0].extent) == 6
    assert stored_findings(row, vol, versions={"detector": "0" * 64}) == (
        None, "the CAD models changed since the batch ran")
    vol.positions = vol.positions + 1.0
    assert stored_findings(row, vol)[1] == "the series changed since the batch ran"


def test_worklist_opens_a_study_with_its_stored_findings(qtbot, results_db, monkeypatch):
    import lungviewer.session as session_mod
    from lungviewer.batch.db import ResultsDB
    from lungviewer.ui.worklist import open_worklist

    def no_cad(*a, **k):
        raise AssertionError("the CAD ran again although the stored findings apply")

    monkeypatch.setattr(session_mod, "study_findings", no_cad)
    win = shown_window(qtbot)
    wl = open_worklist(win, results_db)
    qtbot.addWidget(wl)
    assert [r["status"] for r in wl.rows] == ["done", "failed"]  # most suspicious first
    assert wl.table.item(0, 0).text() == "●"  # unread
    wl.status_box.setCurrentText("failed")
    assert [r["status"] for r in wl.rows] == ["failed"]
    wl.status_box.setCurrentText("all")
    wl.date_from.setText("2026-01-04")
    wl.refresh()
    assert [r["study_date"] for r in wl.rows] == ["2026-01-05"]
    wl.date_from.setText("")
    wl.refresh()

    stored = json.loads(wl.rows[0]["findings"])
    with qtbot.waitSignal(win.studyLoaded, timeout=60000):
        wl.open_row(0)
    qtbot.waitUntil(lambda: win.session.findings is not None, timeout=60000)
    got = win.session.findings
    assert [round(f.score, 6) for f in got] == [round(r["score"], 6) for r in stored]
    assert win.session.scan_result is not None
    assert len(win.session.reading.cad_marks) == len(stored)
    with ResultsDB(results_db) as db:
        assert db.rows("status = 'done'")[0]["read"] == 1
    qtbot.waitUntil(lambda: wl.table.item(0, 0).text() == "", timeout=5000)
    wl.table.selectRow(0)
    wl.unread_button.click()
    with ResultsDB(results_db) as db:
        assert db.rows("status = 'done'")[0]["read"] == 0
    qtbot.waitUntil(lambda: not win.busy, timeout=60000)
    wl.close()
    win.close()
