"""What a query asks and what a PACS answers, the same for DIMSE and DICOMweb.

Patient names and IDs are kept in the results (the dialog shows them) but out of their
``repr``, so a result that reaches a log line carries no patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from .nodes import PacsError

#: the most matches a find returns (the rest is counted as "more"; the dialog pages them)
DEFAULT_LIMIT = 500


def parse_date_range(text: str | None) -> str:
    """``YYYYMMDD``, ``FROM-TO``, ``FROM-`` or ``-TO`` (YYYYMMDD, or YYYY-MM-DD with
    ``..``/``/`` between) as a DICOM date range; empty means any date."""
    if not text:
        return ""
    t = text.strip()
    if ".." in t or "/" in t:
        parts = t.split(".." if ".." in t else "/")
    elif re.fullmatch(r"\d{4}-\d\d-\d\d", t):
        parts = [t]
    else:
        parts = t.split("-")
    clean = []
    for p in parts:
        p = p.strip().replace("-", "")
        if p and not re.fullmatch(r"\d{8}", p):
            raise PacsError(f"study date {text!r}: use YYYYMMDD or FROM-TO (YYYYMMDD-YYYYMMDD, "
                            "either end may be left out)")
        clean.append(p)
    if len(clean) == 1:
        return clean[0]
    if len(clean) != 2:
        raise PacsError(f"study date {text!r}: use YYYYMMDD or FROM-TO")
    if clean[0] and clean[1] and clean[0] > clean[1]:
        raise PacsError(f"study date {text!r}: the range ends before it starts")
    return f"{clean[0]}-{clean[1]}"


@dataclass
class Query:
    """A study search. Empty fields match anything; ``*`` and ``?`` are wildcards in
    ``patient_id``, ``patient_name``, ``accession`` and ``description``."""

    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""          # a DICOM date range: see parse_date_range
    modality: str = ""
    accession: str = ""
    description: str = ""
    study_uid: str = ""

    def __post_init__(self) -> None:
        self.study_date = parse_date_range(self.study_date)
        self.modality = self.modality.strip().upper()


def _s(ds: Dataset, kw: str) -> str:
    v = ds.get(kw, "")
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v)


def _i(ds: Dataset, kw: str) -> int:
    try:
        return int(ds.get(kw) or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class StudyInfo:
    study_uid: str
    date: str = ""
    time: str = ""
    description: str = ""
    modalities: str = ""
    accession: str = ""
    n_series: int = 0
    n_instances: int = 0
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    birth_date: str = field(default="", repr=False)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "StudyInfo":
        return cls(_s(ds, "StudyInstanceUID"), _s(ds, "StudyDate"), _s(ds, "StudyTime"),
                   _s(ds, "StudyDescription"), _s(ds, "ModalitiesInStudy"),
                   _s(ds, "AccessionNumber"), _i(ds, "NumberOfStudyRelatedSeries"),
                   _i(ds, "NumberOfStudyRelatedInstances"), _s(ds, "PatientID"),
                   _s(ds, "PatientName"), _s(ds, "PatientBirthDate"))

    def as_dict(self, patient: bool = False) -> dict:
        d = {"study_uid": self.study_uid, "date": self.date, "time": self.time,
             "description": self.description, "modalities": self.modalities,
             "accession": self.accession, "series": self.n_series,
             "instances": self.n_instances}
        if patient:
            d.update(patient_id=self.patient_id, patient_name=self.patient_name)
        return d


@dataclass
class SeriesInfo:
    series_uid: str
    study_uid: str = ""
    modality: str = ""
    description: str = ""
    number: str = ""
    n_instances: int = 0
    thickness: str = ""

    @classmethod
    def from_dataset(cls, ds: Dataset, study_uid: str = "") -> "SeriesInfo":
        return cls(_s(ds, "SeriesInstanceUID"), _s(ds, "StudyInstanceUID") or study_uid,
                   _s(ds, "Modality"), _s(ds, "SeriesDescription"), _s(ds, "SeriesNumber"),
                   _i(ds, "NumberOfSeriesRelatedInstances"), _s(ds, "SliceThickness"))

    def as_dict(self) -> dict:
        return {"series_uid": self.series_uid, "study_uid": self.study_uid,
                "modality": self.modality, "description": self.description,
                "number": self.number, "instances": self.n_instances,
                "thickness": self.thickness}


@dataclass
class FindResult:
    """At most ``limit`` matches from ``offset`` on; ``more`` when the PACS had others."""

    items: list
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    more: bool = False


@dataclass
class SendResult:
    """The PACS's answer for one object sent."""

    path: str
    sop_instance_uid: str = ""
    ok: bool = False
    status: str = ""      # e.g. "0x0000" (DIMSE) or "stored"/"failed" (STOW-RS)
    message: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "sop_instance_uid": self.sop_instance_uid, "ok": self.ok,
                "status": self.status, "message": self.message}


def study_identifier(q: Query) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = q.study_uid
    ds.PatientID = q.patient_id
    ds.PatientName = q.patient_name
    ds.PatientBirthDate = ""
    ds.StudyDate = q.study_date
    ds.StudyTime = ""
    ds.StudyDescription = q.description
    ds.AccessionNumber = q.accession
    ds.ModalitiesInStudy = q.modality
    ds.NumberOfStudyRelatedSeries = None
    ds.NumberOfStudyRelatedInstances = None
    return ds


def series_identifier(study_uid: str, series_uid: str = "") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = ""
    ds.SeriesDescription = ""
    ds.SeriesNumber = None
    ds.NumberOfSeriesRelatedInstances = None
    ds.SliceThickness = None
    return ds
