"""The Volume record: a CT series as HU voxels plus the geometry needed to map them.

Conventions (docs/ARCHITECTURE.md): arrays are ``(z, y, x)``; HU are ``int16``; spacing is in mm
``(z, y, x)``. Index ``z`` runs in ascending position along the slice normal (for an
axial supine series: feet → head, i.e. ascending ImagePositionPatient[2]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def direction_letters(v: np.ndarray) -> str:
    """Patient-orientation letters of a direction in DICOM LPS (+x = patient Left,
    +y = Posterior, +z = Superior/Head), strongest component first: e.g. "L", "HP"."""
    names = (("L", "R"), ("P", "A"), ("H", "F"))
    v = np.asarray(v, dtype=float)
    out = ""
    for axis in np.argsort(-np.abs(v)):
        if abs(v[axis]) > 0.3:
            out += names[axis][0] if v[axis] > 0 else names[axis][1]
    return out or "?"


@dataclass
class Volume:
    """A loaded CT series.

    Attributes:
        hu: HU values, ``int16``, shape ``(z, y, x)``.
        spacing: voxel size in mm ``(z, y, x)``; z is derived from slice positions.
        positions: ImagePositionPatient of every slice, shape ``(z, 3)`` (patient x, y, z mm).
        orientation: ImageOrientationPatient, 6 floats (row cosines, column cosines).
        sop_uids: SOPInstanceUID of every slice, in volume order.
        series_uid, study_uid: DICOM UIDs of the series and study.
        description: SeriesDescription.
        patient_id: kept for matching against LIDC / label tables; never log it.
        is_synthetic: True when the series says it is synthetic (LIDC twin).
        warnings: problems found while loading (missing slices, tilt, ...), for the user.
        files: source file of every slice, in volume order.
        slice_thickness: nominal SliceThickness (mm) when present.
        source_series_uid: for a synthetic LIDC twin, the LIDC series it was rendered from
            (so its real annotations can be found); '' otherwise.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    orientation: np.ndarray = field(
        default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    )
    sop_uids: list[str] = field(default_factory=list)
    series_uid: str = ""
    study_uid: str = ""
    description: str = ""
    patient_id: str = ""
    modality: str = "CT"
    is_synthetic: bool = False
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    slice_thickness: float | None = None
    source_series_uid: str = ""

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"Volume.hu must be 3-D (z, y, x), got shape {self.hu.shape}")
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        self.orientation = np.asarray(self.orientation, dtype=float).reshape(6)
        if len(self.positions) != self.hu.shape[0]:
            raise ValueError(
                f"{len(self.positions)} slice positions for {self.hu.shape[0]} slices"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row cosines × column cosines)."""
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / (np.linalg.norm(n) or 1.0)

    @property
    def head_step(self) -> int:
        """+1 when going from slice ``k`` to ``k + 1`` moves towards the patient's head
        (higher patient z), -1 when it moves towards the feet (a feet-first series whose
        normal points to the feet, sorted along it). From the slice positions' z; for a
        single slice, from the sign of the slice normal's z component (+1 if it is 0)."""
        if self.n_slices > 1:
            dz = float(self.positions[-1, 2] - self.positions[0, 2])
            if dz != 0:
                return 1 if dz > 0 else -1
        return -1 if self.normal[2] < 0 else 1

    @property
    def z_positions(self) -> np.ndarray:
        """Patient z (ImagePositionPatient[2], mm) of every slice — what LIDC XML calls
        ``imageZposition``."""
        return self.positions[:, 2]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def slice_index_at_z(self, z_mm: float, tolerance: float | None = None) -> int | None:
        """Index of the slice whose z position is nearest ``z_mm``, or None when the
        nearest is farther than ``tolerance`` (default: half the slice spacing)."""
        if self.n_slices == 0:
            return None
        tol = self.spacing[0] / 2.0 if tolerance is None else tolerance
        d = np.abs(self.z_positions - z_mm)
        i = int(np.argmin(d))
        return i if d[i] <= tol + 1e-6 else None

    def slice_index_of_sop(self, sop_uid: str) -> int | None:
        try:
            return self.sop_uids.index(sop_uid)
        except ValueError:
            return None

    def pixel_to_patient(self, z: float, row: float, col: float) -> np.ndarray:
        """Patient coordinates (x, y, z mm) of voxel (z, row, col) (fractional allowed)."""
        zi = int(np.clip(round(z), 0, self.n_slices - 1))
        origin = self.positions[zi]
        r, c = self.orientation[:3], self.orientation[3:]
        return origin + c * row * self.spacing[1] + r * col * self.spacing[2]

    def orientation_labels(self) -> dict[str, str]:
        """Patient-orientation letters at the image edges: keys left/right/top/bottom."""

        letter = direction_letters
        r, c = self.orientation[:3], self.orientation[3:]
        return {"right": letter(r), "left": letter(-r), "bottom": letter(c), "top": letter(-c)}
