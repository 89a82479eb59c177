"""Exports of a reading: DICOM SEG and SR (read back with highdicom and pydicom, numbers
compared with the model's), their import beside the CT, the PDF report, the anonymised
copy and the ``export`` command."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomgen import make_ct_slice
from pydicom.uid import generate_uid

from lungviewer.reading.export_dicom import (
    CAD_NAME,
    CAVEAT,
    ExportError,
    export_dicom,
    export_seg,
    read_sources,
)
from lungviewer.reading.import_dicom import import_beside
from lungviewer.reading.model import BoxScore, NoduleRecord, Reading
from lungviewer.study.dicom_series import load_series

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"
SHAPE = (24, 80, 80)
SPACING = (2.0, 0.8, 0.8)
CENTRE = (12, 40, 36)
BOX = (12, 30, 26, 51, 47)  # the sphere's box on its middle slice
NAME = "DOE^JANE"


def _phantom_hu(shape=SHAPE, spacing=SPACING, centre=CENTRE, radius_mm=5.0) -> np.ndarray:
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, spacing))
    hu = np.full(shape, -850, np.int16)
    hu[d2 <= radius_mm ** 2] = 40
    return hu


def write_phantom(folder: Path, *, spacing=SPACING, shape=SHAPE, study_uid=None,
                  frame_uid=None, description="PHANTOM") -> Path:
    """A small CT series (lung-like background, one 10 mm solid sphere) with a frame of
    reference, so SEG/SR can reference it."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = _phantom_hu(shape, spacing)
    series, study = generate_uid(), study_uid or generate_uid()
    frame = frame_uid or generate_uid()
    for k in range(shape[0]):
        ds = make_ct_slice(k=k, z=-50.0 + k * spacing[0], rows=shape[1], cols=shape[2],
                           spacing_yx=spacing[1:], thickness=spacing[0], series_uid=series,
                           study_uid=study, instance_number=k + 1, description=description,
                           patient_name=NAME, hu=hu[k])
        ds.FrameOfReferenceUID = frame
        ds.save_as(folder / f"CT{k:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("phantom") / "ct")


@pytest.fixture(scope="module")
def volume(phantom_dir):
    return load_series(phantom_dir)


def make_reading(volume) -> Reading:
    from lungviewer.reading.volumetry import segment_nodule

    r = Reading.for_volume(volume)
    seg = segment_nodule(volume.hu, volume.spacing, BOX)
    r.add_nodule(NoduleRecord.from_segmentation(seg, note="reader: smooth margin"))
    r.add_box_score(BoxScore(BOX, [0.05, 0.15, 0.4, 0.3, 0.1],
                             ["benign", "primary lung cancer", "metastatic"], [0.6, 0.3, 0.1],
                             0.87, "multitask abc123, detector def456", "test label set"))
    r.set_cad_marks([SimpleNamespace(slice=5, row=20, col=60, diameter_mm=4.0, score=0.7,
                                     cls="nodule"),
                     SimpleNamespace(slice=18, row=60, col=20, diameter_mm=5.0, score=0.4,
                                     cls="nodule")])
    r.accept("c1")
    r.reject("c2")
    r.set_note("one solid nodule")
    return r


@pytest.fixture(scope="module")
def exported(volume, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    reading = make_reading(volume)
    lung = volume.hu < -500
    res = export_dicom(reading, volume, out, lung_mask=lung)
    return SimpleNamespace(reading=reading, res=res, out=out, lung=lung)


def _num(group, scheme: str, value: str) -> float:
    for m in group.get_measurements():
        if (m.name.scheme_designator, m.name.value) == (scheme, value):
            return float(m.value)
    raise AssertionError(f"no measurement {scheme} {value}")


def test_seg_reads_back_with_the_nodule_and_the_lung(exported, volume):
    seg_path = exported.res.seg
    raw = pydicom.dcmread(seg_path)
    assert raw.Modality == "SEG" and raw.SegmentationType == "BINARY"
    assert raw.FrameOfReferenceUID == read_sources(volume)[0].FrameOfReferenceUID
    refs = {r.ReferencedSOPInstanceUID for s in raw.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence}
    assert refs <= set(volume.sop_uids)
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 2
    assert seg.get_segment_description(1).segment_label == "Nodule n1"
    assert seg.get_segment_description(2).segmented_property_type.meaning == "Lung"
    px = seg.get_pixels_by_source_instance(volume.sop_uids, assert_missing_frames_are_empty=True)
    nodule = exported.reading.nodules[0].mask.full(volume.shape)
    assert np.array_equal(px[..., 0] > 0, nodule)
    assert np.array_equal(px[..., 1] > 0, exported.lung)


def test_sr_numbers_are_the_models(exported, volume):
    n = exported.reading.nodules[0]
    score = exported.reading.box_scores[0]
    sr = hd.sr.srread(exported.res.sr)
    assert pydicom.dcmread(exported.res.sr).Modality == "SR"
    report = sr.content
    vol_groups = report.get_volumetric_roi_measurement_groups()
    planar = report.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in vol_groups] == ["Nodule n1"]
    assert sorted(str(g.tracking_identifier) for g in planar) == ["CAD mark c1",
                                                                   "Nodule n1 axial"]
    g = vol_groups[0]
    assert _num(g, "SCT", "118565006") == pytest.approx(n.volume_mm3)
    assert _num(g, "DCM", "112181") == pytest.approx(n.mean_hu)
    for i, p in enumerate(score.malignancy):
        assert _num(g, "99LUNGVIEWER", f"MALP{i + 1}") == pytest.approx(p)
    assert _num(g, "99LUNGVIEWER", "MALEXP") == pytest.approx(score.malignancy_expected)
    assert _num(g, "99LUNGVIEWER", "NODPROB") == pytest.approx(score.nodule_probability)
    axial = next(p for p in planar if str(p.tracking_identifier).endswith("axial"))
    assert _num(axial, "SCT", "103339001") == pytest.approx(n.long_axis_mm)
    assert _num(axial, "SCT", "103340004") == pytest.approx(n.short_axis_mm)
    assert _num(axial, "SCT", "81827009") == pytest.approx(n.mean_diameter_mm)
    axis_sop = axial.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert axis_sop == volume.sop_uids[n.axis_slice]
    quals = {q.name.value: q.value for q in g.get_qualitative_evaluations()}
    assert quals["LUNGRADS"].value == f"LR-{n.category}"
    # the volumetric group references the SEG's nodule segment
    rs = g.referenced_segment
    seg = pydicom.dcmread(exported.res.seg)
    assert rs.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert list(rs.referenced_segment_numbers) == [exported.res.segments["n1"]]
    # the algorithm's observer context and caveat; the rejected mark is not reported
    device = [item for item in sr.ContentSequence
              if item.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer Name"]
    assert device and device[0].TextValue == CAD_NAME
    texts = [item.TextValue for item in sr.ContentSequence if item.ValueType == "TEXT"]
    assert any(CAVEAT in t for t in texts)
    assert "one solid nodule" in texts
    assert "CAD mark c2" not in str(sr)
    assert sr.ContentQualification == "RESEARCH"


def test_import_beside_the_ct_gives_the_reading_back(exported, volume, phantom_dir, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(phantom_dir, folder)
    shutil.copy(exported.res.seg, folder / "seg.dcm")
    shutil.copy(exported.res.sr, folder / "sr.dcm")
    # the loader still opens the CT and skips the SR/SEG
    again = load_series(folder)
    assert again.sop_uids == volume.sop_uids
    imp = import_beside(again, folder)
    assert imp.messages == []
    assert len(imp.segments) == 2 and imp.segments[1].is_lung
    assert np.array_equal(imp.segments[1].mask, exported.lung)
    back = imp.to_reading(again)
    orig = exported.reading.nodules[0]
    n = back.nodules[0]
    for key in ("volume_mm3", "long_axis_mm", "short_axis_mm", "mean_diameter_mm", "mean_hu",
                "type", "lung_rads", "axis_slice", "note"):
        assert getattr(n, key) == pytest.approx(getattr(orig, key)), key
    assert np.array_equal(n.mask.full(volume.shape), orig.mask.full(volume.shape))
    assert back.box_scores[0].malignancy == pytest.approx(exported.reading.box_scores[0]
                                                         .malignancy)
    [mark] = back.cad_marks
    c1 = exported.reading.mark("c1")
    assert (mark.slice, mark.row, mark.col) == (c1.slice, pytest.approx(c1.row),
                                                pytest.approx(c1.col))
    assert mark.diameter_mm == pytest.approx(c1.diameter_mm)
    assert back.note == "one solid nodule"


def test_sr_without_seg_outlines_each_slice(volume, tmp_path):
    reading = make_reading(volume)
    res = export_dicom(reading, volume, tmp_path, seg=False)
    assert res.seg is None
    g = hd.sr.srread(res.sr).content.get_volumetric_roi_measurement_groups()[0]
    mask = reading.nodules[0].mask.full(volume.shape)
    assert g.referenced_segment is None
    assert len(g.roi) == int(mask.any(axis=(1, 2)).sum())


def test_seg_on_another_grid_or_frame_is_refused_with_a_message(volume, phantom_dir, tmp_path):
    frame = read_sources(volume)[0].FrameOfReferenceUID
    other = load_series(write_phantom(tmp_path / "other", spacing=(2.0, 0.7, 0.7),
                                      study_uid=volume.study_uid, frame_uid=frame))
    stranger = load_series(write_phantom(tmp_path / "stranger"))
    folder = tmp_path / "study"
    shutil.copytree(phantom_dir, folder)
    for name, vol in (("grid.dcm", other), ("frame.dcm", stranger)):
        r = make_reading(vol)
        export_seg(r, vol, folder / name)
    (folder / "broken.dcm").write_bytes((folder / "grid.dcm").read_bytes()[:3000])
    sr = export_dicom(make_reading(stranger), stranger, tmp_path / "sr", seg=False).sr
    shutil.copy(sr, folder / "foreign_sr.dcm")
    imp = import_beside(volume, folder)
    text = "\n".join(imp.messages)
    assert imp.segments == [] and imp.nodules == []
    assert "grid.dcm: its pixel spacing 0.700×0.700 mm differs from the CT's 0.800×0.800" in text
    assert "frame.dcm: it belongs to another frame of reference" in text
    assert "broken.dcm" in text
    assert "foreign_sr.dcm: it refers to images of another series" in text
    assert NAME.split("^")[0] not in text
    assert load_series(folder).sop_uids == volume.sop_uids  # the study still opens


def test_nothing_accepted_and_existing_files_are_clear_errors(volume, tmp_path):
    empty = Reading.for_volume(volume)
    with pytest.raises(ExportError, match="nothing to report"):
        export_dicom(empty, volume, tmp_path)
    reading = make_reading(volume)
    export_dicom(reading, volume, tmp_path)
    before = (tmp_path / "sr.dcm").read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        export_dicom(reading, volume, tmp_path)
    assert (tmp_path / "sr.dcm").read_bytes() == before
    export_dicom(reading, volume, tmp_path, force=True)
    assert (tmp_path / "sr.dcm").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm", "sr.dcm"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) absent")
def test_dciodvfy_finds_no_errors(exported):
    for path in (exported.res.seg, exported.res.sr):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False,
                             timeout=60)
        lines = (out.stdout + out.stderr).splitlines()
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert errors == [], errors


def test_pdf_report(exported, volume, tmp_path):
    from lungviewer.reading.report_pdf import build_report, model_card_summary

    plain = build_report(exported.reading, volume, tmp_path / "r.pdf", compress=False)
    data = plain.read_bytes()
    assert data.startswith(b"%PDF")
    assert b"Lung-RADS suggestion" in data and b"Nodule n1" in data
    assert b"models trained on synthetic images" in data
    assert model_card_summary()[:40].encode("latin-1") in data
    assert b"DOE" not in data
    named = build_report(exported.reading, volume, tmp_path / "n.pdf", compress=False,
                         include_patient_name=True).read_bytes()
    assert b"DOE JANE" in named
    assert data.count(b"/Subtype /Image") == 2  # the nodule's and the accepted mark's
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", "30", str(plain), str(tmp_path / "page")],
                       check=True, timeout=60)
        assert list(tmp_path.glob("page*.png"))


