"""Anonymised copy of a study for sharing a case: the DICOM PS3.15 basic application level
confidentiality profile, applied through ``dicognito`` plus a few removals on top.

All files of one export go through one ``dicognito.Anonymizer``, so the replaced UIDs stay
consistent across them: the copied CT series and any SR/SEG exported with it still refer
to each other. The copy is written into a temporary folder beside the target and moved into
place only when every file is written (:func:`lungviewer.fileio.atomic_dir`): a failed
copy (full disk, a size limit) leaves nothing behind, and a rerun finds no half copy in
its way. The source folder is never touched.

:data:`README` says what is kept and what is removed or replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from lungviewer.contracts import TWIN_MARKER
from lungviewer.fileio import atomic_dir

log = logging.getLogger(__name__)

README = """\
Anonymised export (DICOM PS3.15 basic profile, through dicognito)

Replaced with made-up values (consistently within one export):
- every person name (patient, referring/performing physicians, operators, observers);
- patient ID, other patient IDs, accession number, study ID, request/procedure IDs,
  station name;
- every UID that identifies an instance, series, study or frame of reference (the SOP
  class and transfer syntax UIDs stay): references between the copied images, SEG and SR
  still agree;
- dates and times, shifted by one random offset of 62 to 730 days for the whole export
  (so intervals between dates are kept);
- institution name and address, patient address; equipment identifiers.
Removed:
- private tags; patient telephone numbers, insurance, religion, military rank, occupation,
  medical record locator; requesting service and current patient location;
- free text that may name the patient: image comments, study/series/protocol descriptions,
  patient comments and history, request and procedure descriptions, derivation text
  (a synthetic series keeps its SYNTHETIC marker, nothing else);
- patient age, size and weight; patient sex is left empty.
Kept: the pixel data unchanged, the image geometry (position, orientation, spacing, slice
thickness), modality, manufacturer and model, acquisition and reconstruction parameters,
and the measurements, codes and findings of SR and SEG objects.
Set: DeidentificationMethod names dicognito; PatientIdentityRemoved = YES only where an
image declares BurnedInAnnotation = NO (the pixels are not checked).
Not done: text burned into the pixels is not detected or removed (a file marked
BurnedInAnnotation = YES is reported); free text a reader typed into a note of the
reading is copied as typed.
"""

#: attributes removed on top of what dicognito replaces (basic-profile "X" free text and
#: patient characteristics)
_REMOVE = ("ImageComments", "StudyDescription", "SeriesDescription", "ProtocolName",
           "PatientComments", "AdditionalPatientHistory", "PatientAge", "PatientSize",
           "PatientWeight", "RequestedProcedureDescription", "RequestAttributesSequence",
           "PerformedProcedureStepDescription", "DerivationDescription",
           "AcquisitionComments", "ReasonForStudy", "ReasonForTheRequestedProcedure",
           "ImagingServiceRequestComments", "RequestedProcedureComments",
           "CountryOfResidence",
           "RegionOfResidence", "EthnicGroup", "PatientBirthTime", "IssuerOfPatientID")


@dataclass
class AnonymizedExport:
    folder: Path
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _anonymizer(seed: str | None = None):
    from dicognito.anonymizer import Anonymizer

    return Anonymizer(seed=seed)


def clean_dataset(ds: pydicom.Dataset, anonymizer) -> list[str]:
    """Anonymise one dataset in place; returns warnings (never with a patient identifier)."""
    text = " ".join(str(ds.get(k, "")) for k in ("SeriesDescription", "ImageComments"))
    synthetic = TWIN_MARKER in text.upper()
    warnings = []
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        warnings.append("an image is marked as having text burned into its pixels; that "
                        "text is not removed")
    anonymizer.anonymize(ds)
    ds.remove_private_tags()
    for key in _REMOVE:
        if key in ds:
            delattr(ds, key)
    ds.PatientSex = ""  # type 2: present, empty
    if synthetic:  # the twin's own marker stays: the loader and viewer rely on it
        ds.SeriesDescription = f"{TWIN_MARKER} (anonymised)"
        if str(ds.get("Modality", "")).upper() == "CT":
            ds.ImageComments = f"{TWIN_MARKER} image, not a patient image (anonymised)"
    return warnings


def anonymize_files(files: Sequence[str | Path], out_dir: str | Path, *,
                    names: Sequence[str] | None = None, force: bool = False,
                    seed: str | None = None, anonymizer=None,
                    progress: Callable[[int, int], None] | None = None) -> AnonymizedExport:
    """Anonymised copies of ``files`` as the folder ``out_dir`` (an existing non-empty
    folder is replaced only with ``force``), named ``names`` or ``IM00001.dcm``…; the
    folder appears only when complete (see the module docstring)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} already exists and is not empty; use --force to "
                              "replace it")
    if not files:
        raise ValueError("no files to anonymise")
    anonymizer = anonymizer or _anonymizer(seed)
    res = AnonymizedExport(out)
    with atomic_dir(out, force=force) as stage:
        _copy_all(files, names, stage, out, anonymizer, res, progress)
    for w in res.warnings:
        log.warning("anonymised export: %s", w)
    log.info("anonymised export: %d file(s) written", len(res.files))
    return res


def _copy_all(files, names, stage: Path, out: Path, anonymizer, res: AnonymizedExport,
              progress) -> None:
    from lungviewer.fileio import write_error

    seen: set[str] = set()
    for i, f in enumerate(files):
        name = names[i] if names is not None else f"IM{i + 1:05d}.dcm"
        try:
            ds = pydicom.dcmread(f)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be read is not copied
            res.warnings.append(f"{Path(f).name} could not be read and was not copied "
                                f"({type(exc).__name__})")
            continue
        for w in clean_dataset(ds, anonymizer):
            if w not in seen:
                seen.add(w)
                res.warnings.append(w)
        try:
            ds.save_as(stage / name, enforce_file_format=True)
        except OSError as exc:
            raise write_error(exc, out / name) from None
        res.files.append(out / name)
        if progress is not None:
            progress(i + 1, len(files))


def anonymize_study(volume, out_dir: str | Path, *, extra_files: Sequence[str | Path] = (),
                    force: bool = False, seed: str | None = None) -> AnonymizedExport:
    """The loaded series' files (and ``extra_files``, e.g. its exported SR/SEG, which keep
    pointing at the copied images) anonymised into ``out_dir``."""
    files = [Path(f) for f in volume.files]
    if not files:
        raise ValueError("the loaded study has no source files to anonymise")
    names = [f"CT{i + 1:05d}.dcm" for i in range(len(files))]
    names += [Path(f).name for f in extra_files]
    return anonymize_files([*files, *extra_files], out_dir, names=names, force=force,
                           seed=seed)
