"""``lungviewer synth --patient ID --out DIR [--realistic]``: write the LIDC twin of one scan.

Exit status 0 when the twin was written; 2 for an unknown patient or an unusable output
folder (a file, or not empty); 1 when writing failed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lungviewer.study.lidc_db import LidcDatabaseError


def add_parser(sub):
    p = sub.add_parser("synth", help="write the synthetic LIDC twin of a LIDC scan")
    p.add_argument("--patient", required=True, help="LIDC patient ID, e.g. LIDC-IDRI-0001")
    p.add_argument("--series", help="LIDC SeriesInstanceUID when the patient has two scans")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--realistic", action="store_true",
                   help="the realistic twin: dense vessel tree, soft / ground-glass / "
                        "spiculated nodules, varied field of view, padding, noise and contrast")
    return p


def run(args) -> int:
    from lungviewer.synth.twin import build_model, find_scan, render_model
    from lungviewer.synth.writer import XML_NAME, write_twin

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"lungviewer synth: {out} is a file; choose a new folder", file=sys.stderr)
        return 2
    if out.exists() and any(out.iterdir()):
        print(f"lungviewer synth: {out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        scan = find_scan(args.patient, args.series)
    except (KeyError, LidcDatabaseError) as exc:
        print(f"lungviewer synth: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    twin = render_model(build_model(scan, args.realistic))
    t1 = time.perf_counter()
    try:
        write_twin(scan.patient_id, out, twin=twin)
    except OSError as exc:  # disk full, no permission, ...: the twin was not written
        print(f"lungviewer synth: cannot write the twin to {out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    t2 = time.perf_counter()
    kind = "realistic twin" if args.realistic else "twin"
    print(f"SYNTHETIC {kind} of {scan.patient_id}: {scan.n_slices} slices 512x512, "
          f"spacing {scan.slice_spacing:.3g}/{scan.pixel_spacing:.4g} mm, "
          f"{len(twin.nodules)} nodule(s)")
    print(f"rendered in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s -> {out} "
          f"({scan.n_slices} DICOM files + {XML_NAME})")
    return 0
