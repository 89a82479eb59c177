"""Issue 24 point 3: a saved reading is keyed by the series *and* its content (its slices'
UIDs and positions). Opened on other images of the series, it is offered, not applied;
taken over, it is moved by SOPInstanceUID and nothing is drawn at a slice the volume
lacks. A single-slice series says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_export import make_reading, write_phantom

from lungviewer.reading import store
from lungviewer.reading.content import content_key, fit_reading
from lungviewer.session import StudySession
from lungviewer.study.dicom_series import load_series


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = write_phantom(tmp_path_factory.mktemp("content") / "ct")
    return folder, load_series(folder)


def _part(full_dir: Path, dest: Path, ks) -> Path:
    dest.mkdir()
    for k in ks:
        (dest / f"CT{k:03d}.dcm").symlink_to(full_dir / f"CT{k:03d}.dcm")
    return dest


def _session(folder) -> tuple[StudySession, list[str]]:
    s = StudySession()
    msgs: list[str] = []
    s.subscribe(lambda ev, p: msgs.append(p) if ev == "message" else None)
    s.open(folder)
    return s, msgs


def test_a_reading_on_other_images_of_the_series_is_offered_not_applied(full, tmp_path,
                                                                       capsys):
    folder, volume = full
    saved = make_reading(volume)  # nodule around slice 12, marks on slices 5 and 18
    store.save_reading(saved)
    series_file = store.reading_path(volume.study_uid, volume.series_uid)
    before = series_file.read_text()
    part = _part(folder, tmp_path / "part", range(0, 8))  # the same series, 8 slices
    s, msgs = _session(part)
    assert s.volume.series_uid == volume.series_uid and s.volume.n_slices == 8
    assert s.reading.is_empty and s.offered_reading is not None
    assert any("offered" in m and "other images" in m for m in msgs)
    from test_reliability_round3 import _export

    assert _export([str(part), "--out", str(tmp_path / "o"), "--sr"]) == 1  # not silently
    assert "made on other images" in capsys.readouterr().err
    s.set_note("read on the partial folder")  # saved beside, never over the series' file
    assert series_file.read_text() == before
    s2, _ = _session(part)  # this folder's own reading comes back as saved
    assert s2.reading.note == "read on the partial folder"
    s3, _ = _session(folder)  # and the whole series still has its own
    assert len(s3.reading.nodules) == 1 and s3.offered_reading is None
    # taken over: only what lies on slices of the folder, moved by SOPInstanceUID
    msgs = s.apply_offered_reading()
    assert [m.slice for m in s.reading.cad_marks] == [5]
    assert s.reading.nodules == [] and "nodule(s)" in msgs[0] and "CAD mark(s)" in msgs[0]


def test_taken_over_items_move_to_the_slice_with_the_same_uid(full, tmp_path):
    folder, volume = full
    saved = make_reading(volume)
    part = load_series(_part(folder, tmp_path / "mid", range(8, 20)))  # slices 8..19
    fitted = fit_reading(saved, part)
    [n] = fitted.reading.nodules
    assert n.box[0] == saved.nodules[0].box[0] - 8
    assert n.mask.offset[0] == saved.nodules[0].mask.offset[0] - 8
    assert (n.mask.full(part.shape).sum() == saved.nodules[0].mask.full(volume.shape).sum())
    assert [m.slice for m in fitted.reading.cad_marks] == [18 - 8]
    assert all(0 <= m.slice < part.n_slices for m in fitted.reading.cad_marks)
    assert fitted.dropped == ["1 CAD mark(s)"]


def test_a_reading_saved_before_content_keys_is_applied_when_it_fits(full):
    folder, volume = full
    old = make_reading(volume)
    old.content_key, old.slice_uids = "", []
    store.save_reading(old)
    s, _ = _session(folder)
    assert len(s.reading.nodules) == 1 and s.offered_reading is None
    assert s.reading.content_key == content_key(volume)


def test_a_single_slice_series_warns(full, tmp_path):
    folder, _ = full
    one = load_series(_part(folder, tmp_path / "one", [12]))
    assert any("single slice" in w for w in one.warnings)