def test_anonymized_copy(exported, volume, tmp_path):
    from lungviewer.reading.anonymize import anonymize_study

    digest = hashlib.sha256(Path(volume.files[0]).read_bytes()).hexdigest()
    res = anonymize_study(volume, tmp_path / "anon",
                          extra_files=[exported.res.sr, exported.res.seg])
    assert len(res.files) == volume.n_slices + 2
    src, anon = pydicom.dcmread(volume.files[0]), pydicom.dcmread(res.files[0])
    assert hashlib.sha256(Path(volume.files[0]).read_bytes()).hexdigest() == digest
    assert str(anon.PatientName) != NAME and anon.PatientID != src.PatientID
    assert anon.StudyInstanceUID != src.StudyInstanceUID
    assert "DICOGNITO" in anon.DeidentificationMethod
    assert "SeriesDescription" not in anon and anon.PatientSex == ""
    assert np.array_equal(anon.pixel_array, src.pixel_array)
    copied = load_series(tmp_path / "anon")
    assert np.array_equal(copied.hu, volume.hu)
    # the copied SR and SEG still point at the copied images
    sr = hd.sr.srread(tmp_path / "anon" / "sr.dcm")
    ref = sr.content.get_planar_roi_measurement_groups()[0].roi.ContentSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert ref in copied.sop_uids
    imp = import_beside(copied, tmp_path / "anon")
    assert imp.messages == [] and len(imp.nodules) == 1 and imp.nodules[0].mask is not None
    with pytest.raises(FileExistsError):
        anonymize_study(volume, tmp_path / "anon")


