"""Issue 24, the three corpus cases: a series whose slices interleave two fields of view and
a series of mixed pixel spacing load with a spacing warning; a file with broken patient
tags never makes ``info`` print a patient identifier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from dicomgen import make_ct_slice
from pydicom.uid import generate_uid

from lungviewer.study.dicom_series import load_series


def _series(folder: Path, kind: str, n: int = 12) -> Path:
    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for k in range(n):
        sp = (0.7, 0.7) if kind == "two_spacings" and k % 2 else (0.8, 0.8)
        ds = make_ct_slice(k=k, z=2.0 * k, rows=32, cols=32, spacing_yx=sp, thickness=2.0,
                           series_uid=series, study_uid=study, instance_number=k + 1,
                           description="CHEST", patient_name="ROE^RICHARD",
                           hu=np.full((32, 32), -800, np.int16))
        if kind == "two_centres" and k % 2:  # another reconstruction centre, same pixels
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x + 40.0, y + 25.0, z]
        if kind == "slightly_mixed" and k % 2:
            ds.PixelSpacing = [0.8004, 0.8004]
        ds.save_as(folder / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.mark.parametrize("kind, words", [
    ("two_centres", "different in-plane positions"),
    ("two_spacings", "Mixed pixel spacing"),
    ("slightly_mixed", "Mixed pixel spacing"),
])
def test_interleaved_fields_of_view_and_mixed_spacing_warn(tmp_path, kind, words):
    vol = load_series(_series(tmp_path / kind, kind))
    text = " ".join(vol.warnings)
    assert words in text, vol.warnings
    assert "Gantry tilt" not in text  # a jump between centres is not a tilt
    plain = load_series(_series(tmp_path / "plain", "plain"))
    assert plain.warnings == []


def test_info_never_prints_a_patient_identifier_from_broken_tags(tmp_path, capsys):
    from lungviewer.commands import info

    folder = _series(tmp_path / "study", "plain")
    import pydicom

    # one file whose damaged header put the patient's ID where a number belongs (as a
    # mis-encoded patient element spills into the next ones) and a name with broken groups
    path = folder / "IM003.dcm"
    ds = pydicom.dcmread(path)
    ds.PatientID = "PID90210X"
    ds.add_new(0x00281053, "DS", None)
    ds[0x00281053]._value = "PID90210X"
    ds.add_new(0x00100010, "PN", "ROE^RICHARD=BROKEN=GROUPS=MORE")
    ds.save_as(path, enforce_file_format=True)
    parser = argparse.ArgumentParser()
    info.add_parser(parser.add_subparsers(dest="command"))
    for extra in ([], ["--json"]):
        info.run(parser.parse_args(["info", str(folder), *extra]))
        cap = capsys.readouterr()
        out = cap.out + cap.err
        for ident in ("PID90210X", "RICHARD", "ROE^RICHARD"):
            assert ident not in out, out
        if extra:
            assert json.loads(cap.out)["loaded"]["slices"] == 11
