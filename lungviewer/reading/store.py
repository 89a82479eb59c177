"""Saving and restoring a study's :class:`~lungviewer.reading.model.Reading`.

Readings live in ``<user data folder>/readings/`` (``lungviewer.paths.data_dir()``;
``LUNGVIEWER_DATA_DIR`` overrides it), never in the study's DICOM folder, one file per
study and series. The file name is the SHA-256 of the StudyInstanceUID (and the
SeriesInstanceUID when known: a reading's marks belong to one series' voxels). UIDs are not
names, but they do identify a study, so no UID appears in a file name or a log line.
Writes are atomic (``lungviewer.fileio``). A file that cannot be read as a reading is
moved aside (``*.corrupt-<time>``) with a warning, and the study opens with an empty
reading.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from lungviewer import paths
from lungviewer.fileio import atomic_write_text

from .model import Reading

log = logging.getLogger(__name__)


def readings_dir() -> Path:
    path = paths.data_dir() / "readings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def study_key(study_uid: str, series_uid: str = "") -> str:
    """The file-name key of a study (and series): SHA-256 of the StudyInstanceUID (newline
    SeriesInstanceUID), 32 hex digits."""
    if not study_uid:
        raise ValueError("the study has no StudyInstanceUID, so its reading cannot be saved")
    text = study_uid.strip() + (f"\n{series_uid.strip()}" if series_uid else "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def reading_path(study_uid: str, series_uid: str = "") -> Path:
    return readings_dir() / f"{study_key(study_uid, series_uid)}.json"


def save_reading(reading: Reading) -> Path:
    """Write ``reading`` (atomically) to its study's file; returns the path."""
    path = reading_path(reading.study_uid, reading.series_uid)
    atomic_write_text(path, reading.to_json())
    log.debug("reading saved (%d marks, %d nodules, %d measurements)",
              len(reading.cad_marks), len(reading.nodules), len(reading.measurements))
    return path


def load_reading(study_uid: str, series_uid: str = "") -> Reading | None:
    """The saved reading of the study's series (``load_reading(volume.study_uid,
    volume.series_uid)``), or None when there is none or it was corrupt."""
    path = reading_path(study_uid, series_uid)
    if not path.is_file():
        return None
    try:
        reading = Reading.from_json(path.read_bytes())
        if reading.study_uid != study_uid or (series_uid and reading.series_uid
                                              and reading.series_uid != series_uid):
            raise ValueError("it belongs to another study or series")
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-"
                               f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(path, aside)
            where = f"moved aside to {aside.name}"
        except OSError:
            where = "left in place"
        log.warning("The saved reading of this study could not be read (%s); %s, starting "
                    "with an empty reading.", exc, where)
        return None
    return reading


def load_for_volume(volume) -> Reading:
    """The saved reading of a loaded Volume, or a new empty one."""
    return load_reading(volume.study_uid, volume.series_uid) or Reading.for_volume(volume)


def delete_reading(study_uid: str, series_uid: str = "") -> bool:
    path = reading_path(study_uid, series_uid)
    if path.is_file():
        path.unlink()
        return True
    return False
