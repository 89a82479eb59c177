"""The reading model (marks, box scores, nodules, measurements, note) and its store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lungviewer.reading.model import (
    SCHEMA_VERSION,
    BoxScore,
    CadMark,
    NoduleRecord,
    PackedMask,
    Reading,
    model_version,
)
from lungviewer.reading.store import load_reading, reading_path, readings_dir, save_reading


def _finding(slice_, row, col, d=6.0, score=0.5):
    return SimpleNamespace(slice=slice_, row=row, col=col, diameter_mm=d, score=score,
                           cls="nodule")


def _nodule(mask: np.ndarray, offset=(3, 10, 20)) -> NoduleRecord:
    return NoduleRecord("", (5, 10, 20, 30, 40), 123.4, 8.2, 6.1, 7.15, -12.5, "solid",
                        {"category": "3", "rule": "solid, 7.2 mm mean diameter -> 3"}, 5,
                        PackedMask.from_array(mask, offset), note="reader: smooth margin")


def _full_reading() -> Reading:
    from lungviewer.reading.measurements import Measurement

    rng = np.random.default_rng(1)
    r = Reading("1.2.826.0.1.1", "1.2.826.0.1.2", synthetic=True)
    r.set_cad_marks([_finding(10, 50, 60, score=0.9), _finding(40, 100, 120, score=0.3)])
    r.accept("c1")
    r.reject("c2")
    r.add_box_score(BoxScore((5, 10, 20, 30, 40), [0.1, 0.2, 0.3, 0.2, 0.2],
                             ["benign", "primary lung cancer", "metastatic"], [0.5, 0.3, 0.2],
                             0.8, "multitask abc, detector def", "TCIA diagnoses"))
    r.add_nodule(_nodule(rng.random((4, 7, 9)) > 0.5))
    r.add_measurement(Measurement("ruler", "axial", 5, [(10.0, 10.0), (10.0, 30.0)]))
    r.set_note("one nodule; follow-up suggested")
    return r


def test_json_round_trip_keeps_everything():
    r = _full_reading()
    text = r.to_json()
    back = Reading.from_json(text)
    assert back.to_dict() == r.to_dict()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert [m.status for m in back.cad_marks] == ["accepted", "rejected"]
    assert back.measurements[0].points == r.measurements[0].points
    assert back.box_scores[0].malignancy_expected == pytest.approx(3.2)


def test_packed_mask_is_exact_and_placed_at_its_offset():
    rng = np.random.default_rng(0)
    m = rng.random((5, 11, 13)) > 0.6
    p = PackedMask.from_dict(json.loads(json.dumps(PackedMask.from_array(m, (2, 3, 4))
                                                   .to_dict())))
    assert np.array_equal(p.to_array(), m)
    full = p.full((10, 20, 20))
    assert full.sum() == m.sum() and np.array_equal(full[2:7, 3:14, 4:17], m)
    # a block reaching past the volume's edge is cut, not wrapped
    edge = PackedMask.from_array(np.ones((3, 3, 3), bool), (8, 18, 18)).full((10, 20, 20))
    assert edge.sum() == 2 * 2 * 2


def test_accept_reject_and_rescan_keep_the_verdicts():
    r = Reading("1.2.3")
    marks = r.set_cad_marks([_finding(10, 50, 60, score=0.4), _finding(20, 80, 90, score=0.9)])
    assert [m.id for m in marks] == ["c1", "c2"]  # highest score first
    assert marks[0].slice == 20
    r.reject("c1")
    r.accept("c2")
    # a re-scan finds the same two spots (shifted by a pixel) and one new one
    again = r.set_cad_marks([_finding(21, 81, 90, score=0.8), _finding(10, 50, 61, score=0.5),
                             _finding(60, 10, 10, score=0.2)])
    by_slice = {m.slice: m for m in again}
    assert by_slice[10].status == "accepted" and by_slice[10].id == "c2"
    assert by_slice[21].status == "rejected" and by_slice[21].id == "c1"
    assert by_slice[60].status == "unreviewed" and by_slice[60].id == "c3"
    assert [m.id for m in r.accepted_marks()] == ["c2"]
    with pytest.raises(KeyError):
        r.accept("c99")
    with pytest.raises(ValueError, match="status"):
        r.set_status("c1", "maybe")


def test_nodule_from_a_mark_follows_the_marks_verdict():
    r = Reading("1.2.3")
    r.set_cad_marks([_finding(5, 20, 30)])
    n = _nodule(np.ones((2, 2, 2), bool))
    n.source, n.cad_mark_id = "cad", "c1"
    r.add_nodule(n)
    r.reject("c1")
    assert r.accepted_nodules() == []
    r.accept("c1")
    assert r.accepted_nodules() == [n]


def test_add_nodule_replaces_the_same_box_and_keeps_its_note():
    r = Reading("1.2.3")
    first = r.add_nodule(_nodule(np.ones((2, 2, 2), bool)))
    again = _nodule(np.ones((3, 3, 3), bool))
    again.note = ""
    r.add_nodule(again)
    assert len(r.nodules) == 1 and r.nodules[0].id == first.id
    assert r.nodules[0].note == "reader: smooth margin" and r.nodules[0].mask.voxels == 27


def test_box_score_from_the_engines_scores_names_the_model_version():
    manifest = json.loads((Path(__file__).parents[1] / "model_weights" / "manifest.json")
                          .read_text())
    version = model_version(manifest)
    assert manifest["models"]["detector"]["sha256"][:12] in version
    scores = SimpleNamespace(box=(3, 1, 2, 9, 10), malignancy_probs=np.full(5, 0.2),
                             disease_names=["a", "b"], disease_probs=np.array([0.25, 0.75]),
                             nodule_prob=0.6)
    s = BoxScore.from_scores(scores, manifest)
    assert s.model_version == version and s.malignancy_expected == pytest.approx(3.0)
    assert BoxScore.from_dict(s.to_dict()) == s


def test_nodule_from_a_segmentation():
    from lungviewer.reading.volumetry import segment_nodule

    zz, yy, xx = np.mgrid[:20, :48, :48]
    hu = np.full((20, 48, 48), -850, np.int16)
    hu[((zz - 10) * 2.0) ** 2 + ((yy - 24) * 0.8) ** 2 + ((xx - 24) * 0.8) ** 2 <= 25] = 40
    seg = segment_nodule(hu, (2.0, 0.8, 0.8), (10, 12, 12, 37, 37))
    n = NoduleRecord.from_segmentation(seg)
    d = seg.as_dict()
    assert n.volume_mm3 == d["volume_mm3"] and n.long_axis_mm == d["long_axis_mm"]
    assert n.category == d["lung_rads"]["category"] and n.type == d["type"]
    assert np.array_equal(n.mask.full(hu.shape), seg.full_mask(hu.shape))
    assert n.long_axis_points == [list(p) for p in seg.long_axis_points]
    assert NoduleRecord.from_dict(json.loads(json.dumps(n.to_dict()))) == n


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"measurements": []}), "not a lungviewer reading"),
    (json.dumps([1, 2]), "not a lungviewer reading"),
    (json.dumps({"format": "lungviewer-reading", "schema_version": 99, "study_uid": "1"}),
     "schema version 99"),
    (json.dumps({"format": "lungviewer-reading", "schema_version": 1}), "study_uid"),
])
def test_bad_or_foreign_json_is_a_clear_value_error(text, match):
    with pytest.raises(ValueError, match=match):
        Reading.from_json(text)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["cad_marks"][0].update(status="maybe"), "status"),
    (lambda d: d["cad_marks"][0].update(row="x"), "row"),
    (lambda d: d["nodules"][0].update(box=[1, 2, 3]), "box"),
    (lambda d: d["nodules"][0]["mask"].update(data="!!!"), "cannot be decoded"),
    (lambda d: d["nodules"][0]["mask"].update(voxels=1), "voxel count"),
    (lambda d: d["nodules"][0]["mask"].update(shape=[100000, 1000, 1000]), "too large"),
    (lambda d: d["box_scores"][0].update(malignancy=[0.5, 0.5]), "malignancy"),
    (lambda d: d["measurements"][0].update(kind="laser"), "measurement 1"),
    (lambda d: d.update(nodules={}), "nodules"),
])
def test_damaged_fields_name_the_problem(edit, match):
    d = _full_reading().to_dict()
    edit(d)
    with pytest.raises(ValueError, match=match):
        Reading.from_dict(d)


def test_store_round_trip_under_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGVIEWER_DATA_DIR", str(tmp_path / "data"))
    r = _full_reading()
    assert load_reading(r.study_uid, r.series_uid) is None
    path = save_reading(r)
    assert path.parent == readings_dir() and readings_dir().is_relative_to(tmp_path / "data")
    assert r.study_uid not in path.name and r.series_uid not in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    back = load_reading(r.study_uid, r.series_uid)
    assert back is not None and back.to_dict() == r.to_dict()
    # another series of the same study has its own reading
    assert load_reading(r.study_uid, "1.2.826.0.1.99") is None
    assert reading_path(r.study_uid, "1.2.826.0.1.99") != path


def test_a_corrupt_store_file_is_moved_aside(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LUNGVIEWER_DATA_DIR", str(tmp_path / "data"))
    r = _full_reading()
    path = save_reading(r)
    path.write_text('{"format": "lungviewer-reading", "schema_version": 1, "study_uid": 5}')
    with caplog.at_level(logging.WARNING):
        assert load_reading(r.study_uid, r.series_uid) is None
    assert not path.exists()
    aside = [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert "could not be read" in caplog.text and r.study_uid not in caplog.text
    # the next save starts clean
    save_reading(Reading(r.study_uid, r.series_uid))
    assert load_reading(r.study_uid, r.series_uid).is_empty


def test_cad_mark_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="status"):
        CadMark("c1", 1, 2.0, 3.0, 4.0, 0.5, status="maybe")
