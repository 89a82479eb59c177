"""``lungviewer segment PATH --out MASK [--json]``: the lung parenchyma mask (threshold
method) of a study, written as ``.npy`` (bool z, y, x) or NIfTI (``.nii`` / ``.nii.gz``, with
the patient affine of the series), chosen by the name's ending in any letter case.

The mask is written atomically (a temporary file beside it, then renamed): a write that
fails half-way leaves the user's existing file as it was. The file gets exactly the name
given (``upper.NPY`` stays ``upper.NPY``). Exit status 0 only when the mask was written;
1 with one line on stderr otherwise."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from lungviewer.fileio import atomic_path
from lungviewer.imaging.parenchyma import segment_lungs
from lungviewer.study.dicom_series import StudyLoadError, load_series
from lungviewer.study.volume import Volume


def nifti_affine(vol: Volume) -> np.ndarray:
    """Voxel (i=x col, j=y row, k=z slice) → RAS mm, from the DICOM LPS geometry."""
    r, c = vol.orientation[:3], vol.orientation[3:]
    a = np.eye(4)
    a[:3, 0] = r * vol.spacing[2]
    a[:3, 1] = c * vol.spacing[1]
    a[:3, 2] = vol.normal * vol.spacing[0]
    a[:3, 3] = vol.positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a  # LPS → RAS


MASK_SUFFIXES = (".npy", ".nii", ".nii.gz")


def _mask_format(out: Path) -> str:
    """'.npy' or '.nii' / '.nii.gz' from the end of the name, any letter case ('' if none)."""
    name = out.name.lower()
    return next((sfx for sfx in (".nii.gz", ".nii", ".npy") if name.endswith(sfx)), "")


def check_out_path(out: Path) -> None:
    """Refuse, before any work, a name without a mask format or a folder that is missing."""
    if not _mask_format(out) or out.name.lower() in MASK_SUFFIXES:
        raise ValueError(f"{out}: the mask file name must end in .npy (NumPy, bool z y x) "
                         f"or .nii / .nii.gz (NIfTI, uint8 x y z)")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{out}: the folder {folder} does not exist")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give a file name for the mask")


def write_mask(mask: np.ndarray, vol: Volume, out: Path) -> None:
    """Write ``mask`` (bool z, y, x) to exactly ``out``, atomically: ``.npy`` with
    ``np.save`` (no pickle), or NIfTI (uint8, axes x y z, the series' RAS affine) via
    nibabel; the format comes from the name's ending in any letter case."""
    check_out_path(out)
    fmt = _mask_format(out)
    # the temporary file ends in the lower-case suffix, so nibabel picks the format (and
    # gzip) from it; np.save is given an open file, so it appends no ".npy" of its own
    with atomic_path(out, suffix=fmt) as tmp:
        if fmt == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(mask, dtype=bool), allow_pickle=False)
        else:
            import nibabel as nib

            data = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8)  # (x, y, z)
            affine = nifti_affine(vol)
            img = nib.Nifti1Image(data, affine)
            img.set_qform(affine, code=1)  # scanner coordinates, for viewers that read either
            img.set_sform(affine, code=1)
            img.header.set_xyzt_units("mm")
            nib.save(img, str(tmp))


def _finite(obj, key: str = "") -> None:
    """ValueError naming the first value that is not a finite number (JSON has none)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        raise ValueError(f"{key} is {obj}, not a finite number")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, k)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _finite(v, key)


def add_parser(sub):
    p = sub.add_parser("segment", help="lung parenchyma mask (threshold method)")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="mask file: .npy, or .nii/.nii.gz (NIfTI)")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    out = Path(args.out)
    try:
        check_out_path(out)
        t0 = time.perf_counter()
        vol = load_series(args.path)
        t1 = time.perf_counter()
        res = segment_lungs(vol.hu, spacing=vol.spacing)
        summary = {
            "slices": vol.n_slices,
            "shape_zyx": list(vol.shape),
            "spacing_mm_zyx": [round(float(v), 4) for v in vol.spacing],
            "lung_volume_ml": round(res.volume_ml(), 1),
            "slices_with_lung": res.slices_with_lung,
            "mean_threshold_hu": round(float(res.thresholds.mean()), 1),
            "thresholds_hu": [round(float(t), 1) for t in res.thresholds],
            "load_seconds": round(t1 - t0, 3),
            "segment_seconds": round(res.seconds, 3),
            "out": str(out),
            "synthetic": vol.is_synthetic,
        }
        _finite(summary)  # before writing: a mask whose figures are not numbers is wrong
        write_mask(res.mask, vol, out)
    except (StudyLoadError, ValueError, OSError) as exc:
        print(f"lungviewer segment: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        print(f"{vol.n_slices} slices {vol.shape[1]}x{vol.shape[2]}"
              f"{' (SYNTHETIC)' if vol.is_synthetic else ''}, loaded in {t1 - t0:.2f} s")
        print(f"lung parenchyma (threshold method): {summary['lung_volume_ml']} ml in "
              f"{res.slices_with_lung} slices, mean threshold "
              f"{summary['mean_threshold_hu']} HU, segmented in {res.seconds:.2f} s")
        print(f"mask written to {out}")
    return 0
