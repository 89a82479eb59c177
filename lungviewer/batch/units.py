"""What a batch analyses: one *unit* per series found under the source folder tree, plus one
per folder where no series was found (it fails with the loader's message), each with an
input fingerprint; and the CAD model versions the results depend on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: networks and index whose files make the findings (what CadEngine.load reads)
MODEL_NAMES = ("multitask", "detector", "slices", "fpr", "retrieval")

#: reasons of series that are not CT images to analyse at all (status "skipped")
NOT_FOR_CAD = ("localizer (scout) image", "no image data")


@dataclass
class Unit:
    """One thing the batch runs: ``kind`` "series" (a series UID in ``folder``) or "folder"
    (no series found there). ``key`` is unique in the results database."""

    key: str
    kind: str
    folder: str
    fingerprint: str
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    modality: str = ""
    n_instances: int = 0
    usable: bool = True
    reason: str = ""  # why the loader will not open it (headers only)
    label: str = field(default="")  # an anonymous name for terminal output

    def __post_init__(self) -> None:
        if not self.label:
            self.label = "s-" + hashlib.sha256(self.key.encode()).hexdigest()[:8]

    @property
    def not_for_cad(self) -> bool:
        return not self.usable and self.reason in NOT_FOR_CAD

    def as_dict(self) -> dict:
        return asdict(self)

    def redact(self, text: str) -> str:
        """``text`` without this unit's identifiers (for the terminal and logs)."""
        for value, name in ((self.series_uid, "<series>"), (self.study_uid, "<study>"),
                            (self.patient_id, "<patient>")):
            if value:
                text = text.replace(value, name)
        return text


def fingerprint(instances) -> str:
    """sha256 of a series' input: its (SOPInstanceUID, ImagePositionPatient) pairs, sorted
    (positions rounded to 0.01 mm); the same for the files found by the header pass and
    for the loaded :class:`~lungviewer.study.volume.Volume` (:func:`volume_fingerprint`)."""
    rows = sorted(f"{uid}|" + ("" if pos is None else ",".join(f"{float(v):.2f}" for v in pos))
                  for uid, pos in instances)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def volume_fingerprint(volume) -> str:
    """:func:`fingerprint` of a loaded volume (its slices' UIDs and positions)."""
    return fingerprint(zip(volume.sop_uids, [tuple(p) for p in volume.positions]))


def folder_fingerprint(folder: Path) -> str:
    """sha256 of a folder's file names, sizes and modification times (a folder without a
    series has no instance UIDs)."""
    rows = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            rows.append(f"{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def model_versions(weights_dir: str | Path | None = None) -> dict[str, str]:
    """{network: sha256} of the CAD files the findings depend on, from the weights
    manifest (the checksums ``CadEngine.load`` verifies); raises WeightsError."""
    from lungviewer.cad.manifest import read_manifest

    return versions_of(read_manifest(Path(weights_dir) if weights_dir else None))


def versions_of(manifest: dict) -> dict[str, str]:
    models = manifest.get("models", {})
    return {name: models[name]["sha256"] for name in MODEL_NAMES if name in models}


def models_key(versions: dict[str, str]) -> str:
    """One string for a set of model versions (compared to decide what is done)."""
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]


def _study_date(path: Path | None) -> str:
    """StudyDate (YYYY-MM-DD) of a file, or "" (read on its own: the loader does not keep it)."""
    if path is None:
        return ""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[(0x0008, 0x0020)],
                             force=True)
        d = str(ds.get("StudyDate", "") or "").strip()
    except Exception:  # noqa: BLE001 - a date is nice to have, never required
        return ""
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) >= 8 and d[:8].isdigit() else ""


def discover(source: str | Path, progress=None) -> list[Unit]:
    """The units under the folder tree ``source`` (one header pass over all its files)."""
    from lungviewer.study.dicom_series import StudyLoadError, find_series

    root = Path(source)
    if not root.is_dir():
        raise StudyLoadError(f"{root} is not a folder: give the folder tree of the studies.")
    root = root.resolve()
    with _quiet_pydicom():
        return _units(root, *find_series(root, progress=progress))


@contextmanager
def _quiet_pydicom():
    """pydicom's warnings on broken files off: the loader's own message reports them."""
    pd_log = logging.getLogger("pydicom")
    level = pd_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            pd_log.setLevel(level)


def _units(root: Path, series, bare) -> list[Unit]:
    units = []
    for s in series:
        units.append(Unit(
            key=f"series:{s.series_uid}", kind="series", folder=str(s.folder),
            fingerprint=fingerprint(s.instances), series_uid=s.series_uid,
            study_uid=s.study_uid, patient_id=s.patient_id,
            study_date=_study_date(s.first_file), modality=s.modality,
            n_instances=len(s.instances), usable=s.usable, reason=s.reason))
    for d in bare:
        rel = os.path.relpath(d, root)
        units.append(Unit(key=f"folder:{rel}", kind="folder", folder=str(d),
                          fingerprint=folder_fingerprint(d), usable=False,
                          reason="no series found"))
    return units
