"""Saving and restoring a study's :class:`~lungviewer.reading.model.Reading`.

Readings live in ``<user data folder>/readings/`` (``lungviewer.paths.data_dir()``;
``LUNGVIEWER_DATA_DIR`` overrides it), never in the study's DICOM folder, one file per
study and series. The file name is the SHA-256 of the StudyInstanceUID (and the
SeriesInstanceUID when known: a reading's marks belong to one series' voxels). UIDs are not
names, but they do identify a study, so no UID appears in a file name or a log line.
Writes are atomic (``lungviewer.fileio``). Reading a file is bounded (size, item count
and nesting depth before parsing; counts and text lengths while reading: see
:mod:`lungviewer.reading.model`). A file that cannot be read is moved aside
(``*.corrupt-<time>``), never overwritten; a file with some bad records keeps the rest
(:func:`open_reading`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
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


def study_key(study_uid: str, series_uid: str = "", content: str = "") -> str:
    """The file-name key of a study (and series): SHA-256 of the StudyInstanceUID (newline
    SeriesInstanceUID), 32 hex digits."""
    if not study_uid:
        raise ValueError("the study has no StudyInstanceUID, so its reading cannot be saved")
    text = study_uid.strip() + (f"\n{series_uid.strip()}" if series_uid else "")
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return key + (f"-{content[:16]}" if content else "")


def reading_path(study_uid: str, series_uid: str = "", content: str = "") -> Path:
    """The series' reading file; with ``content`` (a content key, see
    :mod:`lungviewer.reading.content`) the file of a reading made on other images of the
    series than the series' own file holds, beside it."""
    return readings_dir() / f"{study_key(study_uid, series_uid, content)}.json"


def save_reading(reading: Reading, qualified: bool = False) -> Path:
    """Write ``reading`` (atomically) to its study's file (``qualified``: to the file of its
    content, leaving the series' file to the images it was made on); returns the path."""
    path = reading_path(reading.study_uid, reading.series_uid,
                        reading.content_key if qualified else "")
    atomic_write_text(path, reading.to_json())
    log.debug("reading saved (%d marks, %d nodules, %d measurements)",
              len(reading.cad_marks), len(reading.nodules), len(reading.measurements))
    return path


@dataclass
class StoredReading:
    """What :func:`open_reading` found: the ``reading`` (None: none saved, or nothing of it
    could be kept), ``messages`` for the user, the file the original was moved to
    (``aside``) and whether the session may write the study's reading file (``writable``
    False: a file that could not be read could not be moved aside either, so saving would
    overwrite it)."""

    reading: Reading | None = None
    messages: list[str] = field(default_factory=list)
    aside: Path | None = None
    writable: bool = True
    #: the reading came from the file of these very images (not the series' own file)
    qualified: bool = False


def _move_aside(path: Path) -> Path | None:
    """Move ``path`` to ``<name>.corrupt-<time>`` (never over an earlier one); None if it
    cannot be moved."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for i in range(100):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{i}" if i else ""))
        if aside.exists():
            continue
        try:
            os.replace(path, aside)
        except OSError:
            return None
        return aside
    return None


def open_reading(study_uid: str, series_uid: str = "", content: str = "") -> StoredReading:
    """The saved reading of the study's series, parsed within the bounds of
    :func:`lungviewer.reading.model.Reading.from_json` (size, item count and depth checked
    before parsing; counts and text lengths while reading).

    * A file that cannot be read at all is moved aside (``*.corrupt-<time>``) and the study
      starts with an empty reading.
    * A file with some bad records, too many items or a too-deep value keeps what can be
      kept: the original is moved aside and the kept reading is written in its place.
    * A bad file that cannot be moved aside (read-only store) is left alone and the result
      says ``writable=False``: the session must not save over it.
    Never raises for the file's content; messages name the file, never a UID."""
    out = StoredReading()
    try:
        path = reading_path(study_uid, series_uid)
        if content and reading_path(study_uid, series_uid, content).is_file():
            path, out.qualified = reading_path(study_uid, series_uid, content), True
    except OSError as exc:  # no store folder can be made: nothing saved, saving will fail
        out.messages.append(f"The reading store cannot be used ({exc.strerror or exc}); "
                            "this study's reading will not be saved.")
        return out
    try:
        if not path.is_file():
            return out
        data = path.read_bytes()
    except OSError as exc:
        out.messages.append(f"The saved reading could not be read ({exc.strerror or exc}).")
        out.writable = False
        return out
    problems: list[str] = []
    try:
        reading = Reading.from_json(data, problems)
        if reading.study_uid != study_uid or (series_uid and reading.series_uid
                                              and reading.series_uid != series_uid):
            raise ValueError("it belongs to another study or series")
    except ValueError as exc:
        out.aside = _move_aside(path)
        out.writable = out.aside is not None
        where = (f"the file was kept as {out.aside.name}" if out.aside is not None else
                 f"{path.name} was left in place and will not be overwritten")
        msg = (f"The saved reading of this study could not be read ({exc}); {where}; "
               "starting with an empty reading.")
        log.warning(msg)
        out.messages.append(msg)
        return out
    out.reading = reading
    if problems:
        out.aside = _move_aside(path)
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if
                                              len(problems) > 3 else "")
        if out.aside is None:
            out.writable = False
            where = f"{path.name} was left in place and will not be overwritten"
        else:
            where = f"the original file was kept as {out.aside.name}"
            try:
                save_reading(reading, out.qualified)
            except (OSError, ValueError) as exc:
                where += f" (the kept part could not be saved: {exc})"
        msg = (f"Part of the saved reading could not be kept ({shown}); {where}. "
               f"Kept: {len(reading.nodules)} nodule(s), {len(reading.cad_marks)} CAD "
               f"mark(s), {len(reading.measurements)} measurement(s).")
        log.warning(msg)
        out.messages.append(msg)
    return out


def load_reading(study_uid: str, series_uid: str = "") -> Reading | None:
    """The saved reading of the study's series (``load_reading(volume.study_uid,
    volume.series_uid)``), or None when there is none or nothing of it could be read (see
    :func:`open_reading`)."""
    return open_reading(study_uid, series_uid).reading


def load_for_volume(volume) -> Reading:
    """The saved reading of a loaded Volume, or a new empty one."""
    return load_reading(volume.study_uid, volume.series_uid) or Reading.for_volume(volume)


def delete_reading(study_uid: str, series_uid: str = "") -> bool:
    path = reading_path(study_uid, series_uid)
    if path.is_file():
        path.unlink()
        return True
    return False
