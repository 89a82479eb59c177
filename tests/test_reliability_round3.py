"""Issue 28 (reliability round 3): imported SEGs checked against the CT, the reading store
parsed within bounds and never overwritten, bounds on what a reading holds, one-line
export errors with nothing partial left, the anonymised copy moved into place when
complete, and ``analyze`` saying when its findings were not saved. Each test fails on the
code before the fix."""

from __future__ import annotations

import argparse
import errno
import json
import resource
import time
from pathlib import Path

import pydicom
import pytest
from test_export import make_reading, write_phantom
from test_reading_model import _full_reading

from lungviewer.reading import store
from lungviewer.reading.export_dicom import export_dicom
from lungviewer.reading.import_dicom import import_beside
from lungviewer.reading.model import (
    MAX_ITEMS,
    CadMark,
    Reading,
    ReadingLimitError,
    check_limits,
)
from lungviewer.study.dicom_series import load_series


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = write_phantom(tmp_path_factory.mktemp("r3") / "ct")
    return folder, load_series(folder)


def _export(argv: list[str]) -> int:
    from lungviewer.commands import export

    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers(dest="command"))
    return export.run(parser.parse_args(["export", *argv]))


# -- 1. a SEG is trusted only when it agrees with itself and with the CT ------------------------
def _seg_beside(ct, tmp_path) -> tuple[Path, Path]:
    folder, volume = ct
    study = tmp_path / "study"
    study.mkdir()
    for f in folder.iterdir():
        (study / f.name).symlink_to(f)
    res = export_dicom(make_reading(volume), volume, tmp_path / "exp", sr=False)
    return study, res.seg


@pytest.mark.parametrize("damage, words", [
    ("rows_cols", "Rows"),  # 300x212 declared over the real frames: would scramble the mask
    ("rows_cols_smaller", "does not match its Rows"),
    ("frames", "NumberOfFrames"),
    ("no_pixels", "no pixel data"),
    ("foreign_ref", "not in the loaded CT"),
    ("segment_number", "does not describe"),
])
def test_an_inconsistent_seg_is_refused_and_named(ct, tmp_path, damage, words):
    study, seg_path = _seg_beside(ct, tmp_path)
    volume = ct[1]
    ds = pydicom.dcmread(seg_path)
    if damage == "rows_cols":
        ds.Rows, ds.Columns = 300 * ds.Rows // 256 or 1, 212 * ds.Columns // 256 or 1
        ds.Rows, ds.Columns = int(ds.Rows), int(ds.Columns)
    elif damage == "rows_cols_smaller":
        ds.Rows, ds.Columns = int(ds.Rows) - 10, int(ds.Columns) + 5 - 20
    elif damage == "frames":
        ds.NumberOfFrames = int(ds.NumberOfFrames) + 3
    elif damage == "no_pixels":
        del ds.PixelData
    elif damage == "foreign_ref":
        src = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
        src.SourceImageSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    elif damage == "segment_number":
        fg = ds.PerFrameFunctionalGroupsSequence[0]
        if "SegmentIdentificationSequence" not in fg:
            fg = ds.SharedFunctionalGroupsSequence[0]
        fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 7
    ds.save_as(study / "seg.dcm", enforce_file_format=True)
    imp = import_beside(volume, study)
    assert imp.segments == []
    assert len(imp.messages) == 1 and "seg.dcm" in imp.messages[0]
    assert words in imp.messages[0], imp.messages


def test_a_consistent_seg_still_imports(ct, tmp_path):
    study, seg_path = _seg_beside(ct, tmp_path)
    (study / "seg.dcm").write_bytes(seg_path.read_bytes())
    imp = import_beside(ct[1], study)
    assert imp.messages == [] and len(imp.segments) == 1 and imp.segments[0].mask.any()


# -- 2. the reading store: bounded parse, kept aside, never overwritten --------------------------
def _deep(n: int) -> str:
    return "[" * n + "]" * n


def test_a_deeply_nested_field_keeps_the_rest_and_the_original(tmp_path):
    r = _full_reading()
    path = store.save_reading(r)
    d = json.loads(path.read_text())
    d["measurements"].append(json.loads("{}"))
    text = json.dumps(d).replace("{}", '{"kind": "ruler", "points": ' + _deep(200_000) + "}")
    path.write_text(text)
    t0 = time.perf_counter()
    got = store.open_reading(r.study_uid, r.series_uid)
    assert time.perf_counter() - t0 < 10
    assert got.reading is not None and got.writable
    assert len(got.reading.nodules) == 1 and len(got.reading.cad_marks) == 2
    assert len(got.reading.measurements) == 1  # the bad one left out, the good one kept
    assert got.aside is not None and got.aside.read_text() == text  # the original, unchanged
    assert "nested deeper" in got.messages[0]
    # the kept part was written back and reads cleanly
    again = store.open_reading(r.study_uid, r.series_uid)
    assert again.messages == [] and len(again.reading.nodules) == 1


