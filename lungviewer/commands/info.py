"""``lungviewer info PATH [--series UID] [--json]``: what is in a DICOM folder.

JSON keys (documented in the README): ``path``, ``series`` (every series found: ``uid``,
``description``, ``modality``, ``files``, ``rows``, ``cols``, ``usable``, ``reason``) and,
when a CT series could be loaded, ``loaded``: ``series_uid``, ``description``, ``slices``,
``shape`` [z, y, x], ``spacing_mm`` [z, y, x], ``z_range_mm`` [first, last],
``hu_min``, ``hu_max``, ``synthetic`` (bool), ``warnings`` (list of text), ``load_seconds``.
Each series also has ``geometry`` (image size, pixel spacing, orientation): a series whose
images differ in geometry is listed once per stack. Patient names and IDs are never printed.
Exit status 0 when a series was loaded, 1 (with ``error`` in JSON) when none could be.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

from lungviewer.study.dicom_series import StudyLoadError, load_series, scan_folder


def describe(path: str, series_uid: str | None = None) -> dict:
    found = scan_folder(path)
    out: dict = {"path": str(path), "series": []}
    for s in found:
        d = asdict(s)
        d["uid"] = d.pop("series_uid")
        d["files"] = d.pop("n_files")
        out["series"].append(d)
    t0 = time.perf_counter()
    vol = load_series(path, series_uid=series_uid)
    dt = time.perf_counter() - t0
    out["loaded"] = {
        "series_uid": vol.series_uid,
        "description": vol.description,
        "slices": vol.n_slices,
        "shape": list(vol.shape),
        "spacing_mm": [round(float(v), 4) for v in vol.spacing],
        "z_range_mm": [float(vol.z_positions[0]), float(vol.z_positions[-1])],
        "hu_min": int(vol.hu.min()),
        "hu_max": int(vol.hu.max()),
        "synthetic": vol.is_synthetic,
        "warnings": list(vol.warnings),
        "load_seconds": round(dt, 3),
    }
    return out


def add_parser(sub):
    p = sub.add_parser("info", help="describe the CT series found under PATH")
    p.add_argument("path")
    p.add_argument("--series", help="SeriesInstanceUID to describe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _patient_values(path: str) -> set[str]:
    from lungviewer.study.dicom_series import _list_files
    from lungviewer.study.identifiers import patient_identifiers

    try:
        files, _ = _list_files(path)
    except (StudyLoadError, OSError, ValueError):
        return set()
    return patient_identifiers(files)


def run(args) -> int:
    """Every text this command prints is first cleared of the folder's patient values
    (:mod:`lungviewer.study.identifiers`), and pydicom's warnings (which quote invalid
    values) are kept off stderr."""
    import warnings

    from lungviewer.study.identifiers import scrub, scrub_all

    ids = _patient_values(args.path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = scrub_all(describe(args.path, args.series), ids)
        text = json.dumps(info, indent=2, allow_nan=False)  # no NaN/Infinity: not JSON
    except (StudyLoadError, ValueError) as exc:
        msg = scrub(str(exc), ids)
        if args.json:
            print(json.dumps({"path": scrub(str(args.path), ids), "error": msg}))
        else:
            print(f"lungviewer info: {msg}", file=sys.stderr)
        return 1
    if args.json:
        print(text)
        return 0
    starred = False  # a series split by geometry is listed per stack: the largest opens
    for s in info["series"]:
        loaded = not starred and s["usable"] and s["uid"] == info["loaded"]["series_uid"]
        starred = starred or loaded
        why = "" if s["usable"] else f"  (not shown: {s['reason']})"
        print(f"{'*' if loaded else ' '} {s['modality']:3s} {s['files']:4d} files "
              f"{s['rows']}x{s['cols']}  {s['description'] or '(no description)'}{why}")
    lo = info["loaded"]
    print(f"loaded: {lo['slices']} slices, shape {tuple(lo['shape'])}, spacing "
          f"{'/'.join(f'{v:g}' for v in lo['spacing_mm'])} mm (z/y/x), "
          f"HU {lo['hu_min']}..{lo['hu_max']}, {lo['load_seconds']:.2f} s"
          + ("  [SYNTHETIC]" if lo["synthetic"] else ""))
    for w in lo["warnings"]:
        print(f"warning: {w}")
    return 0
