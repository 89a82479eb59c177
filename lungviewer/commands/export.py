"""``lungviewer export PATH --out DIR [--sr] [--seg] [--pdf] [--lung-mask]
[--box S,R0,C0,R1,C1 ...] [--accept-cad N] [--anonymize] [--include-patient-name]
[--force] [--json]``: a study's reading as DICOM SR (TID 1500), DICOM SEG and a PDF report,
without a window.

The reading is the study's saved one (what the viewer saved for this series), with the
nodules of ``--box`` added (each segmented, measured and scored by the same code the
viewer uses) and the top ``N`` CAD findings accepted (``--accept-cad N``; each accepted
mark is segmented from a box of its size when it can be). The saved reading itself is
not changed. Without ``--sr/--seg/--pdf`` all three are written.

Files: ``DIR/sr.dcm``, ``DIR/seg.dcm``, ``DIR/report.pdf``; with ``--anonymize`` the
SR and SEG are written instead beside an anonymised copy of the CT series in
``DIR/anonymized/`` (see :mod:`lungviewer.reading.anonymize`), and the PDF leaves out
the study date. Nothing is overwritten without ``--force`` (exit 1 with a message); every
file is written atomically. Exit 0 only when every asked-for file was written.

A write that fails (full disk, a size limit, no permission: any ``OSError``) is one line on
stderr — what could not be written, where, and why — and exit 1; no partial file is left,
the files an earlier export wrote stay as they were, and a folder this run created is
removed again.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from .common import add_device, parse_box

log = logging.getLogger(__name__)

_FILES = {"sr": "sr.dcm", "seg": "seg.dcm", "pdf": "report.pdf"}


class _Fail(Exception):
    """A clear message for the user; exit 1."""


def add_parser(sub):
    p = sub.add_parser("export", help="the study's reading as DICOM SR/SEG and a PDF report",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("path", help="the study folder (or one file of the series)")
    p.add_argument("--out", required=True, type=Path, help="the folder to write into")
    p.add_argument("--sr", action="store_true", help="DICOM SR, TID 1500 measurement report")
    p.add_argument("--seg", action="store_true", help="DICOM SEG of the accepted nodules")
    p.add_argument("--pdf", action="store_true", help="PDF report")
    p.add_argument("--lung-mask", action="store_true",
                   help="add the lung mask (threshold method) to the SEG")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box,
                   action="append", default=[],
                   help="a nodule to segment, measure and score (0-based, ends exclusive; "
                        "repeatable)")
    p.add_argument("--accept-cad", metavar="N", type=int, default=0,
                   help="accept the top N CAD findings of the study")
    p.add_argument("--anonymize", action="store_true",
                   help="write an anonymised copy of the CT series with the SR/SEG "
                        "(DICOM PS3.15 basic profile)")
    p.add_argument("--include-patient-name", action="store_true",
                   help="print the patient's name in the PDF (default: an anonymous key)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    add_device(p)
    return p


def _check_box(box, volume) -> tuple[int, int, int, int, int]:
    k, r0, c0, r1, c1 = box
    n, rows, cols = volume.shape
    if not 0 <= k < n:
        raise _Fail(f"--box slice {k} is outside 0..{n - 1}")
    if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
        raise _Fail(f"--box {k},{r0},{c0},{r1},{c1}: rows must lie in 0..{rows} and columns "
                    f"in 0..{cols}, with ROW1 > ROW0 and COL1 > COL0")
    return k, r0, c0, r1, c1


def _mark_box(mark, volume) -> tuple[int, int, int, int, int]:
    """A box of 1.5 times a CAD mark's diameter (at least 8 px) around it."""
    _, rows, cols = volume.shape
    half = max(0.75 * mark.diameter_mm / float(volume.spacing[2]), 4.0)
    r, c = mark.row, mark.col
    r0, c0 = max(int(r - half), 0), max(int(c - half), 0)
    r1, c1 = min(int(r + half) + 1, rows), min(int(c + half) + 1, cols)
    return int(mark.slice), r0, c0, max(r1, r0 + 1), max(c1, c0 + 1)


def _nodule_at(reading, mark):
    """The accepted nodule whose mask holds the mark's centre (None if none)."""
    k, r, c = int(mark.slice), round(float(mark.row)), round(float(mark.col))
    for n in reading.accepted_nodules():
        if n.mask is None or n.cad_mark_id:
            continue
        (z0, y0, x0), block = n.mask.offset, n.mask.to_array()
        z, y, x = k - z0, r - y0, c - x0
        if (0 <= z < block.shape[0] and 0 <= y < block.shape[1] and 0 <= x < block.shape[2]
                and block[z, y, x]):
            return n
    return None


