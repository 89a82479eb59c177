"""Issue 24, the exports: measurements in the SR (TID 1500 planar groups linked to their
image) and the PDF, SR and SEG sharing a nodule's tracking UID, and the anonymised PDF
(no key derivable from the original UIDs, dates shifted like the DICOM copy's)."""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from test_export import make_reading, write_phantom
from test_reliability_round3 import _export

from lungviewer.reading import store
from lungviewer.reading.export_dicom import export_dicom
from lungviewer.reading.measurements import Measurement
from lungviewer.reading.report_pdf import build_report
from lungviewer.study.dicom_series import load_series


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = write_phantom(tmp_path_factory.mktemp("i24") / "ct")
    for f in folder.iterdir():  # a dated study, so that the date shift shows
        ds = pydicom.dcmread(f)
        ds.StudyDate = "20190412"
        ds.save_as(f, enforce_file_format=True)
    return folder, load_series(folder)


def _reading_with_measurements(volume):
    r = make_reading(volume)
    r.add_measurement(Measurement("ruler", "axial", 12, [(30.0, 20.0), (30.0, 45.0)],
                                  label="chest wall"))
    r.add_measurement(Measurement("ellipse", "axial", 12, [(30.0, 26.0), (50.0, 46.0)]))
    r.add_measurement(Measurement("ruler", "coronal", 40, [(2.0, 10.0), (10.0, 10.0)]))
    return r


def _pdf_text(path: Path) -> str:
    """The text drawn in an uncompressed or Flate-compressed fpdf2 PDF (content streams)."""
    data = path.read_bytes()
    out = [data.decode("latin-1")]
    for m in re.finditer(rb"(?<!end)stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        try:
            out.append(zlib.decompress(m.group(1)).decode("latin-1"))
        except zlib.error:
            pass
    return "\n".join(out)


def test_sr_and_seg_share_a_nodules_tracking_uid(ct, tmp_path):
    volume = ct[1]
    res = export_dicom(make_reading(volume), volume, tmp_path)
    seg = hd.seg.segread(res.seg).get_segment_description(1)
    report = hd.sr.srread(res.sr).content
    [vol] = report.get_volumetric_roi_measurement_groups()
    axial = next(g for g in report.get_planar_roi_measurement_groups()
                 if str(g.tracking_identifier) == "Nodule n1 axial")
    assert seg.tracking_id == str(vol.tracking_identifier) == "Nodule n1"
    assert str(seg.tracking_uid) == str(vol.tracking_uid) == str(axial.tracking_uid)


def test_measurements_go_into_the_sr_linked_to_their_image_and_into_the_pdf(ct, tmp_path):
    volume = ct[1]
    r = _reading_with_measurements(volume)
    res = export_dicom(r, volume, tmp_path)
    groups = {str(g.tracking_identifier): g for g in
              hd.sr.srread(res.sr).content.get_planar_roi_measurement_groups()}
    ruler = groups[f"Measurement chest wall {r.measurements[0].id}"]
    [length] = ruler.get_measurements()
    assert length.name.value == "410668003"  # SCT Length
    assert float(length.value) == pytest.approx(25 * volume.spacing[2], rel=1e-3)
    ref = ruler.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert ref == volume.sop_uids[12]
    ellipse = groups[f"Measurement ellipse {r.measurements[1].id}"]
    assert ellipse.roi.GraphicType == "ELLIPSE"
    assert {m.name.value for m in ellipse.get_measurements()} >= {"42798000", "112181"}
    # the coronal ruler has no source image to reference: PDF only
    assert not any(k.endswith(r.measurements[2].id) for k in groups)
    pdf = build_report(r, volume, tmp_path / "r.pdf", compress=False)
    text = _pdf_text(pdf)
    assert "Measurements" in text and "chest wall - ruler, axial image 13" in text
    assert "ruler, coronal image 41" in text


def test_the_anonymised_pdf_has_no_original_key_and_shifted_dates(ct, tmp_path, capsys):
    folder, volume = ct
    store.save_reading(make_reading(volume))
    out = tmp_path / "anon"
    assert _export([str(folder), "--out", str(out), "--anonymize"]) == 0
    text = _pdf_text(out / "report.pdf")
    orig_key = store.study_key(volume.study_uid)[:10]
    plain = hashlib.sha256(volume.study_uid.encode()).hexdigest()[:10]
    assert orig_key not in text and plain not in text
    copy = pydicom.dcmread(next((out / "anonymized").glob("CT*.dcm")))
    assert copy.StudyDate != "20190412"
    shifted = f"{copy.StudyDate[:4]}-{copy.StudyDate[4:6]}-{copy.StudyDate[6:]}"
    assert f"study date {shifted}" in text and "2019-04-12" not in text
    # the key matches the anonymised copy it was made with
    assert hashlib.sha256(str(copy.StudyInstanceUID).encode()).hexdigest()[:10] in text
