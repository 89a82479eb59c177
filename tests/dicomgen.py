"""Writes small but real CT DICOM series with pydicom, for tests.

Pixel pattern (before rescale): stored = HU - intercept, where
``HU = -1000 + 10 * k + row`` for the k-th slice in ascending z (k counts every planned
position, including missing ones) — so a test can check sorting and HU exactly.
File names are shuffled and InstanceNumber deliberately disagrees with position order.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)


def expected_hu(k: int, rows: int, cols: int) -> np.ndarray:
    """The HU image of planned slice ``k`` (see module docstring)."""
    return (-1000 + 10 * k + np.arange(rows)[:, None] + np.zeros((1, cols))).astype(np.int16)


def make_ct_slice(
    *,
    k: int,
    z: float,
    rows: int,
    cols: int,
    spacing_yx: tuple[float, float],
    thickness: float,
    series_uid: str,
    study_uid: str,
    slope: float = 1.0,
    intercept: float = -1024.0,
    instance_number: int = 1,
    description: str = "TEST",
    patient_name: str = "TEST^PATIENT",
    patient_id: str = "TEST-0001",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin_xy: tuple[float, float] = (-100.0, -120.0),
    hu: np.ndarray | None = None,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19500101"
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [origin_xy[0], origin_xy[1], float(z)]
    ds.ImageOrientationPatient = list(map(float, orientation))
    ds.PixelSpacing = [float(spacing_yx[0]), float(spacing_yx[1])]
    ds.SliceThickness = float(thickness)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    img = expected_hu(k, rows, cols) if hu is None else hu
    stored = np.round((img.astype(np.float64) - intercept) / slope).astype(np.int16)
    ds.PixelData = stored.tobytes()
    return ds


def write_ct_series(
    folder: str | Path,
    n_slices: int = 20,
    rows: int = 64,
    cols: int = 64,
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    slope_variants: bool = False,
    shuffle_names: bool = True,
    series_uid: str | None = None,
    study_uid: str | None = None,
    missing: tuple[int, ...] = (),
    description: str = "TEST",
    z0: float = -100.0,
    compress_rle: bool = False,
    seed: int = 0,
    **slice_kwargs,
) -> list[Path]:
    """Write an axial CT series; returns the files in ascending z order.

    ``slope_variants`` gives every third slice another slope/intercept (same HU).
    ``missing`` lists planned slice indices that are not written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    ks = [k for k in range(n_slices) if k not in set(missing)]
    instance_numbers = list(range(1, len(ks) + 1))
    rng.shuffle(instance_numbers)
    names = [f"IM{idx:04d}" for idx in range(len(ks))]
    if shuffle_names:
        rng.shuffle(names)
    files = []
    for k, inst, name in zip(ks, instance_numbers, names):
        s, b = slope, intercept
        if slope_variants and k % 3 == 1:
            s, b = 0.5, -2048.0
        ds = make_ct_slice(
            k=k, z=z0 + k * spacing[0], rows=rows, cols=cols, spacing_yx=spacing[1:],
            thickness=spacing[0], series_uid=series_uid, study_uid=study_uid, slope=s,
            intercept=b, instance_number=inst, description=description, **slice_kwargs,
        )
        if compress_rle:
            ds.compress(RLELossless)
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_scout(folder: str | Path, study_uid: str | None = None) -> Path:
    """A lateral localizer image (single slice, ImageType LOCALIZER)."""
    ds = make_ct_slice(
        k=0, z=0.0, rows=32, cols=48, spacing_yx=(1.0, 1.0), thickness=1.0,
        series_uid=generate_uid(), study_uid=study_uid or generate_uid(),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=(0, 1, 0, 0, 0, -1),
        description="SCOUT",
    )
    path = Path(folder) / "scout.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_non_image(folder: str | Path) -> Path:
    """A DICOM object without pixel data (a dose-report-like SR)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    path = Path(folder) / "dose_report.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_non_dicom(folder: str | Path) -> Path:
    path = Path(folder) / "Thumbs.db"
    path.write_bytes(b"not a DICOM file\n" * 10)
    return path


def read_back(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


# -- bad inputs: generators for the loader's corpus of hostile and odd files ----------------
def edit_series(files: list[Path], edit, which: list[int] | None = None) -> None:
    """Apply ``edit(ds, i)`` to the files (all, or the indices ``which``) and save them
    (value validation off, so a test can write values pydicom would refuse)."""
    for i, path in enumerate(files):
        if which is not None and i not in which:
            continue
        ds = pydicom.dcmread(path)
        edit(ds, i)
        with pydicom.config.disable_value_validation():
            ds.save_as(path)


def set_raw_pixels(ds: pydicom.Dataset, stored: np.ndarray) -> None:
    """Replace the pixel data with ``stored`` (uint16/int16 bit patterns as written)."""
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()


def write_multiframe(folder: str | Path, frames: int = 4, rows: int = 16, cols: int = 16,
                     enhanced: bool = False) -> Path:
    """One CT file holding ``frames`` frames (frame k is planned slice k of
    :func:`expected_hu`, z = 2.5 k mm). ``enhanced``: an Enhanced CT object whose geometry
    and rescale live only in the functional groups (frames listed in reverse z order);
    otherwise a legacy CT image with NumberOfFrames and only top-level geometry."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = make_ct_slice(k=0, z=0.0, rows=rows, cols=cols, spacing_yx=(0.7, 0.7), thickness=2.5,
                       series_uid=generate_uid(), study_uid=generate_uid())
    stack = np.stack([expected_hu(k, rows, cols) for k in range(frames)]) + 1024
    if enhanced:
        stack = stack[::-1]  # the frames in reverse z order: the loader sorts them
    ds.NumberOfFrames = frames
    ds.PixelData = stack.astype("<i2").tobytes()
    if enhanced:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
        shared = pydicom.Dataset()
        pm = pydicom.Dataset()
        pm.PixelSpacing = [0.7, 0.7]
        pm.SliceThickness = 2.5
        po = pydicom.Dataset()
        po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        pvt = pydicom.Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
        shared.PixelMeasuresSequence = [pm]
        shared.PlaneOrientationSequence = [po]
        shared.PixelValueTransformationSequence = [pvt]
        ds.SharedFunctionalGroupsSequence = [shared]
        per = []
        for k in range(frames):
            fg = pydicom.Dataset()
            pp = pydicom.Dataset()
            pp.ImagePositionPatient = [-100.0, -120.0, 2.5 * (frames - 1 - k)]
            fg.PlanePositionSequence = [pp]
            per.append(fg)
        ds.PerFrameFunctionalGroupsSequence = per
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                   "SliceThickness", "RescaleSlope", "RescaleIntercept"):
            del ds[kw]
    path = folder / ("enhanced.dcm" if enhanced else "multiframe.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def strip_preamble(path: Path, keep_meta: bool = True) -> None:
    """Rewrite ``path`` without the 128-byte preamble and 'DICM' (and, unless
    ``keep_meta``, without the file meta group: a bare implicit-VR data set)."""
    ds = pydicom.dcmread(path)
    ds.preamble = None
    if keep_meta:
        ds.save_as(path, enforce_file_format=False)
    else:
        del ds.file_meta
        ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