def test_an_unreadable_reading_is_never_overwritten(ct, monkeypatch):
    from lungviewer.session import StudySession

    folder, volume = ct
    path = store.reading_path(volume.study_uid, volume.series_uid)
    path.write_text(_deep(200_000))  # depth bomb at the top: nothing can be kept
    monkeypatch.setattr(store, "_move_aside", lambda p: None)  # e.g. a read-only store
    s = StudySession()
    msgs: list[str] = []
    s.subscribe(lambda ev, p: msgs.append(p) if ev == "message" else None)
    s.open(folder)
    assert not s.reading_writable and s.reading.is_empty
    assert any("will not be overwritten" in m for m in msgs)
    s.set_note("a new note")
    assert path.read_text() == _deep(200_000)
    assert s.save_error and any("not saved" in m for m in msgs)


def test_an_unreadable_reading_is_moved_aside(ct):
    from lungviewer.session import StudySession

    folder, volume = ct
    path = store.reading_path(volume.study_uid, volume.series_uid)
    path.write_text(_deep(200_000))
    s = StudySession()
    s.open(folder)
    s.set_note("a new note")
    asides = list(path.parent.glob(path.name + ".corrupt-*"))
    assert len(asides) == 1 and asides[0].read_text() == _deep(200_000)
    assert store.load_reading(volume.study_uid, volume.series_uid).note == "a new note"


# -- 3. bounds on what a reading holds ------------------------------------------------------------
def _marks(n: int, accepted: int | None = None) -> list[CadMark]:
    return [CadMark(f"c{i + 1}", i % 20, 10 + i % 50, 10 + (i // 50) % 50, 4.0, 0.5,
                    status="accepted" if accepted is None or i < accepted else "unreviewed")
            for i in range(n)]


def test_a_huge_saved_reading_keeps_its_first_marks_quickly(tmp_path):
    r = Reading("1.2.826.0.1.1", "1.2.826.0.1.2")
    big = Reading("1.2.826.0.1.1", "1.2.826.0.1.2", cad_marks=_marks(66_667))
    path = store.reading_path(r.study_uid, r.series_uid)
    path.write_text(big.to_json())
    t0 = time.perf_counter()
    got = store.open_reading(r.study_uid, r.series_uid)
    assert time.perf_counter() - t0 < 15
    assert len(got.reading.cad_marks) == MAX_ITEMS["cad_marks"]
    assert "66667 CAD marks" in got.messages[0]
    with pytest.raises(ReadingLimitError, match="CAD marks"):
        check_limits(big)


def test_a_reading_over_its_bounds_is_refused_by_the_export(ct, tmp_path, capsys):
    folder, volume = ct
    big = make_reading(volume)
    big.cad_marks = _marks(66_667, accepted=5)
    store.reading_path(big.study_uid, big.series_uid).write_text(big.to_json())  # by hand
    t0 = time.perf_counter()
    rc = _export([str(folder), "--out", str(tmp_path / "o"), "--sr", "--json"])
    assert time.perf_counter() - t0 < 30  # was still running after 12 minutes
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["cad_marks"]) == MAX_ITEMS["cad_marks"]
    assert any("66667 CAD marks" in m for m in summary["messages"])
    with pytest.raises(ReadingLimitError, match=f"more than the {MAX_ITEMS['cad_marks']}"):
        export_dicom(big, volume, tmp_path / "o2")
    r = Reading.for_volume(volume)
    from lungviewer.reading.measurements import Measurement

    r.set_measurements([Measurement("ruler", "axial", 1, [(1, 1), (2, 2)])
                        for _ in range(MAX_ITEMS["measurements"])])
    with pytest.raises(ReadingLimitError, match="measurements"):
        r.add_measurement(Measurement("ruler", "axial", 1, [(1, 1), (2, 2)]))
    with pytest.raises(ReadingLimitError, match="note"):
        r.set_note("x" * 30_000)


def test_rescanning_many_marks_is_linear():
    r = Reading("1.2", "1.3", cad_marks=_marks(MAX_ITEMS["cad_marks"]))
    t0 = time.perf_counter()
    r.set_cad_marks(_marks(MAX_ITEMS["cad_marks"]))
    assert time.perf_counter() - t0 < 2.0
    assert all(m.status == "accepted" for m in r.cad_marks)


