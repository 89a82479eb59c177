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

from .parenchyma import segment_lungs


def nifti_affine(vol: Volume) -> np.ndarray:
    """Voxel (i=x col, j=y row, k=z slice) → RAS mm, from the DICOM LPS geometry."""
    r, c = vol.orientation[:3], vol.orientation[3:]
    a = np.eye(4)
    a[:3, 0] = r * vol.spacing[2]
    a[:3, 1] = c * vol.spacing[1]
    a[:3, 2] = vol.normal * vol.spacing[0]
    a[:3, 3] = vol.positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a  # LPS → RAS


def write_mask(mask: np.ndarray, vol: Volume, out: Path) -> None:
    name = out.name.lower()
    if name.endswith(".npy"):
        np.save(out, mask, allow_pickle=False)
    elif name.endswith(".nii") or name.endswith(".nii.gz"):
        import nibabel as nib

        data = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8)  # (x, y, z)
        nib.save(nib.Nifti1Image(data, nifti_affine(vol)), str(out))
    else:
        raise ValueError(f"{out}: use a .npy, .nii or .nii.gz file name")


def main(args) -> int:
    out = Path(args.out)
    try:
        t0 = time.perf_counter()
        vol = load_series(args.path)
        t1 = time.perf_counter()
        res = segment_lungs(vol.hu)
        write_mask(res.mask, vol, out)
    except (StudyLoadError, ValueError, OSError) as exc:
        print(f"lungviewer segment: {exc}", file=sys.stderr)
        return 1
    summary = {
        "slices": vol.n_slices,
        "lung_volume_ml": round(res.volume_ml(vol.spacing), 1),
        "slices_with_lung": int(res.mask.any(axis=(1, 2)).sum()),
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
        print(f"lung parenchyma (M1): {summary['lung_volume_ml']} ml in "
              f"{summary['slices_with_lung']}/{vol.n_slices} slices, mean threshold "
              f"{summary['mean_threshold_hu']} HU, {res.seconds:.2f} s -> {out}")
    return 0
