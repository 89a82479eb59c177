"""The PDF report as a DICOM Encapsulated PDF object, so it can go to a PACS with the SR and
SEG (File → Send reading to PACS). Patient and study attributes come from the loaded
series (:func:`lungviewer.reading.export_dicom.read_sources`), so the PACS files the report
with the study; the PDF itself is the report as written (by default without the name)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lungviewer.fileio import atomic_path

from .nodes import PacsError

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_COPY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
         "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def encapsulate_pdf(pdf: str | Path, volume, out_path: str | Path,
                    series_number: int = 997) -> Path:
    """Write ``pdf`` as an Encapsulated PDF instance of ``volume``'s study to ``out_path``."""
    from lungviewer import __version__
    from lungviewer.reading.export_dicom import read_sources

    data = Path(pdf).read_bytes()
    if not data.startswith(b"%PDF"):
        raise PacsError(f"{pdf} is not a PDF file")
    src = read_sources(volume)[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF, meta.MediaStorageSOPInstanceUID
    for kw in _COPY:
        setattr(ds, kw, src.get(kw, ""))
    if "SpecificCharacterSet" in src:
        ds.SpecificCharacterSet = src.SpecificCharacterSet
    now = _dt.datetime.now()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDescription = "lungviewer report (PDF)"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.ConversionType = "WSD"
    ds.Manufacturer = "lungviewer"
    ds.SoftwareVersions = f"lungviewer {__version__}"
    ds.BurnedInAnnotation = "YES"  # a report names the study
    ds.DocumentTitle = "lungviewer report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(data)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    pydicom.dcmread(out, stop_before_pixels=True)  # it reads back
    return out