# -- the command --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cad_engine():
    from lungviewer.cad.engine import CadEngine

    return CadEngine.load(device="cpu")


@pytest.fixture
def one_engine(cad_engine, monkeypatch):
    """The command loads the shipped models once per module here (it loads them per run)."""
    from lungviewer.cad.engine import CadEngine

    monkeypatch.setattr(CadEngine, "load", classmethod(lambda cls, *a, **k: cad_engine))
    return cad_engine


def _run(argv: list[str]) -> int:
    from lungviewer.commands import export

    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers(dest="command"))
    return export.run(parser.parse_args(["export", *argv]))


def test_export_command_from_a_box(phantom_dir, volume, tmp_path, capsys, one_engine):
    out = tmp_path / "out"
    box = ",".join(str(v) for v in BOX)
    rc = _run([str(phantom_dir), "--out", str(out), "--box", box, "--sr", "--seg", "--pdf",
               "--lung-mask", "--json", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in summary["files"]) == ["report.pdf", "seg.dcm",
                                                              "sr.dcm"]
    assert summary["nodules"][0]["box"] == list(BOX)
    g = hd.sr.srread(out / "sr.dcm").content.get_volumetric_roi_measurement_groups()[0]
    assert _num(g, "SCT", "118565006") == pytest.approx(summary["nodules"][0]["volume_mm3"])
    # the box was scored before any CAD findings existed: its nodule probability is unknown,
    # so the SR leaves NODPROB out (no number stands in for "not computed") and the JSON
    # says why; the malignancy scores are there
    assert not any(m.name.value == "NODPROB" for m in g.get_measurements())
    assert 1.0 <= _num(g, "99LUNGVIEWER", "MALEXP") <= 5.0
    [bs] = summary["box_scores"]
    assert bs["nodule_probability"] is None
    # and such a score reads back from the SR (it was dropped when NODPROB was missing)
    [back] = import_beside(volume, out).to_reading(volume).box_scores
    assert back.nodule_probability is None
    assert back.malignancy == pytest.approx(bs["malignancy"], abs=1e-4)
    # never overwrites without --force
    rc = _run([str(phantom_dir), "--out", str(out), "--box", box, "--sr"])
    assert rc == 1 and "--force" in capsys.readouterr().err
    # a bad box is a clear message
    rc = _run([str(phantom_dir), "--out", str(tmp_path / "o2"), "--box", "99,1,1,5,5"])
    assert rc == 1 and "slice" in capsys.readouterr().err
    # anonymised: the CT copy with its SR/SEG, no patient name anywhere, the PDF undated
    anon = tmp_path / "anon"
    rc = _run([str(phantom_dir), "--out", str(anon), "--box", box, "--anonymize", "--json",
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in summary["files"]) == ["report.pdf", "seg.dcm",
                                                              "sr.dcm"]
    copied = load_series(anon / "anonymized")
    assert copied.n_slices == volume.n_slices and copied.study_uid != volume.study_uid
    assert all(NAME not in str(pydicom.dcmread(f).PatientName)
               for f in (anon / "anonymized").iterdir())
    assert import_beside(copied, anon / "anonymized").nodules
    assert sorted(p.name for p in anon.iterdir()) == ["anonymized", "report.pdf"]
    rc = _run([str(phantom_dir), "--out", str(anon), "--accept-cad", "1",
               "--anonymize", "--include-patient-name"])
    assert rc == 1 and "contradict" in capsys.readouterr().err


# -- the demo twin and the real dev scan ---------------------------------------------------------
TWIN_BOX = (89, 336, 293, 395, 344)  # LIDC-IDRI-0001: the readers' outlines ± 4 px
REAL_BOX = (70, 335, 343, 376, 384)  # LIDC-IDRI-0006: the 15 mm nodule of 078.xml


def test_demo_twin_exports_read_back_and_keep_the_synthetic_marker(twin_0001_dir, tmp_path,
                                                                   capsys, one_engine):
    out = tmp_path / "out"
    rc = _run([str(twin_0001_dir), "--out", str(out), "--box", ",".join(map(str, TWIN_BOX)),
               "--sr", "--seg", "--json", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["synthetic"] is True
    for name in ("sr.dcm", "seg.dcm"):
        ds = pydicom.dcmread(out / name)
        assert "SYNTHETIC" in ds.SeriesDescription
    volume = load_series(twin_0001_dir)
    imp = import_beside(volume, out)
    assert imp.messages == []
    [n] = imp.nodules
    assert n.numbers["volume_mm3"] == pytest.approx(summary["nodules"][0]["volume_mm3"])
    assert n.mask is not None and n.mask[TWIN_BOX[0]].any()


def test_real_dev_scan_round_trip(tmp_path):
    if not REAL.is_dir():
        pytest.skip(f"the real dev scan is absent ({REAL})")
    from lungviewer.reading.volumetry import segment_nodule

    volume = load_series(REAL)
    reading = Reading.for_volume(volume)
    seg = segment_nodule(volume.hu, volume.spacing, REAL_BOX)
    reading.add_nodule(NoduleRecord.from_segmentation(seg))
    res = export_dicom(reading, volume, tmp_path)
    assert "SYNTHETIC" not in pydicom.dcmread(res.sr).SeriesDescription
    imp = import_beside(volume, tmp_path)
    assert imp.messages == []
    back = imp.to_reading(volume).nodules[0]
    orig = reading.nodules[0]
    assert back.volume_mm3 == pytest.approx(orig.volume_mm3)
    assert back.long_axis_mm == pytest.approx(orig.long_axis_mm)
    assert np.array_equal(back.mask.full(volume.shape), orig.mask.full(volume.shape))


def test_a_fractional_seg_from_another_tool_is_shown(volume, phantom_dir, tmp_path):
    from pydicom.sr.codedict import codes

    sources = read_sources(volume)
    prob = np.zeros(volume.shape, np.float32)
    prob[10:14, 30:50, 26:46] = 0.9
    prob[10:14, 30:50, 46:50] = 0.3  # below one half: not part of the segment
    desc = hd.seg.SegmentDescription(
        1, "lesion", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion,
        hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        sources, prob, hd.seg.SegmentationTypeValues.FRACTIONAL, [desc], hd.UID(), 5, hd.UID(),
        1, "Other Tool Inc.", "Other", "1.0", "1")
    folder = tmp_path / "study"
    shutil.copytree(phantom_dir, folder)
    seg.save_as(folder / "other.dcm")
    imp = import_beside(volume, folder)
    assert imp.messages == []
    [s] = imp.segments
    assert s.creator == "Other Tool Inc." and s.label == "lesion"
    assert np.array_equal(s.mask, prob > 0.5)


def test_export_command_takes_the_saved_reading(phantom_dir, volume, tmp_path, capsys):
    from lungviewer.reading.store import save_reading

    rc = _run([str(phantom_dir), "--out", str(tmp_path / "none"), "--sr"])
    assert rc == 1 and "no saved reading" in capsys.readouterr().err
    reading = make_reading(volume)
    save_reading(reading)
    rc = _run([str(phantom_dir), "--out", str(tmp_path / "out"), "--sr", "--json"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["from_saved_reading"] is True
    assert [n["note"] for n in summary["nodules"]] == ["reader: smooth margin"]
    report = hd.sr.srread(tmp_path / "out" / "sr.dcm").content
    g = report.get_volumetric_roi_measurement_groups()[0]
    assert _num(g, "SCT", "118565006") == pytest.approx(reading.nodules[0].volume_mm3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sr.dcm"]


def test_export_command_accepts_the_top_cad_findings(phantom_dir, tmp_path, capsys,
                                                     monkeypatch, one_engine):
    from lungviewer.cad import findings

    # real Finding objects (the contract of cad/findings.py), before sizing: the session
    # sizes them (reading/lesions.py) and asks the malignancy of the sized ones
    found = [findings.Finding(slice=CENTRE[0], row=CENTRE[1], col=CENTRE[2], diameter_mm=10.0,
                              score=0.9),
             findings.Finding(slice=4, row=10, col=70, diameter_mm=4.0, score=0.6),
             findings.Finding(slice=20, row=70, col=10, diameter_mm=4.0, score=0.2)]
    monkeypatch.setattr(findings, "find_findings", lambda *a, **k: list(found))
    rc = _run([str(phantom_dir), "--out", str(tmp_path), "--accept-cad", "2", "--sr",
               "--json", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert [m["status"] for m in summary["cad_marks"]] == ["accepted", "accepted",
                                                           "unreviewed"]
    [nodule] = summary["nodules"]  # the sphere is segmented; empty lung is not
    assert nodule["source"] == "cad" and nodule["cad_mark_id"] == "c1"
    assert any("c2 could not be segmented" in m for m in summary["messages"])
    report = hd.sr.srread(tmp_path / "sr.dcm").content
    assert [str(g.tracking_identifier) for g in report.get_volumetric_roi_measurement_groups()
            ] == ["Nodule n1"]
    assert sorted(str(g.tracking_identifier) for g in report.get_planar_roi_measurement_groups()
                  ) == ["CAD mark c2", "Nodule n1 axial"]
