"""``lungviewer segment PATH --out MASK [--json]``: the M1 lung parenchyma mask of a study,
written as ``.npy`` (bool z, y, x) or NIfTI (``.nii`` / ``.nii.gz``, with the patient
affine of the series)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from lungviewer.study.dicom_series import StudyLoadError, load_series
from lungviewer.study.volume import Volume

from lungviewer.imaging.parenchyma import segment_lungs


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


def check_out_path(out: Path) -> None:
    if not out.name.lower().endswith(MASK_SUFFIXES):
        raise ValueError(f"{out}: the mask file name must end in .npy (NumPy, bool z y x) "
                         f"or .nii / .nii.gz (NIfTI, uint8 x y z)")


def write_mask(mask: np.ndarray, vol: Volume, out: Path) -> None:
    """Write ``mask`` (bool z, y, x): ``.npy`` with ``np.save`` (no pickle), or NIfTI
    (uint8, axes x y z, the series' RAS affine) via nibabel."""
    check_out_path(out)
    if out.name.lower().endswith(".npy"):
        np.save(out, np.ascontiguousarray(mask, dtype=bool), allow_pickle=False)
    else:
        import nibabel as nib

        data = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8)  # (x, y, z)
        affine = nifti_affine(vol)
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)  # scanner coordinates, for viewers that read either
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(out))


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
        write_mask(res.mask, vol, out)
    except (StudyLoadError, ValueError, OSError) as exc:
        print(f"lungviewer segment: {exc}", file=sys.stderr)
        return 1
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
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{vol.n_slices} slices {vol.shape[1]}x{vol.shape[2]}"
              f"{' (SYNTHETIC)' if vol.is_synthetic else ''}, loaded in {t1 - t0:.2f} s")
        print(f"lung parenchyma (M1): {summary['lung_volume_ml']} ml in "
              f"{res.slices_with_lung} slices, mean threshold "
              f"{summary['mean_threshold_hu']} HU, segmented in {res.seconds:.2f} s")
        print(f"mask written to {out}")
    return 0