# -- 4. write errors: one line, no traceback, nothing partial ------------------------------------
def test_a_file_size_limit_is_one_line_and_leaves_nothing(ct, tmp_path, capsys):
    folder, volume = ct
    store.save_reading(make_reading(volume))
    out = tmp_path / "fresh" / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # EFBIG inside pydicom
    try:
        rc = _export([str(folder), "--out", str(out), "--seg", "--sr", "--lung-mask"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "could not be written" in err and "larger than allowed" in err
    assert not (tmp_path / "fresh").exists()  # the folders this run made are gone


def test_an_existing_export_survives_a_full_disk(ct, tmp_path, capsys, monkeypatch):
    folder, volume = ct
    store.save_reading(make_reading(volume))
    out = tmp_path / "out"
    assert _export([str(folder), "--out", str(out), "--sr"]) == 0
    before = (out / "sr.dcm").read_bytes()
    capsys.readouterr()

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", full)
    rc = _export([str(folder), "--out", str(out), "--sr", "--force"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == (f"lungviewer export: sr.dcm could not be written in "
                                       f"{out}: the disk is full (No space left on device)")
    assert (out / "sr.dcm").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["sr.dcm"]


def test_exported_files_follow_the_umask(ct, tmp_path):
    import os

    folder, volume = ct
    old = os.umask(0o022)
    try:
        res = export_dicom(make_reading(volume), volume, tmp_path / "o")
    finally:
        os.umask(old)
    for p in (res.sr, res.seg):
        assert p.stat().st_mode & 0o777 == 0o644


# -- 5. the anonymised copy appears only when complete --------------------------------------------
def test_a_failed_anonymised_copy_leaves_nothing(ct, tmp_path, capsys, monkeypatch):
    folder, volume = ct
    store.save_reading(make_reading(volume))
    out = tmp_path / "share"
    out.mkdir()
    real = pydicom.Dataset.save_as
    calls = {"n": 0}

    def fails_later(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pydicom.Dataset, "save_as", fails_later)
    rc = _export([str(folder), "--out", str(out), "--anonymize", "--sr"])
    err = capsys.readouterr().err
    assert rc == 1 and "the disk is full" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []  # no half copy, no staging folder
    monkeypatch.setattr(pydicom.Dataset, "save_as", real)
    assert _export([str(folder), "--out", str(out), "--anonymize", "--sr"]) == 0  # no --force
    assert len(list((out / "anonymized").glob("CT*.dcm"))) == volume.n_slices


# -- 6. analyze says when its findings were not saved ---------------------------------------------
def test_analyze_with_a_read_only_store_says_so(ct, tmp_path, capsys, monkeypatch):
    from lungviewer.cad.engine import CadEngine
    from lungviewer.commands import analyze

    engine = CadEngine.load(device="cpu")
    monkeypatch.setattr(CadEngine, "load", classmethod(lambda cls, *a, **k: engine))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LUNGVIEWER_DATA_DIR", str(blocker / "data"))  # cannot be created
    parser = argparse.ArgumentParser()
    analyze.add_parser(parser.add_subparsers(dest="command"))
    rc = analyze.run(parser.parse_args(["analyze", str(ct[0]), "--json", "--device", "cpu"]))
    cap = capsys.readouterr()
    assert rc == analyze.NOT_SAVED == 3
    assert json.loads(cap.out)["saved"] is False
    assert "not saved" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_the_session_reports_a_bound_instead_of_raising(ct):
    from lungviewer.session import StudySession

    s = StudySession(autosave=False)
    msgs: list[str] = []
    s.subscribe(lambda ev, p: msgs.append(p) if ev == "message" else None)
    s.open(ct[0])
    s.set_note("x" * 30_000)  # a Qt slot: must not raise
    assert s.reading.note == "" and any("Not recorded" in m and "note" in m for m in msgs)


def test_the_viewers_export_fails_in_one_line(ct, tmp_path):
    from lungviewer.fileio import WriteError
    from lungviewer.session import StudySession

    s = StudySession(autosave=False)
    s.open(ct[0])
    s.reading = make_reading(ct[1])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(WriteError) as err:
        from lungviewer.session import run

        run(s.export_job(blocker / "out", sr=True, seg=False, pdf=False))
    line = str(err.value)
    assert "\n" not in line and "could not be written" in line and "not a folder" in line
