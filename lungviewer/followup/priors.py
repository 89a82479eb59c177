"""Is this series a valid prior of the current one? Same patient, older, a chest CT.

:func:`study_info` reads what the check needs from a loaded :class:`~lungviewer.study.volume.
Volume` (its first file's header for StudyDate and BodyPartExamined, which the Volume does
not keep); :func:`check_prior` returns the interval in days or raises :class:`PriorError`
with one clear line. Patient IDs are compared, never logged or put in a message.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

#: BodyPartExamined values that are a chest CT (upper case; DICOM PS3.16 CID 4031 and the
#: free text scanners write); an empty value is accepted (many series leave it out)
CHEST_PARTS = ("CHEST", "LUNG", "THORAX", "CHEST_ABDOMEN", "CHESTABDOMEN", "CHEST_TO_PELVIS",
               "CHESTABDPELVIS", "TRUNK", "WHOLEBODY", "WHOLE BODY", "THORAX_ABDOMEN")
#: the lungs of a chest CT hold at least this much air-filled lung (ml) in the lung mask
MIN_LUNG_ML = 300.0


class PriorError(ValueError):
    """The series cannot serve as the prior of the current study (one-line reason)."""


@dataclass(frozen=True)
class StudyInfo:
    """What the prior check needs of one exam. ``study_date`` None: the series has no
    StudyDate. ``patient_id`` is never logged."""

    patient_id: str
    study_date: _dt.date | None
    modality: str = "CT"
    body_part: str = ""
    study_uid: str = ""
    series_uid: str = ""
    description: str = ""
    slice_thickness: float | None = None

    def as_dict(self) -> dict:
        """The identity saved with the reading (no patient name; the ID is the study's own)."""
        return {"study_uid": self.study_uid, "series_uid": self.series_uid,
                "study_date": self.study_date.isoformat() if self.study_date else None,
                "modality": self.modality, "body_part": self.body_part,
                "description": self.description, "slice_thickness": self.slice_thickness}


def parse_date(text) -> _dt.date | None:
    """A DICOM DA value (``YYYYMMDD``; ``YYYY.MM.DD`` of old files) or ISO date → date;
    None when empty or not a date."""
    s = str(text or "").strip().replace(".", "").replace("-", "")
    if len(s) < 8 or not s[:8].isdigit():
        return None
    try:
        return _dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def study_info(volume, study_date: _dt.date | str | None = None) -> StudyInfo:
    """The :class:`StudyInfo` of a loaded volume; StudyDate and BodyPartExamined from its
    first file's header (``study_date`` given: used instead)."""
    date = parse_date(study_date) if isinstance(study_date, str) else study_date
    body = ""
    files = list(getattr(volume, "files", []) or [])
    if files and (date is None or not body):
        import pydicom

        try:
            ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True,
                                 specific_tags=["StudyDate", "SeriesDate", "AcquisitionDate",
                                                "BodyPartExamined"])
            if date is None:
                date = parse_date(ds.get("StudyDate", ""))
            body = str(ds.get("BodyPartExamined", "") or "").strip().upper()
        except Exception:  # unreadable header: the check below says what is missing
            pass
    return StudyInfo(patient_id=str(getattr(volume, "patient_id", "") or ""), study_date=date,
                     modality=str(getattr(volume, "modality", "CT") or "").upper(),
                     body_part=body, study_uid=str(getattr(volume, "study_uid", "")),
                     series_uid=str(getattr(volume, "series_uid", "")),
                     description=str(getattr(volume, "description", "")),
                     slice_thickness=(float(volume.slice_thickness)
                                      if getattr(volume, "slice_thickness", None) else
                                      float(volume.spacing[0]) if hasattr(volume, "spacing")
                                      else None))


def check_chest_ct(info: StudyInfo, lung_ml: float | None = None, which: str = "prior") -> None:
    """PriorError unless ``info`` is a CT whose body part (when given) is the chest and whose
    lung mask (``lung_ml``, when given) holds at least :data:`MIN_LUNG_ML`."""
    if info.modality and info.modality != "CT":
        raise PriorError(f"the {which} is a {info.modality} series, not CT: a follow-up "
                         "comparison needs two chest CTs")
    part = info.body_part.replace(" ", "").upper()
    if part and part not in {p.replace(" ", "") for p in CHEST_PARTS}:
        raise PriorError(f"the {which} is a CT of the {info.body_part.lower()}, not of the "
                         "chest")
    if lung_ml is not None and lung_ml < MIN_LUNG_ML:
        raise PriorError(f"the {which} shows only {lung_ml:.0f} ml of lung (at least "
                         f"{MIN_LUNG_ML:.0f} ml expected): not a chest CT")


def check_prior(current: StudyInfo, prior: StudyInfo, confirm_other_patient: bool = False,
                prior_lung_ml: float | None = None) -> int:
    """The interval current − prior in days (> 0) when ``prior`` can be the prior of
    ``current``; PriorError otherwise: another patient (unless ``confirm_other_patient``:
    the reader confirmed the mismatch), no StudyDate on either, a prior that is not older,
    the same series, a prior that is not a chest CT."""
    check_chest_ct(current, which="current study")
    check_chest_ct(prior, prior_lung_ml, which="prior")
    if prior.series_uid and prior.series_uid == current.series_uid:
        raise PriorError("the prior is the current series itself")
    if (current.patient_id or prior.patient_id) and current.patient_id != prior.patient_id \
            and not confirm_other_patient:
        raise PriorError("the prior belongs to another patient (PatientID differs); confirm "
                         "explicitly to compare anyway")
    if current.study_date is None:
        raise PriorError("the current study has no StudyDate: the interval is unknown")
    if prior.study_date is None:
        raise PriorError("the prior has no StudyDate: the interval is unknown")
    days = (current.study_date - prior.study_date).days
    if days < 0:
        raise PriorError(f"the prior ({prior.study_date.isoformat()}) is newer than the "
                         f"current study ({current.study_date.isoformat()}): swap them")
    if days == 0:
        raise PriorError(f"the prior has the current study's date "
                         f"({current.study_date.isoformat()}): it must be older")
    return days