def build_reading(session, boxes, accept_cad: int = 0, device: str = "auto",
                  messages: list[str] | None = None):
    """The reading to export, built by the study ``session`` as the viewer builds it: its
    reading (the saved one, or new) with the nodules of ``boxes`` segmented, measured and
    scored, and the top ``accept_cad`` CAD findings accepted (each segmented from a box of
    its size, or linked to a nodule already segmented there)."""
    from lungviewer.cad.weights import WeightsError
    from lungviewer.reading.volumetry import VolumetryError

    messages = messages if messages is not None else []
    volume = session.volume
    boxes = [_check_box(b, volume) for b in boxes]
    if boxes or accept_cad:
        try:
            session.load_engine(device)
        except WeightsError as exc:
            if accept_cad:
                raise _Fail(f"--accept-cad needs the CAD models: {exc}") from exc
            messages.append(f"the CAD models could not be loaded, boxes are not scored ({exc})")
    reading = session.reading

    def score(box) -> None:
        if session.engine is not None:
            session.score_box(box[0], box[1:])

    for box in boxes:
        try:
            session.segment_nodule(box[0], box[1:])
        except VolumetryError as exc:
            raise _Fail(f"--box {','.join(map(str, box))}: {exc}") from exc
        score(box)
    if accept_cad:
        session.scan()
        marks = reading.cad_marks
        if len(marks) < accept_cad:
            messages.append(f"the CAD found {len(marks)} finding(s), fewer than "
                            f"--accept-cad {accept_cad}")
        for mark in marks[:accept_cad]:
            reading.accept(mark.id)
            covering = _nodule_at(reading, mark)
            if covering is not None:  # the mark is a nodule already segmented: link them
                covering.cad_mark_id = mark.id
                continue
            box = _mark_box(mark, volume)
            try:
                session.segment_nodule(box[0], box[1:], source="cad", cad_mark_id=mark.id)
            except VolumetryError as exc:
                messages.append(f"CAD mark {mark.id} could not be segmented ({exc}); it is "
                                "exported as a mark")
                continue
            score(box)
    return reading


def export(args) -> dict:
    from lungviewer.session import StudySession
    from lungviewer.study.dicom_series import StudyLoadError

    kinds = [k for k in ("sr", "seg", "pdf") if getattr(args, k)] or ["sr", "seg", "pdf"]
    if args.anonymize and args.include_patient_name:
        raise _Fail("--include-patient-name and --anonymize contradict each other")
    if args.accept_cad < 0:
        raise _Fail("--accept-cad must be 0 or more")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise _Fail(f"--out {out} is a file, not a folder")
    targets = {k: out / _FILES[k] for k in kinds if k == "pdf" or not args.anonymize}
    anon_dir = out / "anonymized"
    if not args.force:
        there = [str(p) for p in targets.values() if p.exists()]
        if args.anonymize and anon_dir.exists() and any(anon_dir.iterdir()):
            there.append(str(anon_dir))
        if there:
            raise _Fail(f"{', '.join(there)} already exist(s); use --force to replace")
    session = StudySession(autosave=False)  # the export never changes the saved reading
    messages: list[str] = []  # the study's own messages (a saved reading cut to its bounds)
    session.subscribe(lambda ev, p: messages.append(p) if ev == "message" else None)
    try:
        volume = session.open(args.path)
    except StudyLoadError as exc:
        raise _Fail(str(exc)) from exc
    saved = session.reading_saved
    if not saved and not args.box and not args.accept_cad:
        if session.offered_reading is not None:  # made on other images of this series
            raise _Fail("the saved reading of this series was made on other images than "
                        "this folder holds; export from the folder it was made on, or give "
                        "--box S,R0,C0,R1,C1 or --accept-cad N to build one here")
        raise _Fail("this study has no saved reading; give --box S,R0,C0,R1,C1 or "
                    "--accept-cad N to build one")
    lung = session.segment() if (args.lung_mask or args.accept_cad or args.box) else None
    reading = build_reading(session, args.box, args.accept_cad, args.device, messages)
    from lungviewer.reading.model import check_limits

    check_limits(reading)  # ReadingLimitError (a clear message) before any per-item work
    created = _make_folder(out)
    try:
        files = _write(args, kinds, reading, volume, lung, out, anon_dir, targets, messages)
    except BaseException:
        if created is not None:  # no folder of this run's making stays behind
            shutil.rmtree(created, ignore_errors=True)
        raise
    nodules = [{k: v for k, v in n.to_dict().items() if k != "mask"}
               for n in reading.accepted_nodules()]
    return {"path": str(args.path), "out": str(out), "synthetic": bool(volume.is_synthetic),
            "files": [str(p) for p in files], "anonymized": bool(args.anonymize),
            "nodules": nodules,
            "cad_marks": [m.to_dict() for m in reading.cad_marks],
            "box_scores": [s.to_dict() for s in reading.box_scores],
            "from_saved_reading": saved, "messages": messages}


def _make_folder(out: Path) -> Path | None:
    """Create ``out`` (and missing parents); returns the topmost folder created (None if
    it existed), so that a failed export can remove it."""
    from lungviewer.fileio import os_error_line

    top = None
    for p in [out, *out.parents]:
        if p.exists():
            break
        top = p
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Fail(os_error_line(exc, f"the folder {out.name}", out.parent,
                                  verb="created")) from None
    return top


def _write(args, kinds, reading, volume, lung, out: Path, anon_dir: Path, targets,
           messages: list[str]) -> list[Path]:
    from lungviewer.fileio import os_error_line
    from lungviewer.reading.export_dicom import ExportError, export_dicom
    from lungviewer.reading.report_pdf import build_report

    files: list[Path] = []
    dicom_kinds = [k for k in kinds if k in ("sr", "seg")]
    try:
        if dicom_kinds and not args.anonymize:
            res = export_dicom(reading, volume, out, sr="sr" in kinds, seg="seg" in kinds,
                               lung_mask=lung if args.lung_mask else None, force=True)
            files += [p for p in (res.sr, res.seg) if p is not None]
        elif args.anonymize:
            from lungviewer.reading.anonymize import anonymize_study

            try:
                stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
            except OSError as exc:
                raise _Fail(os_error_line(exc, "a temporary folder", out, verb="created")
                            ) from None
            try:
                extra = []
                if dicom_kinds:
                    res = export_dicom(reading, volume, stage, sr="sr" in kinds,
                                       seg="seg" in kinds,
                                       lung_mask=lung if args.lung_mask else None)
                    extra = [p for p in (res.seg, res.sr) if p is not None]
                anon = anonymize_study(volume, anon_dir, extra_files=extra, force=args.force)
                messages += anon.warnings
                anon_key, shift = anonymized_identity(volume, anon.files[0])
                files += [anon_dir / p.name for p in extra]
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        if "pdf" in kinds:
            anon_kw = ({"anonymous_key": anon_key, "date_shift_days": shift}
                       if args.anonymize else {})
            files.append(build_report(reading, volume, targets["pdf"],
                                      include_patient_name=args.include_patient_name,
                                      **anon_kw))
    except ExportError as exc:
        raise _Fail("; ".join([str(exc), *messages])) from exc
    return files


def anonymized_identity(volume, copied_ct: Path) -> tuple[str, int | None]:
    """The anonymised PDF's study key and date shift: the key is a hash of the *copy's*
    StudyInstanceUID (dicognito makes it from a random seed per export, so nothing about
    the original UIDs can be derived from it, while the PDF still matches its copy); the
    shift in days is the copy's StudyDate minus the original's (None when either is
    missing: the PDF then shows no date at all)."""
    import hashlib
    from datetime import date

    import pydicom

    def header(path):
        return pydicom.dcmread(path, stop_before_pixels=True,
                               specific_tags=["StudyInstanceUID", "StudyDate"])

    anon = header(copied_ct)
    key = hashlib.sha256(str(anon.get("StudyInstanceUID", "")).encode()).hexdigest()[:10]
    try:
        orig = header(volume.files[0])
        a, o = str(anon.get("StudyDate", "")), str(orig.get("StudyDate", ""))
        shift = (date(int(a[:4]), int(a[4:6]), int(a[6:8]))
                 - date(int(o[:4]), int(o[4:6]), int(o[6:8]))).days
    except (ValueError, OSError, IndexError):
        shift = None
    return key, shift


def error_line(exc: BaseException) -> str:
    """The one line an export failure prints (never a traceback, whatever the library put
    into an OSError's message)."""
    from lungviewer.fileio import WriteError, os_error_line, root_os_error

    if isinstance(exc, WriteError) or not isinstance(exc, OSError):
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    root = root_os_error(exc)
    if root is None or root.errno is None:  # our own message (FileExistsError(...))
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = getattr(root, "filename", None)
    return os_error_line(exc, Path(where).name if where else "the export",
                         Path(where).parent if where else None)


def run(args) -> int:
    try:
        res = export(args)
    except (_Fail, ValueError, OSError) as exc:
        print(f"lungviewer export: {error_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for m in res["messages"]:
        print(f"note: {m}", file=sys.stderr)
    tag = " [SYNTHETIC]" if res["synthetic"] else ""
    print(f"{len(res['nodules'])} nodule(s), "
          f"{sum(m['status'] == 'accepted' for m in res['cad_marks'])} accepted CAD mark(s)"
          f"{tag}; research use, not for clinical use.")
    for f in res["files"]:
        print(f"  wrote {f}")
    if res["anonymized"]:
        print(f"  anonymised CT copy in {Path(res['out']) / 'anonymized'}")
    return 0
